"""Tests for em_rl.py: the method pieces against hand-computed values and independent references,
then the script end to end on the tiny fixture model (training signal, resume, torchrun, bad input)."""
import json
import math
import os
import pathlib
import shutil
import signal
import statistics
import subprocess
import sys
import time

import pytest
import torch
from transformers import AutoModelForCausalLM

import em_ft
import em_inf
import em_rl


# ---- rewards ----
def test_token_entropy_reward_mean_and_sum():
    H = torch.tensor([[1.0, 2.0, 3.0, 9.0], [0.5, 0.0, 0.0, 0.0]])
    mask = torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0]], dtype=torch.bool)  # 9.0 is padding, ignored
    assert em_rl.token_entropy_reward(H, mask, "mean").tolist() == pytest.approx([-2.0, -0.5])
    assert em_rl.token_entropy_reward(H, mask, "sum").tolist() == pytest.approx([-6.0, -0.5])


def test_sequence_logprob_reward_mean_and_sum():
    lp = torch.tensor([[-1.0, -0.5, -7.0], [-2.0, -4.0, 0.0]])
    mask = torch.tensor([[1, 1, 0], [1, 1, 0]], dtype=torch.bool)
    assert em_rl.sequence_logprob_reward(lp, mask, "mean").tolist() == pytest.approx([-0.75, -3.0])
    assert em_rl.sequence_logprob_reward(lp, mask, "sum").tolist() == pytest.approx([-1.5, -6.0])


# ---- advantages ----
def test_rloo_advantages_hand_computed():
    r = torch.tensor([[1.0, 2.0, 3.0, 6.0], [0.5, -0.5, 0.0, 0.0]])
    # row 0: baselines (2+3+6)/3, (1+3+6)/3, (1+2+6)/3, (1+2+3)/3
    expected = [[1 - 11 / 3, 2 - 10 / 3, 3 - 3.0, 6 - 2.0], [0.5 - (-0.5 / 3), -0.5 - (0.5 / 3), 0.0, 0.0]]
    got = em_rl.rloo_advantages(r)
    assert got.shape == (2, 4)
    for g, e in zip(got.tolist(), expected):
        assert g == pytest.approx(e)
    # n = 2: each sample's baseline is the other sample
    assert em_rl.rloo_advantages(torch.tensor([[0.5, -0.5]])).tolist() == [[1.0, -1.0]]


def test_rloo_advantages_no_std_normalization():
    r = torch.tensor([[10.0, 20.0, 30.0]])
    a = em_rl.rloo_advantages(r)
    # scaling rewards scales advantages: nothing divides by the spread
    assert torch.allclose(em_rl.rloo_advantages(r * 3), a * 3)
    assert a.tolist()[0] == pytest.approx([10 - 25, 20 - 20, 30 - 15])


def test_grpo_advantages_vs_statistics():
    rows = [[1.0, 2.0, 3.0, 6.0], [4.0, 4.0, 4.0, 4.0]]
    got = em_rl.grpo_advantages(torch.tensor(rows, dtype=torch.float64))
    m, s = statistics.mean(rows[0]), statistics.stdev(rows[0])
    assert got[0].tolist() == pytest.approx([(x - m) / (s + 1e-6) for x in rows[0]])
    assert got[1].tolist() == [0.0] * 4  # equal rewards: no signal, no NaN


# ---- PPO clipped surrogate ----
def test_ppo_clip_loss_hand_computed():
    ratio = torch.tensor([[1.5, 1.5, 0.5, 0.5, 1.1]])
    logp = torch.log(ratio)
    old = torch.zeros_like(logp)
    for adv, loss, clipped in [
        (1.0, [-1.2, -1.2, -0.5, -0.5, -1.1], [True, True, False, False, False]),
        (-1.0, [1.5, 1.5, 0.8, 0.8, 1.1], [False, False, True, True, False]),
    ]:
        got_loss, got_clip = em_rl.ppo_clip_loss(logp, old, torch.tensor([adv]), clip=0.2)
        assert got_loss[0].tolist() == pytest.approx(loss)
        assert got_clip[0].tolist() == clipped


def test_ppo_clip_loss_gradient_is_reinforce_at_ratio_one():
    # at pi_theta = pi_old (first PPO step) the surrogate's gradient is -A d log pi: REINFORCE
    logp = torch.tensor([[-1.0, -2.0], [-0.3, -0.7]], dtype=torch.float64, requires_grad=True)
    adv = torch.tensor([0.7, -1.3], dtype=torch.float64)
    loss, _ = em_rl.ppo_clip_loss(logp, logp.detach(), adv)
    loss.sum().backward()
    assert torch.allclose(logp.grad, -adv[:, None].expand(2, 2))
    # and the clipped side has zero gradient
    logp2 = torch.tensor([[math.log(1.5)]], dtype=torch.float64, requires_grad=True)
    loss2, clipped = em_rl.ppo_clip_loss(logp2, torch.zeros(1, 1, dtype=torch.float64), torch.tensor([1.0], dtype=torch.float64))
    loss2.sum().backward()
    assert clipped.item() and logp2.grad.item() == 0.0


# ---- k3 KL ----
def test_k3_kl_hand_computed():
    logp = torch.tensor([[-1.0, -2.0, -30.0, -0.5]])
    ref = torch.tensor([[-2.0, -1.0, 0.0, -0.5]])
    # r = ref - logp = -1, 1, 30 (clamped to 10), 0
    expected = [math.exp(-1) + 1 - 1, math.e - 1 - 1, math.exp(10) - 10 - 1, 0.0]
    assert em_rl.k3_kl(logp, ref)[0].tolist() == pytest.approx(expected, rel=1e-5)


def test_k3_kl_is_unbiased_estimate_of_kl():
    # E_{y ~ p}[k3] = KL(p || q): check against torch.distributions with many samples
    g = torch.Generator().manual_seed(0)
    p = torch.distributions.Categorical(logits=torch.randn(8, generator=g, dtype=torch.float64))
    q = torch.distributions.Categorical(logits=torch.randn(8, generator=g, dtype=torch.float64))
    torch.manual_seed(0)
    y = p.sample((200_000,))
    est = em_rl.k3_kl(p.log_prob(y), q.log_prob(y)).mean()
    assert est.item() == pytest.approx(torch.distributions.kl_divergence(p, q).item(), rel=0.02)


# ---- the script end to end on the tiny fixture model ----
ROOT = pathlib.Path(__file__).parent
KEYS = {"step", "loss", "reward", "entropy", "kl", "clip_fraction", "advantage_std", "grad_norm", "response_length",
        "lr", "tokens_per_second", "seconds", "time_rollout", "time_score", "time_update"}


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One intra-op thread for the in-process runs: tiny matmuls gain nothing from more, and on a
    loaded 2-core machine spinning OpenMP threads made these tests ~20x slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def small_run(model, data, out, *extra):
    """Flags of a seconds-long run: 4 prompts x 4 rollouts of <= 12 tokens per step."""
    return ["--model", model, "--dataset", data, "--batch-size", "4", "--mini-batch-size", "4", "--micro-batch-size", "16",
            "--max-new-tokens", "12", "--out", str(out), *extra]


def read_metrics(out):
    return [json.loads(line) for line in (pathlib.Path(out) / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def peaky_model(tiny_model, tmp_path_factory):
    """The tiny model with its lm_head scaled x8: entropy ~5.2 nats instead of the uniform log(400) = 5.99.

    At the uniform distribution every parameter change lowers the entropy, so "the reward rises" would
    prove nothing there; from an interior point only the reward's gradient lowers it reliably.
    """
    out = tmp_path_factory.mktemp("peaky")
    shutil.copytree(tiny_model, out, dirs_exist_ok=True)
    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    with torch.no_grad():
        model.lm_head.weight.mul_(8.0)
    model.save_pretrained(out)
    return str(out)


def test_token_reward_rises_and_follows_the_advantage_sign(peaky_model, mini_math, tmp_path, monkeypatch):
    # one 8-step run of a tiny random model is a noisy draw: with the continuous-batching sampler, seeds 0-4
    # gave margins sum(em) - sum(anti) of 15.4, -6.8, -6.5, 3.6, 16.7 (rises 4.7, 2.7, 2.3, 0.9, 5.0), so
    # compare averages over 5 seeds (3 were too few: their mean margin, 0.7, is below the 2.0 asserted)
    flags = ["--steps", "8", "--lr", "3e-3", "--kl-coef", "0", "--batch-size", "8", "--mini-batch-size", "8", "--samples-per-prompt", "8"]
    rloo, em, anti = em_rl.rloo_advantages, [], []
    for seed in ("0", "1", "2", "3", "4"):
        monkeypatch.setattr(em_rl, "rloo_advantages", rloo)
        em_rl.main(small_run(peaky_model, mini_math, tmp_path / f"em{seed}", *flags, "--seed", seed))
        em.append([m["reward"] for m in read_metrics(tmp_path / f"em{seed}")])
        # control: the same run with every advantage negated. It is no clean "maximize entropy" (Adam's
        # random walk and reinforcing any sampled token both lower the entropy too), so compare the runs.
        monkeypatch.setattr(em_rl, "rloo_advantages", lambda r: -rloo(r))
        em_rl.main(small_run(peaky_model, mini_math, tmp_path / f"anti{seed}", *flags, "--seed", seed))
        anti.append([m["reward"] for m in read_metrics(tmp_path / f"anti{seed}")])
        assert em[-1][0] == anti[-1][0]  # same seed, same first rollouts
    # minus the mean token entropy: up by more than a nat on average
    assert statistics.mean(r[-1] - r[0] for r in em) > 1.0, em
    assert statistics.mean(map(sum, em)) > statistics.mean(map(sum, anti)) + 2.0, (em, anti)  # higher over the runs


def test_sequence_reward_grpo_epochs_kl_and_eval_hook(tiny_model, mini_math, tmp_path):
    out = tmp_path / "seq"
    em_rl.main(small_run(tiny_model, mini_math, out, "--steps", "2", "--lr", "1e-2", "--reward", "sequence",
                         "--reward-reduction", "sum", "--advantage", "grpo", "--mini-batch-size", "2", "--ppo-epochs", "2",
                         "--entropy-coef", "0.001", "--eval-dataset", mini_math, "--eval-limit", "2", "--eval-every", "1"))
    rows = read_metrics(out)
    assert [m["step"] for m in rows] == [1, 2]
    for m in rows:
        assert KEYS | {"eval_accuracy"} <= m.keys()
        assert all(math.isfinite(v) for v in m.values())
        # sum of log-probs over <= 12 tokens of a near-uniform 400-way model: about -6 per token
        assert -12 * 6.5 < m["reward"] < 0
        assert 0.0 <= m["clip_fraction"] <= 1.0 and m["kl"] >= 0.0
    # GRPO advantages have unit std within each group of 4 (Bessel), so (n-1)/n = 0.75 overall
    assert rows[0]["advantage_std"] == pytest.approx(math.sqrt(0.75), rel=1e-3)
    # 2 epochs x 2 mini-batches moved the policy: the second step's rollouts see a KL > 0
    assert rows[1]["kl"] > 0.0
    AutoModelForCausalLM.from_pretrained(out)  # the saved model is a loadable HF folder


def test_trains_on_unlabeled_prompts(tiny_model, mini_math, tmp_path):
    # EM-RL needs no labels: a prompt file without any answer field is valid training data
    prompts = tmp_path / "prompts.jsonl"
    rows = [json.loads(line) for line in pathlib.Path(mini_math).read_text().splitlines() if line.strip()]
    prompts.write_text("".join(json.dumps({"problem": r["problem"]}) + "\n" for r in rows))
    em_rl.main(small_run(tiny_model, str(prompts), tmp_path / "run", "--steps", "1"))
    assert [m["step"] for m in read_metrics(tmp_path / "run")] == [1]


def test_resume_matches_an_uninterrupted_run(tiny_model, mini_math, tmp_path):
    flags = ["--lr", "1e-2", "--save-every", "1"]
    em_rl.main(small_run(tiny_model, mini_math, tmp_path / "full", "--steps", "4", *flags))
    em_rl.main(small_run(tiny_model, mini_math, tmp_path / "cut", "--steps", "2", *flags))
    em_rl.main(small_run(tiny_model, mini_math, tmp_path / "cut", "--steps", "4", *flags))  # resumes after step 2
    full, cut = read_metrics(tmp_path / "full"), read_metrics(tmp_path / "cut")
    assert [m["step"] for m in cut] == [1, 2, 3, 4]  # no repeated, no skipped steps
    timing = ("seconds", "tokens_per_second", "time_rollout", "time_score", "time_update")
    for a, b in zip(full, cut):
        assert {k: v for k, v in a.items() if k not in timing} == {k: v for k, v in b.items() if k not in timing}
    wa = AutoModelForCausalLM.from_pretrained(tmp_path / "full").state_dict()
    wb = AutoModelForCausalLM.from_pretrained(tmp_path / "cut").state_dict()
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def _env():
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


def test_ctrl_c_saves_the_step_and_exits(tiny_model, mini_math, tmp_path):
    out = tmp_path / "sigint"
    proc = subprocess.Popen([sys.executable, str(ROOT / "em_rl.py"), *small_run(tiny_model, mini_math, out, "--steps", "100000")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=_env(), cwd=tmp_path)
    metrics = out / "metrics.jsonl"
    deadline = time.time() + 60
    while time.time() < deadline and not (metrics.exists() and metrics.read_text().count("\n") >= 1):
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "interrupted: saved step" in err
    state = torch.load(out / "train_state.pt", weights_only=True)
    assert state["step"] == len(read_metrics(out)) >= 1


def test_torchrun_two_processes_fsdp2(tiny_model, mini_math, tmp_path):
    out = tmp_path / "ddp"
    # --standalone: a free rendezvous port (other torchrun tests may run at the same time);
    # torchrun's own parser takes --n for an abbreviation of its flags: use the long name
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(ROOT / "em_rl.py"),
           *small_run(tiny_model, mini_math, out, "--steps", "2", "--samples-per-prompt", "2", "--mini-batch-size", "2",
                      "--lr", "1e-2")]
    res = subprocess.run(cmd, capture_output=True, text=True, env=_env(), cwd=tmp_path, timeout=120)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "world_size=2" in res.stdout
    rows = read_metrics(out)
    assert [m["step"] for m in rows] == [1, 2] and all(KEYS <= m.keys() for m in rows)
    # 4 prompts x 2 samples of <= 12 tokens, counted over both ranks
    assert 1 <= rows[0]["response_length"] <= 12
    assert rows[1]["kl"] > 0.0  # the sharded update moved the weights
    AutoModelForCausalLM.from_pretrained(out)


def fixed_rollouts(seed=0):
    """2 prompts x 4 rows of random tokens with ragged left padding and ragged response lengths."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, 300, (8, 14), generator=g)
    attn, resp = torch.ones_like(ids), torch.zeros_like(ids)
    for i in range(8):
        attn[i, :i % 3] = 0  # left padding
        resp[i, 6:9 + i % 4] = 1  # 3..6 response tokens, then right padding
        attn[i, 9 + i % 4:] = 0
    return {"input_ids": ids, "attention_mask": attn, "response_mask": resp}


def rank_prompts(r):
    """Rank r's rollout prompts: uneven on purpose (rank 0 decodes 1 rollout batch of 2, rank 1 two batches),
    so any collective left in the decode loop would hang the 2-process run."""
    return [f"<|im_start|>user\nWhat is {r} + {i}?<|im_end|>\n<|im_start|>assistant\n" for i in range(2 + r)]


def one_update(model_path, world, rank):
    """train_step (SGD, lr 1, no clipping) on fixed rollouts, then rollouts of the updated policy, then the
    parameter change of a second train_step on the fixed rollouts: 2 prompts x 4 rows of ragged prompt /
    response lengths, micro-batches of 2 rows; rank r of `world` takes its share. Returns (change, stats,
    {rank: rollouts}); rank r samples rank_prompts(r) with seed 100 + r (one process: both ranks' rollouts)."""
    args = em_rl.parse_args(["--model", model_path, "--batch-size", "2", "--mini-batch-size", "2", "--micro-batch-size", "2",
                             "--grad-clip", "1e9", "--kl-coef", "0.5", "--entropy-coef", "0.1", "--dtype", "float32",
                             "--temperature", "0.8", "--rollout-batch-size", "2", "--max-new-tokens", "8"])
    device = torch.device("cpu")
    model, tokenizer = em_inf.load_model(args, device, torch.float32)
    ref, _ = em_inf.load_model(args, device, torch.float32)
    with torch.no_grad():
        ref.lm_head.weight.mul_(1.5)  # a reference that differs from the policy: KL > 0
    ref = em_ft.prepare_model(ref.requires_grad_(False), args, world, trainable=False)
    model = em_ft.prepare_model(model, args, world)
    rows = slice(rank * 8 // world, (rank + 1) * 8 // world)
    mine = {k: v[rows] for k, v in fixed_rollouts().items()}
    micro = [{k: v[i:i + 2] for k, v in mine.items()} for i in range(0, 8 // world, 2)]
    full = lambda: {k: (v.full_tensor() if hasattr(v, "full_tensor") else v).detach().clone() for k, v in model.state_dict().items()}
    sgd = torch.optim.SGD(model.parameters(), lr=1.0)
    em_rl.train_step(model, ref, sgd, [micro], args, world, device, torch.float32)
    samples = {}  # under FSDP2: decoded with gathered weights, which must be the updated ones
    for r in ([rank] if world > 1 else range(2)):
        torch.manual_seed(100 + r)
        samples[r] = em_rl.rollout(model, tokenizer, rank_prompts(r), args, em_rl.stop_token_ids(model, tokenizer), device, torch.float32)
    before = full()
    stats = em_rl.train_step(model, ref, sgd, [micro], args, world, device, torch.float32)  # after the gathered phase
    after = full()
    return {k: after[k] - before[k] for k in before}, stats, samples


@pytest.mark.parametrize("reward, reduction, temperature", [("token", "mean", 1.0), ("sequence", "sum", 1.0), ("token", "sum", 0.7)])
def test_score_rollouts_against_hf_logits_in_float64(tiny_model, reward, reduction, temperature):
    # at the rollout temperature T, as verl: H and log p of softmax(z / T), the distribution sampled from
    args = em_rl.parse_args(["--model", tiny_model, "--batch-size", "2", "--mini-batch-size", "2", "--reward", reward,
                             "--reward-reduction", reduction, "--kl-coef", "0", "--temperature", str(temperature)])
    model, _ = em_inf.load_model(args, torch.device("cpu"), torch.float32)
    data = fixed_rollouts()
    micro = [{k: v[i:i + 4] for k, v in data.items()} for i in (0, 4)]  # two micro-batches of 4 rows
    em_rl.score_rollouts(model, None, [micro], args, torch.device("cpu"), torch.float32)
    # reference: the model's full logits in float64, torch.distributions, explicit loops
    pos = (data["attention_mask"].cumsum(-1) - 1).clamp_min(0)
    with torch.no_grad():
        logits = model(input_ids=data["input_ids"], attention_mask=data["attention_mask"], position_ids=pos).logits.double() / temperature
    rewards = []
    for b in range(8):
        ts = [t for t in range(13) if data["response_mask"][b, t + 1]]  # logits at t predict token t + 1
        dist_t = torch.distributions.Categorical(logits=logits[b, ts])
        H, lp = dist_t.entropy(), dist_t.log_prob(data["input_ids"][b, [t + 1 for t in ts]])
        per_token = -H if reward == "token" else lp
        rewards.append((per_token.mean() if reduction == "mean" else per_token.sum()).item())
        got = torch.cat([m["old_logp"] for m in micro])[b]
        assert got[ts].tolist() == pytest.approx(lp.tolist(), abs=1e-5)
    got_r = torch.cat([m["reward"] for m in micro]).tolist()
    assert got_r == pytest.approx(rewards, abs=1e-4)
    got_a = torch.cat([m["advantages"] for m in micro]).tolist()
    for b in range(8):
        others = [rewards[j] for j in range(4 * (b // 4), 4 * (b // 4) + 4) if j != b]
        assert got_a[b] == pytest.approx(rewards[b] - sum(others) / 3, abs=1e-4)
    # the update scores at the same T: before any step rho = 1 everywhere, so the loss is -sum_i A_i |y_i|
    for batch in micro:
        loss_sum, clipped, tokens = em_rl.ppo_loss_sums(model, batch, args)
        n_i = batch["response_mask"][:, 1:].sum(-1).double()
        assert loss_sum.item() == pytest.approx(-(batch["advantages"].double() * n_i).sum().item(), abs=1e-4)
        assert clipped.item() == 0


def test_fsdp2_update_equals_the_single_process_update(tiny_model, tmp_path):
    # the token-mean loss over both ranks' tokens must give the same step as one process with all rows
    out = tmp_path / "delta.pt"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", __file__, tiny_model, str(out)]
    res = subprocess.run(cmd, capture_output=True, text=True, env=_env(), cwd=tmp_path, timeout=120)
    assert res.returncode == 0, res.stderr[-3000:]
    sharded = torch.load(out, weights_only=True)
    delta, stats, samples = one_update(tiny_model, 1, 0)
    # each rank's rollouts (gathered weights, no lock-step) are the single process's tokens for the same seed
    for r in (0, 1):
        assert len(sharded["samples"][r]) == len(samples[r]) == 2 + r
        for (p1, y1), (p2, y2) in zip(sharded["samples"][r], samples[r]):
            assert torch.equal(p1, p2) and torch.equal(y1, y2), r
    assert stats["kl"] > 0 and stats["loss"] == pytest.approx(sharded["stats"]["loss"], rel=1e-5)
    scale = max(d.abs().max() for d in delta.values())
    assert scale > 0
    for k in delta:
        torch.testing.assert_close(sharded["delta"][k], delta[k], atol=1e-5 * scale, rtol=1e-4)


@pytest.mark.parametrize("flags, message", [
    (["--samples-per-prompt", "1"], "--samples-per-prompt must be >= 2"),
    (["--batch-size", "3", "--mini-batch-size", "2"], "must be a multiple of --mini-batch-size"),
    (["--model", "no/such/folder"], "does not exist"),
    (["--dataset", "no_such_file.jsonl"], "no such file"),
    (["--reward", "accuracy"], "invalid choice"),
    (["--kl-coef", "-1"], "--kl-coef must be >= 0"),
    (["--clip", "0"], "--clip > 0"),
    (["--rollout-batch-size", "0"], "--rollout-batch-size must be >= 1"),
])
def test_bad_inputs_give_one_line_errors(tiny_model, mini_math, tmp_path, flags, message):
    cmd = [sys.executable, str(ROOT / "em_rl.py"), *small_run(tiny_model, mini_math, tmp_path / "bad", "--steps", "1"), *flags]
    res = subprocess.run(cmd, capture_output=True, text=True, env=_env(), cwd=tmp_path, timeout=120)
    assert res.returncode == 2, res.stderr
    assert "Traceback" not in res.stderr and message in res.stderr, res.stderr


def test_resume_with_other_flags_is_refused(tiny_model, mini_math, tmp_path):
    out = tmp_path / "run"
    em_rl.main(small_run(tiny_model, mini_math, out, "--steps", "1"))
    cmd = [sys.executable, str(ROOT / "em_rl.py"), *small_run(tiny_model, mini_math, out, "--steps", "2", "--samples-per-prompt", "2")]
    res = subprocess.run(cmd, capture_output=True, text=True, env=_env(), cwd=tmp_path, timeout=120)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert "rerun with the same flags" in res.stderr, res.stderr


if __name__ == "__main__":  # the 2-process half of test_fsdp2_update_equals_the_single_process_update
    import torch.distributed as dist
    dist.init_process_group("gloo")
    d, s, mine = one_update(sys.argv[1], dist.get_world_size(), dist.get_rank())
    gathered = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, mine)
    if dist.get_rank() == 0:
        torch.save({"delta": d, "stats": s, "samples": {r: v for g in gathered for r, v in g.items()}}, sys.argv[2])
    em_ft.leave_torchrun(0)  # as at the end of em_rl.main (em_ft.finish_run; see leave_torchrun why)
