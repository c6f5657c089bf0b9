"""Tests for em_inf.py: the EM-INF update and adaptive temperature against independent float64 autograd
references, the sampling filters against transformers' own, the logits processor inside model.generate,
every --mode end to end on the tiny model, resume, torchrun data parallel, and bad input."""
import json
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from transformers import (AutoModelForCausalLM, AutoTokenizer, LogitsProcessorList, RepetitionPenaltyLogitsProcessor,
                          TopKLogitsWarper, TopPLogitsWarper)

import em_inf
import entropy

HERE = os.path.dirname(os.path.abspath(__file__))
INF = float("inf")


# ---------------------------------------------------------------------------------------------------------
# References: the official algorithm, one row at a time, with autograd and torch.optim.Adam
# ---------------------------------------------------------------------------------------------------------
def reference_minimize(row, delta, lr, steps, kl_weight):
    """Official EM-INF on one row in float64: fresh torch.optim.Adam, stop once H < delta.

    Masked (-inf) tokens are simply left out of the optimized vector: they have p = 0 in softmax.
    Returns (logits float64 [V], Adam steps taken, the entropies seen at each stopping check).
    """
    finite = torch.isfinite(row)
    z = torch.nn.Parameter(row[finite].double().clone())
    log_p0 = torch.log_softmax(z.detach(), -1)
    opt = torch.optim.Adam([z], lr=lr)
    taken, checks = 0, []
    for _ in range(steps):
        opt.zero_grad()
        log_p = torch.log_softmax(z, -1)
        h = -(log_p.exp() * log_p).sum()
        checks.append(h.item())
        if h < delta:
            break
        kl = (log_p0.exp() * (log_p0 - log_p)).sum()  # KL(p0 || p)
        (h + kl_weight * kl).backward()
        opt.step()
        taken += 1
    out = torch.full(row.shape, -INF, dtype=torch.float64)
    out[finite] = z.detach()
    return out, taken, checks


def official_minimize(row, delta, lr, steps, kl_weight):
    """The official code's loop verbatim in spirit: float32, log(p + 1e-12), F.kl_div batchmean at batch 1."""
    param = torch.nn.Parameter(row[None].float().clone())
    p0 = F.softmax(param.detach(), dim=-1)
    opt = torch.optim.Adam([param], lr=lr)
    for _ in range(steps):
        opt.zero_grad()
        probs = F.softmax(param, dim=-1)
        ent = -torch.sum(probs * torch.log(probs + 1e-12))
        if ent < delta:
            break
        loss = kl_weight * F.kl_div(probs.log(), p0, reduction="batchmean") + ent
        loss.backward()
        opt.step()
    return param.detach()[0]


def make_rows():
    """[10, 500] logits whose rows stop after 0..5 Adam steps at delta 0.3, two with -inf masks."""
    g = torch.Generator().manual_seed(0)
    base = torch.randn(500, generator=g) * 0.5
    rows = []
    for gap in [8.0, 9.2, 9.45, 9.65, 9.85, 10.0, 6.0, 9.0]:
        z = base.clone()
        z[7] = gap
        rows.append(z)
    masked = torch.randn(500, generator=g) * 2
    masked[torch.randperm(500, generator=g)[:300]] = -INF  # e.g. top-k masked
    rows.append(masked)
    topk = torch.full((500,), -INF)
    topk[:20] = torch.randn(20, generator=g)
    rows.append(topk)
    return torch.stack(rows)


# ---------------------------------------------------------------------------------------------------------
# minimize_entropy
# ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kl_weight,skip,rows", [(0.0, True, None), (0.05, True, None), (1.0, True, None),
                                                 (0.05, False, None), (0.05, True, [1, 2, 3, 4, 5, 8, 9])])
def test_minimize_entropy_matches_per_row_adam(kl_weight, skip, rows, monkeypatch):
    # skip=False: the GPU path, where all steps run and stopped rows are frozen instead of left out;
    # rows: only rows that all take a step (the CPU path then updates the whole batch, no row selection)
    monkeypatch.setattr(em_inf, "SKIP_WHEN_DONE", ("cpu",) if skip else ())
    logits = make_rows() if rows is None else make_rows()[rows]
    delta, lr, steps = 0.3, 0.1, 5
    before = logits.clone()
    z, taken, h0 = em_inf.minimize_entropy(logits, delta, lr, steps, kl_weight, return_stats=True)
    assert z.dtype == torch.float32 and z.shape == logits.shape and torch.equal(logits, before)  # not in place
    refs = [reference_minimize(row, delta, lr, steps, kl_weight) for row in logits]
    torch.testing.assert_close(h0.double(), torch.tensor([checks[0] for _, _, checks in refs], dtype=torch.float64), atol=1e-5, rtol=1e-5)
    # the stopping decisions are not borderline, so float32 vs float64 cannot flip them
    assert min(abs(h - delta) for _, _, checks in refs for h in checks) > 1e-3
    assert taken.tolist() == [n for _, n, _ in refs]
    if kl_weight == 0.05 and rows is None:  # the rows really do stop at different steps (0 through 5)
        assert set(taken.tolist()) == {0, 1, 2, 3, 4, 5}
    ref = torch.stack([r for r, _, _ in refs])
    masked = torch.isinf(logits)
    assert torch.equal(torch.isneginf(z), masked) and not torch.isnan(z).any()
    torch.testing.assert_close(z[~masked].double(), ref[~masked], atol=2e-5, rtol=1e-6)
    # rows below delta from the start come back unchanged
    assert torch.equal(z[taken == 0], logits[taken == 0])


@pytest.mark.parametrize("kl_weight", [0.0, 0.05, 1.0])
def test_readable_reference_update_equals_the_fast_one(kl_weight):
    # em_inf.minimize_entropy_reference (the official loop written plainly: autograd, torch.optim.Adam) against
    # the float64 reference above, then the fast closed-form minimize_entropy against it, on the finite rows
    logits = make_rows()[:8]
    ref = em_inf.minimize_entropy_reference(logits, 0.3, 0.1, 5, kl_weight)
    independent = torch.stack([reference_minimize(row, 0.3, 0.1, 5, kl_weight)[0] for row in logits])
    torch.testing.assert_close(ref.double(), independent, atol=2e-5, rtol=1e-6)
    torch.testing.assert_close(em_inf.minimize_entropy(logits, 0.3, 0.1, 5, kl_weight), ref, atol=2e-5, rtol=1e-6)


def test_minimize_entropy_results_survive_later_calls():
    # the update keeps its temporaries from call to call (em_inf._scratch); what it returns is never one of them
    a, b = make_rows(), make_rows()[:4] * 2
    za = em_inf.minimize_entropy(a, 0.3, 0.1, 5, 0.05)
    kept = za.clone()
    em_inf.minimize_entropy(b, 0.3, 0.1, 5, 0.05)
    em_inf.make_pick_next(em_inf.parse_args(["--mode", "em_inf"]))(b, torch.arange(4))
    assert torch.equal(za, kept)
    assert torch.equal(em_inf.minimize_entropy(a, 0.3, 0.1, 5, 0.05), kept)  # reused buffers: same result


def test_minimize_entropy_lowers_entropy_and_accepts_bf16():
    logits = (torch.randn(4, 300) * 2).bfloat16()
    z = em_inf.minimize_entropy(logits, 0.1, 0.1, 5, 0.0)
    assert z.dtype == torch.float32
    assert (entropy.token_entropy(z) < entropy.token_entropy(logits.float()) - 0.1).all()
    ref = torch.stack([reference_minimize(r.float(), 0.1, 0.1, 5, 0.0)[0] for r in logits])
    torch.testing.assert_close(z.double(), ref, atol=2e-5, rtol=1e-6)


def test_minimize_entropy_close_to_official_formula():
    """The official float32 loop with log(p + 1e-12) gives the same distribution (our difference no. 2)."""
    logits = make_rows()[:8] * 1.5
    z = em_inf.minimize_entropy(logits, 0.3, 0.1, 5, 0.05)
    official = torch.stack([official_minimize(row, 0.3, 0.1, 5, 0.05) for row in logits])
    torch.testing.assert_close(torch.softmax(z, -1), torch.softmax(official, -1), atol=1e-6, rtol=1e-4)


def test_minimize_entropy_no_scalar_recompiles():
    """New lr / kl_weight / step values must not change the compiled signature (they travel as a tensor)."""
    c1 = em_inf._adam_constants(0.1, 3, 0.05, "cpu")
    c2 = em_inf._adam_constants(0.2, 5, 0.001, "cpu")
    assert c1.shape == (3, 3) and c2.shape == (5, 3) and c1.dtype == torch.float32
    assert em_inf._adam_constants(0.1, 3, 0.05, "cpu") is c1  # cached: nothing is copied per token
    torch.testing.assert_close(c2[:, 0], torch.tensor([0.2 / (1 - 0.9 ** t) for t in range(1, 6)]))


# ---------------------------------------------------------------------------------------------------------
# adaptive temperature (Algorithm 1)
# ---------------------------------------------------------------------------------------------------------
def reference_adaptive(row, delta, alpha, t_min=0.01, t_max=1.0, max_iter=100, tol=0.1):
    """Algorithm 1 on one row with Python floats and float64 entropies; returns (tau, target, H0)."""
    z = row.double()

    def h(t):
        lp = torch.log_softmax(z / t, -1)
        return -(lp.exp() * lp).nansum().item()

    h0 = h(1.0)
    target = max(delta, alpha * h0)
    tau = 1.0
    if h0 > delta:
        for _ in range(max_iter):
            mid = (t_min + t_max) / 2
            hm = h(mid)
            tau = mid
            if abs(hm - target) < tol:
                break
            if hm < target:
                t_min = mid
            else:
                t_max = mid
    return tau, target, h0


@pytest.mark.parametrize("alpha", [0.5, 0.85])
def test_adaptive_temperature_matches_algorithm_1(alpha):
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(12, 400, generator=g) * torch.linspace(0.5, 12, 12)[:, None]
    logits[3, 100:] = -INF
    logits[11] = 0.0
    logits[11, 0] = 9.6  # H0 = 0.28: just below delta, left alone although a bisection could hit H*
    delta = 0.3
    out = em_inf.adaptive_temperature(logits, delta, alpha)
    refs = [reference_adaptive(row, delta, alpha) for row in logits]
    taus = torch.tensor([t for t, _, _ in refs], dtype=torch.float64)
    assert (taus == 1.0).any() and (taus < 1.0).any()  # both kinds of rows are present
    finite = torch.isfinite(logits)
    torch.testing.assert_close(out[finite].double(), (logits.double() / taus[:, None])[finite], rtol=1e-5, atol=1e-5)
    # rows already below delta are untouched; the others land within tol of H* = max(delta, alpha H0)
    h_out = entropy.token_entropy(out).double()
    for i, (tau, target, h0) in enumerate(refs):
        if h0 <= delta:
            assert torch.equal(out[i], logits[i])
        elif tau > 0.0101:
            assert abs(h_out[i].item() - target) < 0.1


# ---------------------------------------------------------------------------------------------------------
# the leaked sampling filters, against transformers' own implementations
# ---------------------------------------------------------------------------------------------------------
def test_filters_match_transformers():
    g = torch.Generator().manual_seed(2)
    z = torch.randn(6, 300, generator=g) * 3
    ids = torch.randint(0, 300, (6, 40), generator=g)
    seen = torch.zeros(6, 300, dtype=torch.bool).scatter(1, ids, True)
    torch.testing.assert_close(em_inf.repetition_penalty(z, seen, 1.05), RepetitionPenaltyLogitsProcessor(1.05)(ids, z.clone()))
    torch.testing.assert_close(em_inf.top_k_top_p(z, 20, 1.0), TopKLogitsWarper(20)(ids, z.clone()))
    torch.testing.assert_close(em_inf.top_k_top_p(z, 0, 0.8), TopPLogitsWarper(0.8)(ids, z.clone()))
    both = TopPLogitsWarper(0.8)(ids, TopKLogitsWarper(20)(ids, z.clone()))
    torch.testing.assert_close(em_inf.top_k_top_p(z, 20, 0.8), both)
    assert torch.equal(em_inf.top_k_top_p(z, 0, 1.0), z)


# ---------------------------------------------------------------------------------------------------------
# the transformers LogitsProcessor
# ---------------------------------------------------------------------------------------------------------
def test_logits_processor_equals_reference_update():
    logits = make_rows()
    proc = em_inf.EMInfLogitsProcessor(delta=0.3, lr=0.1, steps=5, kl_weight=0.05, temperature=0.1)
    out = proc(torch.zeros(len(logits), 3, dtype=torch.long), logits.clone())
    ref = torch.stack([reference_minimize(row, 0.3, 0.1, 5, 0.05)[0] for row in logits]) / 0.1
    finite = torch.isfinite(logits)
    torch.testing.assert_close(out[finite].double(), ref[finite], atol=2e-4, rtol=1e-6)
    with pytest.raises(ValueError):
        em_inf.EMInfLogitsProcessor(delta=0.0)


def args_for(mode, **kw):
    return em_inf.parse_args(["--mode", mode] + [f"--{k.replace('_', '-')}={v}" for k, v in kw.items()])


def test_draw_samples_the_distribution():
    g = torch.Generator().manual_seed(3)
    probs = torch.softmax(torch.randn(2, 6, generator=g), -1)
    probs[1, 2] = 0.0  # a masked token
    torch.manual_seed(0)
    draws = torch.stack([em_inf.draw(probs * 3.0) for _ in range(20000)])  # unnormalized input is fine
    for row in range(2):
        freq = torch.bincount(draws[:, row], minlength=6).double() / len(draws)
        expected = probs[row].double() / probs[row].sum()
        assert (freq - expected).abs().max() < 0.015  # ~4 standard deviations at 20000 draws
    assert (draws[:, 1] != 2).all()


def test_generate_with_processor_equals_our_decode_loop(tiny_model, monkeypatch):
    """model.generate + EMInfLogitsProcessor and em_inf.sample + the em_inf picker draw the same tokens
    (with our inverse-CDF draw() swapped for generate's torch.multinomial, so both use the same random numbers)."""
    monkeypatch.setattr(em_inf, "draw", lambda probs: torch.multinomial(probs, num_samples=1).squeeze(1))
    tok = AutoTokenizer.from_pretrained(tiny_model, padding_side="left")
    model = AutoModelForCausalLM.from_pretrained(tiny_model).eval()
    prompts = ["What is 2 + 3?", "Tom has 3 apples and buys 5 more. How many apples?"]
    args = args_for("em_inf", temperature=1.0, steps=5, delta=0.5)  # temperature 1: a real choice each step
    torch.manual_seed(5)
    # no stop tokens: both rows decode 12 tokens side by side, each step drawing for both rows at once
    out = dict((i, (r, st)) for i, r, st in em_inf.sample(model, tok, prompts, 12, em_inf.make_pick_next(args), [], 2))
    resp = torch.stack([out[i][0] for i in range(2)])
    stats = {k: torch.stack([out[i][1][k] for i in range(2)]) for k in out[0][1]}
    enc = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    proc = em_inf.EMInfLogitsProcessor(delta=0.5, lr=args.lr, steps=5, kl_weight=args.kl_weight, temperature=1.0)
    torch.manual_seed(5)
    gen = model.generate(**enc, do_sample=True, temperature=1.0, top_k=0, top_p=1.0, max_new_tokens=12,
                         min_new_tokens=12, logits_processor=LogitsProcessorList([proc]), pad_token_id=tok.pad_token_id)
    assert torch.equal(gen[:, enc.input_ids.shape[1]:], resp)
    assert stats["em_steps"].sum() > 0  # the update really ran


def test_pick_next_applies_the_leaked_filters():
    """--repetition-penalty (with the seen set growing), --top-k and --prob-floor change the choice."""
    z = torch.tensor([[5.0, 4.0, 1.0, -1.0]])
    seen = torch.tensor([[True, False, False, False]])
    pick = em_inf.make_pick_next(args_for("greedy", repetition_penalty=2.0), seen)
    row0 = torch.tensor([0])  # the row's index into seen
    assert pick(z, row0)[0].item() == 1  # 5 / 2 < 4
    assert pick(z, row0)[0].item() == 0 and seen[0, 1]  # now 4 / 2 < 5 / 2
    torch.manual_seed(0)
    pick = em_inf.make_pick_next(args_for("sample", temperature=100.0, top_k=1))
    assert all(pick(z, row0)[0].item() == 0 for i in range(50))
    z = torch.tensor([[10.0] + [0.0] * 9])
    for floor, lo, hi in [(0.0, 0, 0), (0.2, 60, 200)]:
        pick = em_inf.make_pick_next(args_for("sample", prob_floor=floor))
        others = sum(pick(z, row0)[0].item() != 0 for i in range(200))
        assert lo <= others <= hi


# ---------------------------------------------------------------------------------------------------------
# the decode loop: finished rows leave the batch, new prompts take their rows
# ---------------------------------------------------------------------------------------------------------
def decode_all(model, tok, prompts, n, pick, stop_ids, batch_size, **kw):
    """{prompt index: (tokens, stats)} from em_inf.sample, whatever the order rows finish in."""
    return {i: (r, st) for i, r, st in em_inf.sample(model, tok, prompts, n, pick, stop_ids, batch_size, **kw)}


@pytest.fixture(scope="module")
def tiny_prompts(tiny_model, mini_math):
    import evaluate
    tok = AutoTokenizer.from_pretrained(tiny_model, padding_side="left")
    model = AutoModelForCausalLM.from_pretrained(tiny_model).eval()
    prompts = [evaluate.build_prompt(tok, r) for r in evaluate.load_problems(mini_math, limit=5)]
    return model, tok, prompts


# static batches, drop-only (the training rollout), continuous with a refill per finished row or per two
BATCHINGS = [dict(batch_size=2, drop_at=2, refill=False), dict(batch_size=5, drop_at=1, refill=False),
             dict(batch_size=2, drop_at=1, refill=True), dict(batch_size=3, drop_at=2, refill=True)]


@pytest.fixture(scope="module")
def plain_greedy(tiny_prompts):
    """12 greedy tokens per prompt from the plainest loop: one prompt alone (no batch, no padding), no KV
    cache (the whole sequence goes through the model for every token)."""
    model, tok, prompts = tiny_prompts
    refs = []
    with torch.no_grad():
        for p in prompts:
            ids = tok([p], return_tensors="pt", add_special_tokens=False).input_ids
            for _ in range(12):
                ids = torch.cat([ids, model(input_ids=ids).logits[:, -1].argmax(-1, keepdim=True)], 1)
            refs.append(ids[0, -12:])
    return refs


@pytest.mark.parametrize("batching", BATCHINGS)
def test_greedy_tokens_do_not_depend_on_the_batching(batching, tiny_prompts, plain_greedy):
    """Each prompt's greedy response equals the plain loop's, whichever rows share its batch."""
    model, tok, prompts = tiny_prompts
    refs = plain_greedy
    # stop tokens chosen so that the responses end at different steps (or run to the length cap)
    stop_ids = sorted({refs[0][3].item(), refs[1][4].item(), refs[3][2].item()})
    first_stop = [next((t + 1 for t in range(12) if r[t].item() in stop_ids), 12) for r in refs]
    assert len(set(first_stop)) >= 3, first_stop
    pick = em_inf.make_pick_next(args_for("greedy"))
    out = decode_all(model, tok, prompts, 12, pick, stop_ids, **batching)
    for i, ref in enumerate(refs):
        assert torch.equal(out[i][0], ref[:first_stop[i]]), i


def test_em_inf_statistics_do_not_depend_on_the_batching(tiny_prompts, monkeypatch):
    """EM-INF entropies and Adam steps per token: a continuous batch of 2 rows vs each prompt alone."""
    monkeypatch.setattr(em_inf, "draw", lambda probs: probs.argmax(-1))  # the same tokens whatever the batch
    model, tok, prompts = tiny_prompts
    pick = em_inf.make_pick_next(args_for("em_inf", delta=5.9, steps=4))  # tiny model: H ~ log 400 = 6.0
    alone = {i: decode_all(model, tok, [p], 10, pick, [], 1)[0] for i, p in enumerate(prompts)}
    stop_ids = [alone[1][0][4].item()]  # rows end at different steps
    batched = decode_all(model, tok, prompts, 10, pick, stop_ids, 2, drop_at=1, refill=True)
    steps_seen = set()
    for i, (tokens, stats) in batched.items():
        n = len(tokens)
        assert torch.equal(tokens, alone[i][0][:n])
        for k in ("entropy", "sampled_entropy", "em_steps"):
            torch.testing.assert_close(stats[k], alone[i][1][k][:n], atol=1e-4, rtol=1e-4)
        steps_seen |= set(stats["em_steps"].tolist())
    assert len({len(t) for t, _ in batched.values()}) >= 2 and len(steps_seen) >= 2  # not a trivial case


@pytest.mark.parametrize("batch_size,drop_at,refill,row_steps", [
    (2, 2, False, 3 * 2 + 5 * 2),  # static: batch (A, B) runs 3 steps, batch (C, D) 5 steps, 2 rows each
    (4, 2, False, 4 + 4 + 2 + 2 + 2),  # drop-only at 2 finished: A and C leave after step 2, B stays to the end
    (2, 1, True, 2 + 2 + 2 + 5),  # continuous: C takes A's row at step 2, D runs alone for 5 steps
])
def test_occupancy_on_a_constructed_case(batch_size, drop_at, refill, row_steps, tiny_prompts):
    """Responses of 1, 3, 2 and 5 tokens (11 in all): the row-steps counted by hand for each batching."""
    model, tok, prompts = tiny_prompts
    stop, lengths, calls = 7, [1, 3, 2, 5], {}

    def pick(z, rows):  # row i emits token 5 until its lengths[i]-th token, which is the stop token
        out = []
        for i in rows.tolist():
            calls[i] = calls.get(i, 0) + 1
            out.append(stop if calls[i] == lengths[i] else 5)
        return torch.tensor(out), {}

    work = {}
    out = decode_all(model, tok, prompts[:4], 8, pick, [stop], batch_size, drop_at=drop_at, refill=refill, work=work)
    assert [len(out[i][0]) for i in range(4)] == lengths
    assert work["row_steps"] == row_steps  # occupancy = 11 / row_steps: 0.69, 0.79, 1.0


def test_majority_vote():
    vote = em_inf.majority_vote
    assert vote(["\\boxed{3}", "so \\boxed{1/2}", "\\boxed{0.5}", "\\boxed{3}", "\\boxed{\\frac{1}{2}}"]) == 1
    assert vote(["\\boxed{4}", "\\boxed{5}"]) == 0  # tie: the earliest
    assert vote(["no answer", "\\boxed{7}"]) == 1  # an answer beats no answer
    assert vote(["a", "b"]) == 0


# ---------------------------------------------------------------------------------------------------------
# end to end on the tiny model, in process (each --mode once), then resume, torchrun and bad input
# ---------------------------------------------------------------------------------------------------------
def run_main(capsys, argv):
    em_inf.main(argv)
    out = capsys.readouterr().out.strip().splitlines()
    return json.loads(out[-1]), out


def read_rows(path):
    lines = [json.loads(line) for line in open(path)]
    assert "config" in lines[0]
    return lines[1:]


@pytest.mark.parametrize("mode", em_inf.MODES)
def test_every_mode_end_to_end(mode, tiny_model, mini_math, tmp_path, capsys):
    out = tmp_path / "r.jsonl"
    argv = ["--model", tiny_model, "--dataset", mini_math, "--limit", "3", "--max-new-tokens", "6",
            "--batch-size", "2", "--mode", mode, "--n", "3", "--out", str(out)]
    if mode == "sample":  # the official EM-INF sampler's settings, through the whole pipeline
        argv += ["--top-k", "20", "--top-p", "0.8", "--repetition-penalty", "1.05", "--prob-floor", "1e-9"]
    summary, lines = run_main(capsys, argv)
    rows = read_rows(out)
    # rows are written as problems finish (continuous batching): the order can change
    rows = sorted(rows, key=lambda r: r["id"])
    assert [r["id"] for r in rows] == ["mini-0", "mini-1", "mini-2"]
    assert 0 < summary["occupancy"] <= 1
    for r in rows:
        assert {"id", "problem", "gold", "response", "correct", "tokens", "entropy", "mode"} <= set(r)
        assert r["mode"] == mode and isinstance(r["correct"], bool) and 1 <= r["tokens"]
        assert ("em_steps" in r) == (mode == "em_inf") and ("sampled_entropy" in r) == (mode != "greedy")
        if mode == "self_consistency":
            assert len(r["responses"]) == 3 and len(r["corrects"]) == 3 and r["response"] in r["responses"]
            assert r["tokens"] <= 3 * 6
        elif mode == "iter_refine":  # --rounds 3 by default: every round kept, the row's verdict is the last one's
            assert len(r["rounds"]) == 3 and r["rounds"][-1] == {"response": r["response"], "correct": r["correct"]}
            assert r["tokens"] <= 3 * 6 and r["prompt_tokens"] > 3 * 10
        else:
            assert r["tokens"] <= 6
    assert summary["mode"] == mode and summary["problems"] == 3 and summary["dataset"] == mini_math
    assert summary["generated_tokens"] == sum(r["tokens"] for r in rows) and summary["tokens_per_second"] > 0
    assert summary["accuracy"] == sum(r["correct"] for r in rows) / 3
    k = 3 if mode == "self_consistency" else 1
    params = sum(p.numel() for p in AutoModelForCausalLM.from_pretrained(tiny_model).parameters())
    assert summary["flops"] > 2 * params * (summary["generated_tokens"] + k * 3 * 10)  # prompts > 10 tokens each
    assert any(line.startswith("| " + mode) for line in lines)  # the table comes before the JSON line
    if mode == "greedy":
        # our greedy loop gives what model.generate gives
        tok = AutoTokenizer.from_pretrained(tiny_model, padding_side="left")
        model = AutoModelForCausalLM.from_pretrained(tiny_model)
        import evaluate
        rec = evaluate.load_problems(mini_math, limit=1)[0]
        enc = tok([evaluate.build_prompt(tok, rec)], return_tensors="pt", add_special_tokens=False)
        gen = model.generate(**enc, do_sample=False, max_new_tokens=6, pad_token_id=tok.pad_token_id)
        assert tok.decode(gen[0, enc.input_ids.shape[1]:], skip_special_tokens=True) == rows[0]["response"]


def test_resume_skips_finished_problems(tiny_model, mini_math, tmp_path, capsys):
    out = tmp_path / "r.jsonl"
    argv = ["--model", tiny_model, "--dataset", mini_math, "--max-new-tokens", "4", "--out", str(out)]
    run_main(capsys, argv + ["--limit", "2"])
    first = read_rows(out)
    with open(out, "a") as f:
        f.write('{"id": "mini-2", "respo')  # a line cut off by a crash
    summary, _ = run_main(capsys, argv + ["--limit", "4"])
    rows = []
    for line in open(out):
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            assert line.startswith('{"id": "mini-2", "respo')  # only the cut-off line is unreadable
    rows = rows[1:]
    ids = [r["id"] for r in rows]
    assert sorted(ids) == ["mini-0", "mini-1", "mini-2", "mini-3"] and len(ids) == len(set(ids))
    assert rows[:2] == first  # finished problems were not decoded again
    assert summary["problems"] == 4
    summary, stdout = run_main(capsys, argv + ["--limit", "4"])  # nothing left to do
    assert summary["problems"] == 4 and summary["tokens_per_second"] is None
    assert any("4 of 4 problems already done; nothing left to decode" in line for line in stdout)
    assert not any("None" in line for line in stdout[:-1])  # the table says "-" for what this run did not measure
    # a results file from other settings is refused instead of mixed, before any model is loaded
    model_at = argv.index("--model") + 1
    with pytest.raises(SystemExit) as e:
        em_inf.main(argv[:model_at] + ["no/such/model/folder"] + argv[model_at + 1:] + ["--limit", "4", "--delta", "0.5"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "other settings (" in err and "delta=0.3)" in err and "does not exist" not in err


def test_default_out_path():
    args = em_inf.parse_args(["--model", "local_models/smollm2/", "--dataset", "data/mini_math.jsonl", "--mode", "greedy"])
    assert em_inf.default_out(args) == os.path.join("results", "smollm2_mini_math_greedy.jsonl")
    assert em_inf.default_out(em_inf.parse_args([])) == os.path.join("results", "Qwen2.5-Math-7B_math500_em_inf.jsonl")


def test_torchrun_two_processes_shard_and_merge(tiny_model, mini_math, tmp_path, capsys):
    common = ["--model", tiny_model, "--dataset", mini_math, "--limit", "5", "--max-new-tokens", "5", "--mode", "greedy"]
    out2 = tmp_path / "two.jsonl"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    res = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          os.path.join(HERE, "em_inf.py"), *common, "--batch-size", "2", "--out", str(out2)],
                         capture_output=True, text=True, env=env, cwd=HERE, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "world_size=2" in res.stdout
    summary = json.loads(res.stdout.strip().splitlines()[-1])
    rows = read_rows(out2)
    assert sorted(r["id"] for r in rows) == [f"mini-{i}" for i in range(5)] and summary["problems"] == 5
    assert not [f for f in os.listdir(tmp_path) if ".part" in f]  # per-rank files merged and removed
    # greedy decoding is deterministic: the sharded run answers exactly like one process
    out1 = tmp_path / "one.jsonl"
    run_main(capsys, common + ["--batch-size", "5", "--out", str(out1)])
    one = {r["id"]: r["response"] for r in read_rows(out1)}
    assert {r["id"]: r["response"] for r in rows} == one


def test_bad_input_one_line_errors(tiny_model, mini_math, tmp_path):
    no_problem = tmp_path / "bad.jsonl"
    no_problem.write_text('{"text": "hi", "answer": "1"}\n')
    ok = ["--model", tiny_model, "--dataset", mini_math, "--limit", "1", "--max-new-tokens", "2"]
    cases = {"--delta": ok + ["--delta", "0"], "--steps": ok + ["--steps", "0"], "--batch-size": ok + ["--batch-size", "0"],
             "does not exist": ["--model", str(tmp_path / "no_model"), "--dataset", mini_math],
             # a hub id is not mistaken for a missing folder: it goes to the hub (offline here) and fails there
             "cannot load model 'no-org/no-such-model'": ["--model", "no-org/no-such-model", "--dataset", mini_math],
             "no_such.jsonl": ["--model", tiny_model, "--dataset", str(tmp_path / "no_such.jsonl")],
             "problem": ["--model", tiny_model, "--dataset", str(no_problem)]}
    # all at once: each costs a Python start-up and a torch import
    procs = {key: subprocess.Popen([sys.executable, os.path.join(HERE, "em_inf.py"), *argv, "--out", str(tmp_path / "o.jsonl")],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=HERE)
             for key, argv in cases.items()}
    for key, proc in procs.items():
        _, err = proc.communicate(timeout=120)
        assert proc.returncode != 0, key
        assert "Traceback" not in err, err
        lines = [line for line in err.strip().splitlines() if line.startswith("error:")]
        assert len(lines) == 1 and key in lines[0], err


# ---------------------------------------------------------------------------------------------------------
# iter_refine: round r's prompt = round r-1's prompt + its response + "\n\n" + the original prompt
# ---------------------------------------------------------------------------------------------------------
def test_iter_refine_prompts_hold_the_previous_rounds(tiny_model):
    import evaluate
    tok = AutoTokenizer.from_pretrained(tiny_model)
    args = em_inf.parse_args(["--mode", "iter_refine", "--rounds", "3"])
    math = {"id": "m", "problem": "What is 2 + 3?", "answer": "5"}
    p0 = evaluate.build_prompt(tok, math)
    stages = em_inf.problem_stages(math, tok, args)
    assert stages.send(None) == [p0]
    assert stages.send([("first \\boxed{4}", 3, {})]) == [p0 + "first \\boxed{4}" + "\n\n" + p0]
    assert stages.send([("second \\boxed{5}", 4, {})]) == [p0 + "first \\boxed{4}\n\n" + p0 + "second \\boxed{5}\n\n" + p0]
    with pytest.raises(StopIteration) as end:
        stages.send([("third \\boxed{5}", 5, {})])
    row = end.value.value
    assert [r["correct"] for r in row["rounds"]] == [False, True, True] and row["correct"] and row["tokens"] == 12
    assert row["response"] == "third \\boxed{5}"
    # code: the extracted program in a fence and the EOS token, as the official LeetCode path
    code = {"id": "c", "problem": "Add.", "answer": "", "tests": "assert add(1, 2) == 3"}
    p0 = evaluate.build_prompt(tok, code)
    stages = em_inf.problem_stages(code, tok, args)
    stages.send(None)
    reply = "Here:\n```python\ndef add(a, b):\n    return a + b\n```\nDone."
    assert stages.send([(reply, 9, {})]) == [p0 + "```python\ndef add(a, b):\n    return a + b\n\n```<|im_end|>\n\n" + p0]


def test_iter_refine_resumes_from_its_finished_rounds(tiny_model, mini_math, tmp_path, capsys, monkeypatch):
    out = tmp_path / "r.jsonl"
    argv = ["--model", tiny_model, "--dataset", mini_math, "--limit", "3", "--max-new-tokens", "5", "--batch-size", "2",
            "--mode", "iter_refine", "--temperature", "1.0", "--out", str(out)]
    real = em_inf.refined_row

    def crash(*a, **k):  # the first problem to finish its third round: interrupted before its row is written
        raise KeyboardInterrupt

    monkeypatch.setattr(em_inf, "refined_row", crash)
    with pytest.raises(KeyboardInterrupt):
        em_inf.main(argv)
    progress = [json.loads(line) for line in open(str(out) + ".progress")]
    assert read_rows(out) == [] and {p["stage"] for p in progress} >= {0, 1}  # rounds 1 and 2 of some problems
    done = {(p["progress"], p["stage"]): p["samples"][0][0] for p in progress}
    monkeypatch.setattr(em_inf, "refined_row", real)
    capsys.readouterr()
    summary, lines = run_main(capsys, argv)
    rows = {r["id"]: r for r in read_rows(out)}
    assert sorted(rows) == ["mini-0", "mini-1", "mini-2"] and summary["problems"] == 3
    for (rid, stage), text in done.items():  # the finished rounds were kept, not decoded again
        assert rows[rid]["rounds"][stage]["response"] == text
    assert summary["generated_tokens"] > 0 and len(summary["round_accuracy"]) == 3
    assert not os.path.exists(str(out) + ".progress")  # every problem has its row: no progress left


def test_self_consistency_on_code_problems_is_one_line_before_the_model_loads(tmp_path):
    data = tmp_path / "code.jsonl"
    data.write_text(json.dumps({"problem": "Add two numbers.", "tests": "assert add(1, 2) == 3"}) + "\n")
    proc = subprocess.run([sys.executable, "em_inf.py", "--model", "no/such-model", "--dataset", str(data), "--mode",
                           "self_consistency"], capture_output=True, text=True, cwd=os.path.dirname(em_inf.__file__),
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 2 and "code problems have none" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
