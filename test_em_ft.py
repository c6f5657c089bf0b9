"""Tests for em_ft.py on the tiny Qwen2 fixture (CPU, about a minute).

References are independent of the code under test: float64 full-vocabulary logits with
torch.distributions.Categorical for the entropy and log_softmax for the k3 KL, one unpadded
sequence at a time, differentiated by autograd. The FSDP2 test runs this file as a 2-process
torchrun worker (see the bottom) and compares with a 1-process run and the same reference.
"""
import argparse
import copy
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from torch.distributions import Categorical
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

import em_ft
import evaluate

HERE = os.path.dirname(os.path.abspath(__file__))
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "EM_COMPILE": "0", "TOKENIZERS_PARALLELISM": "false", "PYTHONPATH": HERE}

# (prompt tokens, response tokens) of different lengths: left padding, right padding and micro-batch
# splits all differ between the runs compared below
SEQS = [([5, 17, 33, 2, 90], [44, 12, 7]), ([60, 61], [3, 8, 99, 100, 41, 2]),
        ([9, 9, 10, 11, 12, 13, 14], [250]), ([300, 1, 77], [15, 16, 17, 18])]


def collate(seqs, pad_id):
    """Left-padded prompts then right-padded responses, the layout em_ft.rollout returns."""
    p_len, r_len = max(len(p) for p, _ in seqs), max(len(r) for _, r in seqs)
    ids, attn, resp = [], [], []
    for p, r in seqs:
        lp, rp = p_len - len(p), r_len - len(r)
        ids.append([pad_id] * lp + p + r + [pad_id] * rp)
        attn.append([0] * lp + [1] * (len(p) + len(r)) + [0] * rp)
        resp.append([0] * p_len + [1] * len(r) + [0] * rp)
    return {k: torch.tensor(v) for k, v in (("input_ids", ids), ("attention_mask", attn), ("response_mask", resp))}


def train_args(**kw):
    base = dict(kl_coef=0.0, grad_clip=1e9, gradient_checkpointing=False, dtype="float32")
    return argparse.Namespace(**{**base, **kw})


def reference_loss(model, ref_model, seqs, kl_coef):
    """(sum_t H_t + kl_coef * sum_t k3_t) / N in float64, one unpadded sequence at a time."""
    h_sum, kl_sum, n = 0.0, 0.0, 0
    for p, r in seqs:
        ids = torch.tensor([p + r])
        z = model(input_ids=ids).logits[0, len(p) - 1:-1].double()  # states predicting the response tokens
        h_sum = h_sum + Categorical(logits=z).entropy().sum()
        if ref_model is not None:
            y = torch.tensor(r)
            logp = torch.log_softmax(z, -1)[torch.arange(len(r)), y]
            with torch.no_grad():
                z_ref = ref_model(input_ids=ids).logits[0, len(p) - 1:-1].double()
            r_ = torch.log_softmax(z_ref, -1)[torch.arange(len(r)), y] - logp
            kl_sum = kl_sum + (torch.exp(r_) - r_ - 1).sum()
        n += len(r)
    return (h_sum + kl_coef * kl_sum) / n, h_sum.item() / n


@pytest.fixture(scope="session")
def ref_dir(tmp_path_factory):
    """A second tiny model (other seed, same tokenizer) to stand in for the frozen reference."""
    from conftest import build_tiny_model
    return build_tiny_model(tmp_path_factory.mktemp("tiny_ref"), seed=1)


def load(path, dtype=torch.float32):
    return AutoModelForCausalLM.from_pretrained(path, dtype=dtype)


# ---------------------------------------------------------------------------------------------
# The loss and its gradient against float64 autograd, for any micro-batch split
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("split, kl_coef", [([4], 0.0), ([1, 1, 1, 1], 0.5), ([3, 1], 0.5)])
def test_token_mean_gradient_matches_float64_reference(tiny_model, ref_dir, kl_coef, split):
    model = load(tiny_model)
    ref = load(ref_dir).requires_grad_(False) if kl_coef else None
    pad = AutoTokenizer.from_pretrained(tiny_model).pad_token_id
    batches, i = [], 0
    for size in split:  # gradient accumulation over micro-batches of these sizes
        batches.append(collate(SEQS[i:i + size], pad))
        i += size

    # reference: w - grad of the float64 full-batch token mean (plain SGD with lr 1 exposes the gradient)
    model64 = copy.deepcopy(model).double()
    loss_ref, h_ref = reference_loss(model64, copy.deepcopy(ref).double() if ref else None, SEQS, kl_coef)
    loss_ref.backward()
    expected = {k: (p.detach() - p.grad).float() for k, p in model64.named_parameters()}

    sgd = torch.optim.SGD(model.parameters(), lr=1.0)
    stats = em_ft.train_step(model, ref, sgd, batches, train_args(kl_coef=kl_coef), 1, torch.device("cpu"), torch.float32)
    assert stats["loss"] == pytest.approx(loss_ref.item(), rel=1e-5)
    assert stats["entropy"] == pytest.approx(h_ref, rel=1e-5)
    assert stats["response_tokens"] == sum(len(r) for _, r in SEQS)
    for k, p in model.named_parameters():
        torch.testing.assert_close(p.detach(), expected[k], atol=2e-6, rtol=1e-5, msg=k)


def test_rollout_layout_and_entropy_alignment(tiny_model, mini_math):
    """rollout -> forward_entropy_logprob gives, at every generated token, the entropy of the
    distribution it was sampled from (float64 reference on the unpadded prompt + response)."""
    import evaluate
    model, tok = load(tiny_model), AutoTokenizer.from_pretrained(tiny_model, padding_side="left")
    prompts = [evaluate.build_prompt(tok, r) for r in evaluate.load_problems(mini_math, limit=3)]
    stop_ids = em_ft.stop_token_ids(model, tok)
    args = argparse.Namespace(temperature=1.0, rollout_batch_size=3, micro_batch_size=2, max_new_tokens=12)
    torch.manual_seed(0)
    samples = em_ft.rollout(model, tok, prompts, args, stop_ids, torch.device("cpu"), torch.float32)
    batches = em_ft.micro_batches(samples, args, tok.pad_token_id)  # 3 rows decoded together, re-split 2 + 1
    assert [b["input_ids"].shape[0] for b in batches] == [2, 1]
    # the same seed and rollout batch give the same samples, whatever the micro-batch size
    torch.manual_seed(0)
    again = em_ft.rollout(model, tok, prompts, argparse.Namespace(**{**vars(args), "micro_batch_size": 1}), stop_ids,
                          torch.device("cpu"), torch.float32)
    assert all(torch.equal(a, b) for x, y in zip(samples, again) for a, b in zip(x, y))
    model64 = copy.deepcopy(model).double()
    row = 0
    for batch in batches:
        with torch.no_grad():
            h, logp, mask = em_ft.forward_entropy_logprob(model, batch)
        for b in range(batch["input_ids"].shape[0]):
            ids, attn, resp = (batch[k][b] for k in ("input_ids", "attention_mask", "response_mask"))
            prompt, response = ids[(attn == 1) & (resp == 0)].tolist(), ids[resp == 1].tolist()
            assert tok.decode(prompt) == prompts[row]
            assert response[-1] in stop_ids or len(response) == args.max_new_tokens
            assert not (attn[resp == 1] == 0).any() and (resp[attn == 0] == 0).all()
            z = model64(input_ids=torch.tensor([prompt + response])).logits[0, len(prompt) - 1:-1]
            torch.testing.assert_close(h[b][mask[b]].double(), Categorical(logits=z).entropy(), atol=1e-5, rtol=1e-5)
            expected_logp = torch.log_softmax(z, -1)[torch.arange(len(response)), torch.tensor(response)]
            torch.testing.assert_close(logp[b][mask[b]].double(), expected_logp, atol=1e-5, rtol=1e-5)
            row += 1


def test_grad_clip_scales_to_max_norm(tiny_model):
    model = load(tiny_model)
    pad = AutoTokenizer.from_pretrained(tiny_model).pad_token_id
    before = {k: p.detach().clone() for k, p in model.named_parameters()}
    stats = em_ft.train_step(model, None, torch.optim.SGD(model.parameters(), lr=1.0), [collate(SEQS, pad)],
                             train_args(grad_clip=1e-3), 1, torch.device("cpu"), torch.float32)
    step = torch.cat([(before[k] - p.detach()).flatten() for k, p in model.named_parameters()])
    assert stats["grad_norm"] > 1e-3  # clipping was active
    assert step.norm().item() == pytest.approx(1e-3, rel=1e-3)


# ---------------------------------------------------------------------------------------------
# Data order: a pure function of the step
# ---------------------------------------------------------------------------------------------
def test_training_prompts_use_the_official_suffix_and_evaluation_does_not(tiny_model, mini_math):
    import evaluate
    tok = AutoTokenizer.from_pretrained(tiny_model)
    record = evaluate.load_problems(mini_math, limit=1)[0]
    args = argparse.Namespace(max_prompt_tokens=1024, dataset=mini_math)
    (train,) = em_ft.training_prompts([record], tok, args, 0)
    # verl's process_math.py: the paper's system prompt, the problem, then the instruction
    suffix = " Let us think step by step and output the final answer within \\boxed{}"
    assert evaluate.MATH_SYSTEM_PROMPT in train and record["problem"] + suffix + "<|im_end|>" in train
    assert suffix not in evaluate.build_prompt(tok, record)  # evaluation keeps the paper's prompt


def test_step_prompts_cover_each_prompt_once_per_epoch_and_split_ranks():
    prompts = [f"p{i}" for i in range(10)]
    args = argparse.Namespace(batch_size=4, samples_per_prompt=2, seed=3)
    stream = []
    for step in range(1, 6):  # 20 prompts = 2 epochs
        shares = [em_ft.step_prompts(prompts, step, args, r, 2) for r in range(2)]
        assert all(len(s) == 4 for s in shares) and all(s[0] == s[1] and s[2] == s[3] for s in shares)
        stream += [p for s in shares for p in s[::2]]
    assert sorted(stream[:10]) == prompts and sorted(stream[10:]) == prompts
    assert stream[:10] != stream[10:]  # a new order each epoch
    assert em_ft.step_prompts(prompts, 3, args, 1, 2) == em_ft.step_prompts(prompts, 3, args, 1, 2)


# ---------------------------------------------------------------------------------------------
# End to end (in-process main): entropy falls, the folder reloads, resume is exact
# ---------------------------------------------------------------------------------------------
def run(tiny_model, mini_math, out, *extra):
    em_ft.main(["--model", tiny_model, "--dataset", mini_math, "--batch-size", "4", "--micro-batch-size", "2",
                "--max-new-tokens", "8", "--lr", "1e-2", "--out", str(out), *extra])
    with open(os.path.join(out, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def test_entropy_falls_and_saved_folder_reloads(tiny_model, mini_math, tmp_path):
    # EM-FT needs no labels: train on the problems alone, evaluate on the labeled file
    prompts = tmp_path / "data" / "prompts.jsonl"
    prompts.parent.mkdir()
    with open(mini_math) as src, open(prompts, "w") as dst:
        for line in src:
            dst.write(json.dumps({"problem": json.loads(line)["problem"]}) + "\n")
    out = tmp_path / "run"
    log = run(tiny_model, str(prompts), out, "--steps", "6", "--eval-dataset", mini_math,
              "--eval-limit", "3", "--eval-every", "3")
    assert [m["step"] for m in log] == [1, 2, 3, 4, 5, 6]
    for m in log:
        assert {"step", "loss", "entropy", "response_length", "grad_norm", "lr", "tokens_per_second", "seconds"} <= m.keys()
    assert [("eval_accuracy" in m) for m in log] == [False, False, True, False, False, True]
    assert log[-1]["entropy"] < log[0]["entropy"] - 0.5, [m["entropy"] for m in log]

    trained, base = load(out), load(tiny_model)
    assert any(not torch.equal(a, b) for a, b in zip(trained.state_dict().values(), base.state_dict().values()))
    tok = AutoTokenizer.from_pretrained(out)
    assert tok.chat_template and tok.pad_token == "<|endoftext|>"
    # the reloaded model is the trained one: its entropy on the eval prompts is lower than the base model's
    ids = tok(["<|im_start|>user\nWhat is 2 + 2?<|im_end|>\n<|im_start|>assistant\n"], return_tensors="pt").input_ids
    with torch.no_grad():
        h_trained = Categorical(logits=trained(input_ids=ids).logits[0, -1]).entropy()
        h_base = Categorical(logits=base(input_ids=ids).logits[0, -1]).entropy()
    assert h_trained < h_base


def test_micro_batch_size_does_not_change_the_run(tiny_model, mini_math, tmp_path):
    # the samples come from --rollout-batch-size batches; the micro-batch split only changes float rounding
    one = run(tiny_model, mini_math, tmp_path / "one", "--steps", "2", "--micro-batch-size", "1", "--rollout-batch-size", "4")
    four = run(tiny_model, mini_math, tmp_path / "four", "--steps", "2", "--micro-batch-size", "4", "--rollout-batch-size", "4")
    for a, b in zip(one, four):
        assert a["response_length"] == b["response_length"]
        for key in ("loss", "entropy", "grad_norm"):
            assert a[key] == pytest.approx(b[key], rel=1e-4), key
        assert {"time_rollout", "time_update"} <= a.keys() and a["time_rollout"] + a["time_update"] <= a["seconds"]


def test_resume_repeats_and_skips_nothing(tiny_model, mini_math, tmp_path):
    full = run(tiny_model, mini_math, tmp_path / "full", "--steps", "4")
    part = tmp_path / "part"
    run(tiny_model, mini_math, part, "--steps", "2")
    # simulate a crash: a step logged after the last save, and a save cut before its commit
    with open(part / "metrics.jsonl", "a") as f:
        f.write(json.dumps({"step": 3, "loss": -1.0}) + "\n" + '{"step": 4, "lo')
    (part / ".save-tmp").mkdir()
    (part / ".save-tmp" / "model.safetensors").write_bytes(b"half a file")
    resumed = run(tiny_model, mini_math, part, "--steps", "4")

    assert [m["step"] for m in resumed] == [1, 2, 3, 4]
    assert not (part / ".save-tmp").exists()
    for a, b in zip(full, resumed):
        for key in ("loss", "entropy", "grad_norm", "response_length"):
            assert a[key] == b[key], (a["step"], key)
    for (k, a), b in zip(load(tmp_path / "full").state_dict().items(), load(part).state_dict().values()):
        assert torch.equal(a, b), k
    state = torch.load(part / "train_state.pt", weights_only=True)
    assert state["step"] == 4 and state["prompts_seen"] == 16


def test_committed_but_unmoved_save_is_completed(tmp_path):
    (tmp_path / ".save-ready").mkdir()
    (tmp_path / ".save-ready" / "train_state.pt").write_text("new")
    (tmp_path / "train_state.pt").write_text("old")
    em_ft.finish_interrupted_save(str(tmp_path))
    assert (tmp_path / "train_state.pt").read_text() == "new" and not (tmp_path / ".save-ready").exists()


# ---------------------------------------------------------------------------------------------
# Subprocesses: Ctrl-C, bad input, torchrun
# ---------------------------------------------------------------------------------------------
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]


def cli(tiny_model, mini_math, out, *extra):
    return [sys.executable, os.path.join(HERE, "em_ft.py"), "--model", tiny_model, "--dataset", mini_math,
            "--batch-size", "2", "--max-new-tokens", "6", "--out", str(out), *extra]


def test_ctrl_c_saves_then_exits(tiny_model, mini_math, tmp_path):
    proc = subprocess.Popen(cli(tiny_model, mini_math, tmp_path, "--steps", "100000", "--save-every", "100000"),
                            env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    metrics = tmp_path / "metrics.jsonl"
    deadline = time.time() + 60
    while not (metrics.exists() and metrics.read_text().count("\n") >= 2) and time.time() < deadline:
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err[-2000:]
    assert "Traceback" not in err and "interrupted: saved step" in err
    steps = [json.loads(line)["step"] for line in metrics.read_text().splitlines()]
    state = torch.load(tmp_path / "train_state.pt", weights_only=True)
    assert state["step"] == steps[-1] and steps == list(range(1, steps[-1] + 1))
    load(tmp_path)  # the model saved on Ctrl-C loads


def test_bad_inputs_give_one_line_errors(tiny_model, mini_math, tmp_path, capsys):
    no_problem = tmp_path / "no_problem.jsonl"
    no_problem.write_text(json.dumps({"text": "1+1", "answer": "2"}) + "\n")
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "train_state.pt").write_bytes(b"not a checkpoint")
    other = tmp_path / "other"  # a run folder started with other flags
    other.mkdir()
    torch.save({"step": 1, "optimizer": {}, "rng": [], "world_size": 1,
                "args": {"model": tiny_model, "dataset": mini_math, "limit": None, "batch_size": 64,
                         "samples_per_prompt": 1, "seed": 0, "max_prompt_tokens": 1024}}, other / "train_state.pt")
    cases = {
        "problem field": ["--dataset", str(no_problem)],
        "--lr must be > 0": ["--lr", "0"],
        "--steps must be >= 1": ["--steps", "0"],
        "--rollout-batch-size must be >= 1": ["--rollout-batch-size", "0"],
        "cannot read checkpoint": ["--out", str(corrupt)],
        "--batch-size 64, not 2": ["--out", str(other)],
    }
    # one through the real command line: exit code 2, one line, no traceback
    proc = subprocess.run(cli(tiny_model, mini_math, tmp_path / "run", "--model", str(tmp_path / "missing_model")),
                          env=ENV, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.startswith("error: model folder"), proc.stderr[-2000:]
    assert len(proc.stderr.strip().splitlines()) == 1
    # the rest in-process: fail() is the only way out with SystemExit(2); anything else would raise
    for msg, flags in cases.items():
        with pytest.raises(SystemExit) as exit_info:
            em_ft.main(cli(tiny_model, mini_math, tmp_path / "run", "--steps", "1", *flags)[2:])
        err = capsys.readouterr().err.strip().splitlines()
        assert exit_info.value.code == 2 and len(err) == 1 and err[0].startswith("error:") and msg in err[0], (msg, err)


def test_fsdp_two_processes_match_one_process_and_reference(tiny_model, ref_dir, tmp_path):
    """2 ranks (gloo) x micro-batches of 1 with gradient checkpointing == 1 process with the whole batch:
    same losses, gradient norms and weights after two AdamW steps; the first loss is the float64 reference."""
    proc = subprocess.run(TORCHRUN + [os.path.abspath(__file__), tiny_model, ref_dir, str(tmp_path / "fsdp.pt")],
                          env=ENV, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    two = torch.load(tmp_path / "fsdp.pt", weights_only=True)
    one = fsdp_worker(tiny_model, ref_dir, None)
    for a, b in zip(one["stats"], two["stats"]):
        for key in ("loss", "entropy", "kl", "grad_norm"):
            assert a[key] == pytest.approx(b[key], rel=1e-5, abs=1e-7), key
    # Adam divides by sqrt(v): a near-zero gradient entry turns float32 summation-order noise into up
    # to ~1e-6 of weight change; a wrong gradient would move entries by ~lr = 1e-3
    for k, v in one["state"].items():
        torch.testing.assert_close(two["state"][k], v, atol=1e-5, rtol=1e-5, msg=k)
    loss_ref, _ = reference_loss(load(tiny_model, torch.float64), load(ref_dir, torch.float64), SEQS, 0.5)
    assert two["stats"][0]["loss"] == pytest.approx(loss_ref.item(), rel=1e-5)


def test_torchrun_cli_resumes_and_trains_with_kl_eval_checkpointing(tiny_model, mini_math, tmp_path):
    """2 steps in one process, then `torchrun --nproc_per_node 2 em_ft.py ... --steps 3` resumes them under
    FSDP2 (optimizer state scattered into the shards), samples, evaluates and saves (gathered) step 3."""
    flags = ["--micro-batch-size", "1", "--gradient-checkpointing", "--kl-coef", "0.1",
             "--eval-dataset", mini_math, "--eval-limit", "3", "--lr", "1e-2"]
    run(tiny_model, mini_math, tmp_path, "--steps", "2", *flags)
    cmd = TORCHRUN + cli(tiny_model, mini_math, tmp_path, "--batch-size", "4", "--max-new-tokens", "8", "--steps", "3",
                         *flags)[1:]
    proc = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "resuming" in proc.stdout and "world size changed (1 -> 2)" in proc.stdout
    log = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in log] == [1, 2, 3]
    assert "eval_accuracy" in log[1] and "eval_accuracy" in log[2] and all("kl" in m for m in log)
    assert log[0]["kl"] == 0.0 and log[2]["kl"] > 0.0  # the policy leaves the reference
    assert torch.load(tmp_path / "train_state.pt", weights_only=True)["world_size"] == 2
    load(tmp_path)


def test_sharded_loading_matches_a_plain_load(tiny_model, tmp_path):
    """load_for_training under torchrun (meta model, shards from rank 0) == from_pretrained in one process,
    on a model with tied embeddings (as SmolLM2): same weights, the tie kept, the rotary buffers set."""
    from transformers import Qwen2ForCausalLM
    tied = tmp_path / "tied"
    config = AutoConfig.from_pretrained(tiny_model)
    config.tie_word_embeddings = True
    torch.manual_seed(3)
    Qwen2ForCausalLM(config).save_pretrained(tied)
    AutoTokenizer.from_pretrained(tiny_model).save_pretrained(tied)
    proc = subprocess.run(TORCHRUN + [os.path.abspath(__file__), "load", str(tied), str(tmp_path / "loaded.pt")],
                          env=ENV, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = torch.load(tmp_path / "loaded.pt", weights_only=True)
    plain = AutoModelForCausalLM.from_pretrained(tied)
    assert got["tied"] == [True, True] and got["eos"] == plain.generation_config.eos_token_id
    assert got["state"].keys() == plain.state_dict().keys()
    for k, v in plain.state_dict().items():
        assert torch.equal(got["state"][k], v), k
    buffers = dict(plain.named_buffers())
    assert got["buffers"].keys() == buffers.keys() and any("inv_freq" in k for k in buffers)
    for k, v in buffers.items():
        assert torch.equal(got["buffers"][k], v), k


# ---------------------------------------------------------------------------------------------
# torchrun worker: `python -m torch.distributed.run --nproc_per_node 2 test_em_ft.py MODEL REF OUT`
# ---------------------------------------------------------------------------------------------
def fsdp_worker(model_dir, ref_dir, out):
    """Two AdamW steps (kl_coef 0.5, clipping on) on SEQS; under torchrun each rank trains on its half."""
    import torch.distributed as dist
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    if world > 1:
        dist.init_process_group("gloo")
    args = train_args(kl_coef=0.5, grad_clip=0.02, gradient_checkpointing=world > 1)
    model = em_ft.prepare_model(load(model_dir), args, world)
    ref = em_ft.prepare_model(load(ref_dir).requires_grad_(False), args, world, trainable=False)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    pad = AutoTokenizer.from_pretrained(model_dir).pad_token_id
    share = len(SEQS) // world
    mine = SEQS[rank * share:(rank + 1) * share]
    batches = [collate([s], pad) for s in mine] if world > 1 else [collate(mine, pad)]
    stats = [em_ft.train_step(model, ref, optimizer, batches, args, world, torch.device("cpu"), torch.float32)
             for _ in range(2)]
    state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    result = {"stats": stats, "state": state}
    if world > 1:
        if rank == 0:
            torch.save(result, out)
        em_ft.leave_torchrun(0)  # as at the end of em_ft.main (see there why)
    return result


def load_worker(model_dir, out):
    """Every rank loads with em_ft.load_for_training; rank 0 saves the gathered weights, buffers and ties."""
    import torch.distributed as dist
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    dist.init_process_group("gloo")
    args = em_ft.parse_args(["--model", model_dir, "--dtype", "float32", "--device", "cpu"])
    model, _ = em_ft.load_for_training(args, dist.get_rank(), dist.get_world_size(), torch.device("cpu"), torch.float32)
    tied = [None] * dist.get_world_size()
    dist.all_gather_object(tied, model.lm_head.weight is model.model.embed_tokens.weight)
    state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    if dist.get_rank() == 0:
        torch.save({"state": state, "buffers": {k: b.clone() for k, b in model.named_buffers()}, "tied": tied,
                    "eos": model.generation_config.eos_token_id}, out)
    em_ft.leave_torchrun(0)


if __name__ == "__main__":
    sys.path.insert(0, HERE)
    if sys.argv[1] == "load":
        load_worker(*sys.argv[2:4])
    else:
        fsdp_worker(*sys.argv[1:4])


def test_eurus_chat_prompts_reach_the_model_as_the_chat_template_renders_them(tiny_model, tmp_path, monkeypatch):
    # Eurus-2-RL-Data code rows: `prompt` is a chat list (system + user); the official pipeline applies the chat
    # template to it as it is. A real em_ft.py step on the tiny model, the prompts seen by the decode engine
    from transformers import AutoTokenizer

    system = "\nWhen tackling complex reasoning tasks, you have access to the following actions.\n\n"
    rows = [{"data_source": "codecontests", "ability": "code", "extra_info": {"split": "train", "index": i},
             "reward_model": {"style": "rule", "ground_truth": "{}"},
             "prompt": [{"role": "system", "content": system},
                        {"role": "user", "content": f"Write a program that prints {i}.\n\nWrite Python code to solve the "
                                                    "problem. Present the code in \n```python\nYour code\n```\nat the end."}]}
            for i in range(3)] + [{"data_source": "numina", "ability": "math", "extra_info": {"split": "train", "index": 9},
                                   "reward_model": {"style": "rule", "ground_truth": "4"},
                                   "prompt": [{"role": "user", "content": "What is 2 + 2?"}]}]
    data = tmp_path / "eurus.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    seen, real = [], em_ft.sample

    def spy(model, tokenizer, prompts, *args, **kwargs):
        prompts = list(prompts)
        seen.extend(prompts)
        return real(model, tokenizer, prompts, *args, **kwargs)

    monkeypatch.setattr(em_ft, "sample", spy)
    em_ft.main(["--model", tiny_model, "--dataset", f"{data}:ability=code", "--batch-size", "3", "--micro-batch-size",
                "3", "--max-new-tokens", "4", "--steps", "1", "--out", str(tmp_path / "run")])
    tok = AutoTokenizer.from_pretrained(tiny_model)
    expected = {tok.apply_chat_template(r["prompt"], tokenize=False, add_generation_prompt=True) for r in rows[:3]}
    assert set(seen) == expected and len(seen) == 3  # the math row is not selected
    assert not any(em_ft.TRAIN_SUFFIX.strip() in p or evaluate.MATH_SYSTEM_PROMPT in p for p in seen)
