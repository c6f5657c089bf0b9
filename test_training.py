"""Tests of training as researchers run it (em_ft.py / em_rl.py): experiment trackers, LoRA, collapse guards, and
--chat-template-kwargs, on the tiny fixture model (CPU, offline).

What is read back is read with each tool's own reader: TensorBoard's EventAccumulator, the protobuf records of
wandb's offline run file, trackio's SQLite store. References are independent of the code under test: the frozen
base is a plain from_pretrained model, the merged folder is checked against peft's own PeftModel.from_pretrained,
repeated 4-grams and clipped responses are counted by hand. The torchrun test runs this file as a 2-process worker.
"""
import argparse
import glob
import json
import os
import shutil
import sqlite3
import struct
import subprocess
import sys

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

import em_ft
import em_inf
import em_rl
import evaluate
from test_em_ft import SEQS, collate

HERE = os.path.dirname(os.path.abspath(__file__))
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "EM_COMPILE": "0", "TOKENIZERS_PARALLELISM": "false", "PYTHONPATH": HERE,
       "OMP_NUM_THREADS": "1"}
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
# the tiny model's ChatML template, plus a line that only a template variable switches on (as Qwen3's
# enable_thinking switches its empty <think></think> block)
KWARG_TEMPLATE = ("{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content']"
                  " + '<|im_end|>\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}"
                  "{% if enable_thinking is defined and enable_thinking is false %}{{ 'NO-THINK\n' }}{% endif %}"
                  "{% endif %}")


@pytest.fixture(scope="module")
def kwarg_model(tiny_model, tmp_path_factory):
    """The tiny model with KWARG_TEMPLATE as its chat template and its lm_head 10x larger.

    The random tiny model's head is so small (logits of std ~0.16 after the final norm) that its next-token
    distribution is near uniform whatever the decoder computes: adapters in the decoder could only rotate the normed
    state and barely move the entropy (5.979 -> 5.969 in 8 steps). With a 10x head the state's direction matters,
    as in a trained model, and LoRA has something to minimize."""
    path = tmp_path_factory.mktemp("kwarg_model")
    for name in os.listdir(tiny_model):
        shutil.copy(os.path.join(tiny_model, name), path)
    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    with torch.no_grad():
        model.lm_head.weight.mul_(10)
    model.save_pretrained(path)
    (path / "chat_template.jinja").write_text(KWARG_TEMPLATE)
    return str(path)


def metrics(out, name="metrics.jsonl"):
    with open(os.path.join(out, name)) as f:
        return [json.loads(line) for line in f]


def ft(model, data, out, *extra):
    em_ft.main(["--model", model, "--dataset", data, "--batch-size", "4", "--micro-batch-size", "2",
                "--max-new-tokens", "8", "--out", str(out), *extra])
    return metrics(out)


def rl(model, data, out, *extra):
    em_rl.main(["--model", model, "--dataset", data, "--batch-size", "2", "--samples-per-prompt", "2",
                "--micro-batch-size", "4", "--max-new-tokens", "6", "--out", str(out), *extra])
    return metrics(out)


def wandb_history(run_dir):
    """The rows logged to an offline wandb run, read from its run-<id>.wandb file: wandb's own protobuf Records in
    LevelDB's log format (a 7-byte header ":W&B" + magic + version; 32 KiB blocks of chunks, each crc32 [4], length
    [2], type [1]: 1 full, 2 first, 3 middle, 4 last; a block's last < 7 bytes are padding)."""
    from wandb.proto import wandb_internal_pb2

    [path] = glob.glob(os.path.join(run_dir, "run-*.wandb"))
    data = open(path, "rb").read()
    assert data[:4] == b":W&B"
    pos, pending, rows, run = 7, b"", [], None
    while pos + 7 <= len(data):
        if 32768 - pos % 32768 < 7:
            pos += 32768 - pos % 32768
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        chunk, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
        pending = chunk if kind in (1, 2) else pending + chunk
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            if record.WhichOneof("record_type") == "history":
                rows.append({item.key or "/".join(item.nested_key): json.loads(item.value_json)
                             for item in record.history.item})
            elif record.WhichOneof("record_type") == "run":
                run = record.run
    return run, rows


# ---------------------------------------------------------------------------------------------
# Collapse metrics and the stop rules, by hand
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("tokens, expected", [
    ([], 0.0), ([1, 2, 3], 0.0), ([1, 2, 3, 4], 0.0), ([7, 7, 7, 7, 7], 0.5),  # 2 positions, 1 distinct
    ([1, 2, 3, 4, 1, 2, 3, 4], 0.2),  # 1234 2341 3412 4123 1234: 5 positions, 4 distinct
    ([5] * 12, 8 / 9)])
def test_repeat_4gram_counts_repeated_positions(tokens, expected):
    assert em_ft.repeat_4gram(tokens) == pytest.approx(expected)


def test_collapse_metrics_count_clipped_responses_and_leave_the_stop_token_out():
    stop = 0
    args = argparse.Namespace(max_new_tokens=6)
    p = torch.tensor([9, 9])
    samples = [(p, torch.tensor([1, 2, 1, 2, 1, 2])),  # cut at the cap: clipped; 1212 2121 1212: 1 repeat of 3
               (p, torch.tensor([3, 3, 3, 3, 3, stop])),  # ended by the stop token at the cap: not clipped; 3333 3333
               (p, torch.tensor([4, stop]))]  # short: no 4-gram
    got = em_ft.collapse_metrics(samples, args, [stop], torch.device("cpu"))
    assert got["clipped_ratio"] == pytest.approx(1 / 3)
    assert got["repeat_4gram"] == pytest.approx((1 / 3 + 1 / 2 + 0) / 3)


def test_stop_rules_on_constructed_logs():
    args = argparse.Namespace(stop_entropy=0.5, stop_clipped=0.8)
    assert em_ft.collapse_stop({"entropy": 0.6, "clipped_ratio": 0.8}, args) is None  # at the threshold: go on
    assert "--stop-entropy 0.5" in em_ft.collapse_stop({"entropy": 0.49, "clipped_ratio": 0.0}, args)
    assert "--stop-clipped 0.8" in em_ft.collapse_stop({"entropy": 2.0, "clipped_ratio": 0.81}, args)
    off = argparse.Namespace(stop_entropy=None, stop_clipped=None)
    assert em_ft.collapse_stop({"entropy": 0.0, "clipped_ratio": 1.0}, off) is None


def test_stop_entropy_ends_em_ft_cleanly_with_a_checkpoint(tiny_model, mini_math, tmp_path, capsys):
    # the tiny random model's entropy is ~6 nats, so a threshold of 50 fires after the first step
    log = ft(tiny_model, mini_math, tmp_path, "--steps", "5", "--save-every", "100", "--stop-entropy", "50")
    assert [m["step"] for m in log] == [1] and log[0]["stopped"].startswith("entropy ")
    assert "--stop-entropy 50" in log[0]["stopped"]
    assert "stopped early at step 1: entropy" in capsys.readouterr().out
    assert torch.load(tmp_path / "train_state.pt", weights_only=True)["step"] == 1
    AutoModelForCausalLM.from_pretrained(tmp_path)


def test_stop_clipped_ends_em_rl_cleanly_with_a_checkpoint(tiny_model, mini_math, tmp_path, capsys):
    # 4 responses of at most 6 tokens from a random model over a ~400-token vocabulary: nearly all are cut
    log = rl(tiny_model, mini_math, tmp_path, "--steps", "5", "--save-every", "100", "--stop-clipped", "0",
             "--kl-coef", "0")
    assert [m["step"] for m in log] == [1] and log[0]["clipped_ratio"] > 0
    assert log[0]["stopped"] == f"clipped_ratio {log[0]['clipped_ratio']:.4f} > --stop-clipped 0"
    assert "stopped early at step 1: clipped_ratio" in capsys.readouterr().out
    assert torch.load(tmp_path / "train_state.pt", weights_only=True)["step"] == 1


# ---------------------------------------------------------------------------------------------
# LoRA: adapters only, the frozen base as the reference, the merged folder, resume, tracking
# ---------------------------------------------------------------------------------------------
def lora_args(model, *extra):
    args = em_ft.parse_args(["--model", model, "--lora-rank", "4", "--dtype", "float32", "--device", "cpu",
                             "--micro-batch-size", "4", "--lr", "1e-2", *extra])
    em_inf.setup(args)
    return args


def test_lora_trains_only_the_adapters_and_its_reference_is_the_frozen_base(tiny_model):
    args = lora_args(tiny_model, "--kl-coef", "0.5")
    model, tok, ref, optimizer = em_ft.load_training(args, None, 0, 1, torch.device("cpu"), torch.float32)
    named = dict(model.named_parameters())
    in_optimizer = {id(p) for group in optimizer.param_groups for p in group["params"]}
    assert {n for n, p in named.items() if id(p) in in_optimizer} == {n for n in named if ".lora_" in n} != set()
    before = {n: p.detach().clone() for n, p in named.items()}
    base = AutoModelForCausalLM.from_pretrained(tiny_model)
    batch = collate(SEQS, tok.pad_token_id)
    for _ in range(2):
        stats = em_ft.train_step(model, ref, optimizer, [batch], args, 1, torch.device("cpu"), torch.float32)
    changed = {n for n, p in named.items() if not torch.equal(p.detach(), before[n])}
    assert changed and all(".lora_" in n for n in changed), sorted(changed)
    assert any(".lora_B." in n for n in changed)  # B starts at 0: the policy has moved away from the base
    assert stats["kl"] > 0
    # the reference is the frozen base, computed by an independent plain model: log_softmax of its full logits
    with torch.no_grad():
        got = em_ft.reference_logprob(ref, batch)
        z = base(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                 position_ids=(batch["attention_mask"].cumsum(-1) - 1).clamp_min(0)).logits[:, :-1].double()
        want = torch.log_softmax(z, -1).gather(-1, batch["input_ids"][:, 1:, None])[..., 0]
        mask = batch["response_mask"][:, 1:].bool()
        torch.testing.assert_close(got[mask].double(), want[mask], atol=1e-5, rtol=1e-5)
        # and the adapters are on again for the policy's own forward
        policy_logp = em_ft.forward_entropy_logprob(model, batch)[1]
    assert (policy_logp[mask] - got[mask]).abs().max() > 1e-4


def test_lora_refuses_lm_head_and_a_missing_peft_in_one_line(tiny_model, mini_math, tmp_path, capsys, monkeypatch):
    cases = [(["--lora-rank", "4", "--lora-target-modules", "q_proj,lm_head"], "not lm_head or embed_tokens"),
             (["--lora-rank", "-1"], "--lora-rank must be >= 0"),
             (["--track", "tensorboard,mlflow"], "--track mlflow: not a tracker"),
             (["--chat-template-kwargs", "{enable_thinking: false}"], "--chat-template-kwargs is not valid JSON"),
             (["--chat-template-kwargs", "[1, 2]"], "must be a JSON object")]
    missing = [(["--track", "wandb"], "--track wandb needs the wandb package, which is not installed: pip install wandb"),
               (["--lora-rank", "8"], "--lora-rank needs the peft package, which is not installed: pip install peft")]
    for flags, message in cases + missing:
        if flags == missing[0][0]:  # from here on as if wandb and peft were not installed
            real_find_spec = em_ft.importlib.util.find_spec
            monkeypatch.setattr(em_ft.importlib.util, "find_spec",
                                lambda name, *a: None if name in ("wandb", "peft") else real_find_spec(name, *a))
        with pytest.raises(SystemExit) as e:
            em_ft.main(["--model", tiny_model, "--dataset", mini_math, "--out", str(tmp_path / "run"), *flags])
        err = capsys.readouterr().err.strip().splitlines()
        assert e.value.code == 2 and len(err) == 1 and err[0].startswith("error:") and message in err[0], (flags, err)


def test_lora_em_ft_tracks_logs_completions_and_saves_a_merged_folder(kwarg_model, mini_math, tmp_path, monkeypatch):
    """One LoRA EM-FT run with TensorBoard and offline wandb, completions, and a template variable."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    out = tmp_path / "run"
    log = ft(kwarg_model, mini_math, out, "--steps", "5", "--lora-rank", "8", "--lr", "3e-2", "--track",
             "tensorboard", "--track", "wandb", "--log-completions", "2",
             "--chat-template-kwargs", '{"enable_thinking": false}')
    assert [m["step"] for m in log] == [1, 2, 3, 4, 5]
    # EM-FT with adapters alone still lowers the entropy of the model's samples
    assert log[-1]["entropy"] < log[0]["entropy"] - 1.0, [m["entropy"] for m in log]
    for m in log:
        assert 0 <= m["clipped_ratio"] <= 1 and 0 <= m["repeat_4gram"] <= 1

    # TensorBoard: every scalar of metrics.jsonl at its step
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    for key in ("loss", "entropy", "grad_norm", "clipped_ratio", "repeat_4gram", "response_length"):
        assert [(e.step, e.value) for e in events.Scalars(key)] == [(m["step"], pytest.approx(m[key], rel=1e-6))
                                                                   for m in log], key
    assert "completions/text_summary" in events.Tags()["tensors"]

    # wandb (offline): one run, the arguments as its config, every row of metrics.jsonl, a table per step
    [run_dir] = glob.glob(str(out / "wandb" / "offline-run-*"))
    run, rows = wandb_history(run_dir)
    assert run.run_id == json.load(open(out / "trackers.json"))["wandb"] and run.display_name == "run"
    config = {item.key: json.loads(item.value_json) for item in run.config.update}
    assert config["lora_rank"] == 8 and config["track"] == ["tensorboard", "wandb"]
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5]
    for r, m in zip(rows, log):
        assert r["entropy"] == pytest.approx(m["entropy"]) and r["clipped_ratio"] == m["clipped_ratio"]
        assert r["completions/_type"] == "table-file" and r["completions/nrows"] == 2

    # completions.jsonl: 2 pairs per step, the prompt rendered with the template variable
    rows = metrics(out, "completions.jsonl")
    assert [r["step"] for r in rows] == [1, 1, 2, 2, 3, 3, 4, 4, 5, 5]
    tok = AutoTokenizer.from_pretrained(kwarg_model)
    for r in rows:
        assert r["prompt"].endswith("<|im_start|>assistant\nNO-THINK\n") and evaluate.MATH_SYSTEM_PROMPT in r["prompt"]
        assert 1 <= r["response_tokens"] <= 8 and r["clipped"] == (r["response_tokens"] == 8 and
                                                                   not r["response"].endswith("<|im_end|>"))
        assert r["response"] == tok.decode(tok(r["response"], add_special_tokens=False).input_ids)
        assert 0 < r["entropy"] < 7  # nats, below log(vocabulary)
    first = [r["entropy"] for r in rows if r["step"] == 1]
    assert min(first) <= log[0]["entropy"] * 1.5  # per-response means around the step's token mean

    # the merged folder is a plain model: from_pretrained gives the logits of peft's own base + adapter
    from peft import PeftModel
    merged = AutoModelForCausalLM.from_pretrained(out)
    base = AutoModelForCausalLM.from_pretrained(kwarg_model)
    peft_model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(kwarg_model), str(out / "adapter"))
    ids = torch.tensor([[5, 17, 33, 2, 90, 44, 12, 7, 300, 1]])
    with torch.no_grad():
        z_merged, z_peft, z_base = (m(input_ids=ids).logits for m in (merged, peft_model, base))
    torch.testing.assert_close(z_merged, z_peft, atol=1e-5, rtol=1e-5)
    assert (z_merged - z_base).abs().max() > 1e-3
    # only the adapted layers' weights differ from the base; embeddings, norms and lm_head are the base's
    for name, w in base.state_dict().items():
        same = torch.equal(merged.state_dict()[name], w)
        assert same != any(t in name for t in ("q_proj.weight", "k_proj.weight", "v_proj.weight", "o_proj.weight",
                                               "gate_proj.weight", "up_proj.weight", "down_proj.weight")), name


def test_lora_em_rl_resume_equals_an_uninterrupted_run_and_continues_its_trackers(tiny_model, mini_math, tmp_path,
                                                                                  monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("TRACKIO_DIR", str(tmp_path / "trackio"))  # read when trackio is first imported: below
    flags = ["--lora-rank", "4", "--lr", "5e-2", "--kl-coef", "0.1", "--save-every", "1", "--log-completions", "1"]
    full = rl(tiny_model, mini_math, tmp_path / "full", "--steps", "3", *flags)
    part = tmp_path / "part"
    tracked = [*flags, "--track", "wandb,trackio", "--project", "resume-test"]
    rl(tiny_model, mini_math, part, "--steps", "2", *tracked)
    resumed = rl(tiny_model, mini_math, part, "--steps", "3", *tracked)
    assert [m["step"] for m in resumed] == [1, 2, 3]
    for a, b in zip(full, resumed):
        for key in ("loss", "reward", "entropy", "kl", "grad_norm", "response_length", "clipped_ratio", "repeat_4gram"):
            assert a[key] == b[key], (a["step"], key)
    assert full[-1]["kl"] > 0  # the reference (the base, adapters off) and the policy have parted
    from safetensors.torch import load_file
    a_full, a_part = (load_file(d / "adapter" / "adapter_model.safetensors") for d in (tmp_path / "full", part))
    assert a_full.keys() == a_part.keys() and all(".lora_" in k for k in a_full)
    for k in a_full:
        assert torch.equal(a_full[k], a_part[k]), k
    for (k, a), b in zip(load_file(tmp_path / "full" / "model.safetensors").items(),
                         load_file(part / "model.safetensors").values()):
        assert torch.equal(a, b), k
    # completions.jsonl appended, the reward of each logged rollout with it
    rows = metrics(part, "completions.jsonl")
    assert [r["step"] for r in rows] == [1, 2, 3] and all(isinstance(r["reward"], float) for r in rows)
    # wandb: the resumed run continues the same run id (a second offline folder of it, `wandb sync` joins them)
    runs = [wandb_history(d) for d in sorted(glob.glob(str(part / "wandb" / "offline-run-*")))]
    assert len({run.run_id for run, _ in runs}) == 1 and [[r["step"] for r in rows] for _, rows in runs] == [[1, 2], [3]]
    # trackio: one run of the project, steps 1-3 once each
    db = sqlite3.connect(tmp_path / "trackio" / "resume-test.db")
    got = db.execute("SELECT run_name, step, metrics FROM metrics ORDER BY step").fetchall()
    assert [(name, step) for name, step, _ in got] == [("part", s) for s in (1, 2, 3)]
    assert [json.loads(m)["entropy"] for _, _, m in got] == pytest.approx([m["entropy"] for m in resumed])


# ---------------------------------------------------------------------------------------------
# --chat-template-kwargs: every chat prompt function, and em_inf.py's command line
# ---------------------------------------------------------------------------------------------
def test_chat_template_kwargs_reach_every_chat_prompt(kwarg_model):
    tok = AutoTokenizer.from_pretrained(kwarg_model)
    records = [{"problem": "What is 2 + 2?"}, {"problem": "Add two numbers.", "tests": [{"input": "1 2", "output": "3"}]},
               {"problem": "What is 3 + 4?", "grading": "last_number"},
               {"problem": "x", "messages": [{"role": "user", "content": "Solve x."}]},
               {"problem": "Two sum.", "grading": "leetcode"}, {"problem": "Read n.", "grading": "livecodebench"}]
    plain = [evaluate.build_prompt(tok, r) for r in records]
    tok.chat_template_kwargs = {"enable_thinking": False}
    for before, r in zip(plain, records):
        after = evaluate.build_prompt(tok, r)
        assert after == before + "NO-THINK\n", r  # the variable changed the template's output, nothing else
    tok.chat_template_kwargs = {"enable_thinking": True}
    assert [evaluate.build_prompt(tok, r) for r in records] == plain


def test_em_inf_takes_chat_template_kwargs_and_rejects_bad_json_in_one_line(kwarg_model, mini_math, tmp_path, capsys):
    def run(out, *extra):
        em_inf.main(["--model", kwarg_model, "--dataset", mini_math, "--limit", "2", "--max-new-tokens", "2", "--mode",
                     "greedy", "--out", str(tmp_path / out), *extra])
        return em_inf.read_results(str(tmp_path / out))

    config, rows = run("kwargs.jsonl", "--chat-template-kwargs", '{"enable_thinking": false}')
    _, plain = run("plain.jsonl")
    extra = len(AutoTokenizer.from_pretrained(kwarg_model)("NO-THINK\n", add_special_tokens=False).input_ids)
    assert {i: r["prompt_tokens"] for i, r in rows.items()} == {i: r["prompt_tokens"] + extra for i, r in plain.items()}
    assert config["chat_template_kwargs"] == {"enable_thinking": False}
    capsys.readouterr()
    for bad, message in [("{'enable_thinking': False}", "is not valid JSON"), ('"yes"', "must be a JSON object")]:
        with pytest.raises(SystemExit) as e:
            run("bad.jsonl", "--chat-template-kwargs", bad)
        err = capsys.readouterr().err.strip().splitlines()
        assert e.value.code == 2 and len(err) == 1 and err[0].startswith("error: --chat-template-kwargs") and message in err[0]


# ---------------------------------------------------------------------------------------------
# LoRA under torchrun (FSDP2, gloo): 2 ranks == 1 process, and the merged folder rank 0 saves
# ---------------------------------------------------------------------------------------------
def test_lora_fsdp_two_processes_match_one_process(tiny_model, tmp_path):
    proc = subprocess.run(TORCHRUN + [os.path.abspath(__file__), tiny_model, str(tmp_path / "two")], env=ENV,
                          capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    two = torch.load(tmp_path / "two" / "result.pt", weights_only=True)
    one = lora_worker(tiny_model, str(tmp_path / "one"))
    for a, b in zip(one["stats"], two["stats"]):
        for key in ("loss", "entropy", "kl", "grad_norm"):
            assert a[key] == pytest.approx(b[key], rel=1e-5, abs=1e-7), key
    assert two["stats"][1]["kl"] > 0
    # the gathered decoder is the trained policy, adapters on: the one process's logits, not the base's
    torch.testing.assert_close(two["decode_logits"], one["decode_logits"], atol=1e-4, rtol=1e-4)
    with torch.no_grad():
        base = AutoModelForCausalLM.from_pretrained(tiny_model)(input_ids=torch.tensor([[5, 17, 33, 2, 90]])).logits
    assert (two["decode_logits"] - base).abs().max() > 1e-3
    from safetensors.torch import load_file
    for name in ("model.safetensors", os.path.join("adapter", "adapter_model.safetensors")):
        a, b = load_file(tmp_path / "one" / name), load_file(tmp_path / "two" / name)
        assert a.keys() == b.keys(), name
        # B = 0 at step 1, so the second step is Adam's first on A: m / sqrt(v) = g / |g| for every entry, and an
        # entry with a near-zero gradient moves by float32 summation-order noise (measured: up to 1.2e-4, a handful
        # of entries); a wrong gradient would move entries by ~lr = 1e-2
        for k in a:
            torch.testing.assert_close(a[k], b[k], atol=3e-4, rtol=1e-4, msg=k)
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "two")
    ids = torch.tensor([[5, 17, 33, 2, 90]])
    with torch.no_grad():
        torch.testing.assert_close(merged(input_ids=ids).logits,
                                   AutoModelForCausalLM.from_pretrained(tmp_path / "one")(input_ids=ids).logits,
                                   atol=1e-4, rtol=1e-4)


def lora_worker(model_dir, out):
    """Two AdamW steps of LoRA EM-FT with the frozen base as KL reference on SEQS (each rank its half under
    torchrun, micro-batches of 1 with gradient checkpointing), then save_checkpoint into out."""

    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    args = em_ft.parse_args(["--model", model_dir, "--lora-rank", "4", "--kl-coef", "0.5", "--grad-clip", "0.02",
                             "--lr", "1e-2", "--dtype", "float32", "--device", "cpu", "--out", out,
                             *(["--gradient-checkpointing"] if world > 1 else [])])
    rank, world, device, dtype = em_inf.setup(args)  # under torchrun: the gloo process group
    os.makedirs(out, exist_ok=True)
    model, tok, ref, optimizer = em_ft.load_training(args, None, rank, world, device, dtype)
    share = len(SEQS) // world
    mine = SEQS[rank * share:(rank + 1) * share]
    batches = [collate([s], tok.pad_token_id) for s in mine] if world > 1 else [collate(mine, tok.pad_token_id)]
    stats = [em_ft.train_step(model, ref, optimizer, batches, args, world, device, dtype) for _ in range(2)]
    em_ft.save_checkpoint(model, optimizer, tok, 2, args, device, rank, world)
    # what the rollouts decode with: under FSDP2 a plain peft module tree on the gathered tensors
    with em_ft.gathered(model) as decoder, torch.no_grad():
        logits = decoder(input_ids=torch.tensor([[5, 17, 33, 2, 90]])).logits
    result = {"stats": stats, "decode_logits": logits}
    if world > 1:
        if rank == 0:
            torch.save(result, os.path.join(out, "result.pt"))
        em_ft.leave_torchrun(0)
    return result


if __name__ == "__main__":
    sys.path.insert(0, HERE)
    lora_worker(*sys.argv[1:3])
