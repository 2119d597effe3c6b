"""Depth pruning: CKA and block influence against closed forms, the merge rules, the sliding
window and the threshold bisection, the greedy baselines against brute force, and the
physically smaller checkpoint that reloads and generates with the KV cache."""
import copy
import json
import math

import pytest
import torch
from transformers import AutoModelForCausalLM

from prunekit.api import prune
from prunekit.cli import main
from prunekit.methods import LaCoConfig, PPLConfig, ShortGPTConfig, SLEBConfig, SLMConfig
from prunekit.methods.depth.base import DepthState, bisect_threshold
from prunekit.methods.depth.rebuild import merged_block
from prunekit.methods.depth.slm import collapse, slide
from prunekit.engine.stack import BlockStack
from prunekit.models.adapter import ModelAdapter, get_path
from prunekit.solvers.similarity import block_influence, cka_matrix, linear_cka, merge_tensors

from .conftest import VOCAB, generate_step_lengths, make_tiny_model


def deep_model(family="llama", layers=8, seed=0):
    return make_tiny_model(family, seed, layers)


def _hsic_bruteforce(x, y):
    n = x.shape[0]
    c = torch.eye(n, dtype=torch.float64) - 1.0 / n
    k, l = x.double() @ x.double().T, y.double() @ y.double().T
    return torch.trace(k @ c @ l @ c) / (n - 1) ** 2


@pytest.mark.parametrize("n,d", [(20, 6), (6, 20)])  # both the feature and the kernel form
def test_cka_equals_the_centered_hsic_definition(n, d):
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(n, d, generator=g), torch.randn(n, d + 3, generator=g) + 0.5 * torch.randn(n, 1, generator=g)
    expect = _hsic_bruteforce(x, y) / torch.sqrt(_hsic_bruteforce(x, x) * _hsic_bruteforce(y, y))
    assert linear_cka(x, y) == pytest.approx(float(expect), rel=1e-9)


def test_cka_is_one_for_identical_and_invariant_to_rotation_and_scaling():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(50, 8, generator=g, dtype=torch.float64)
    y = torch.randn(50, 8, generator=g, dtype=torch.float64)
    q, _ = torch.linalg.qr(torch.randn(8, 8, generator=g, dtype=torch.float64))
    assert linear_cka(x, x) == pytest.approx(1.0, abs=1e-12)
    base = linear_cka(x, y)
    assert base < 0.9
    assert linear_cka(x, y @ q) == pytest.approx(base, abs=1e-10)
    assert linear_cka(3.7 * x, y) == pytest.approx(base, abs=1e-10)
    m = cka_matrix([x, y, x @ q])
    assert torch.allclose(m, m.T) and torch.allclose(m.diagonal(), torch.ones(3, dtype=torch.float64))
    assert m[0, 2] == pytest.approx(1.0, abs=1e-10)


def test_block_influence_is_one_minus_mean_cosine():
    inp = torch.tensor([[[1.0, 0.0], [0.0, 2.0]]])
    out = torch.tensor([[[1.0, 1.0], [0.0, -3.0]]])   # cosines 1/sqrt(2) and -1
    assert block_influence(inp, out) == pytest.approx(1 - (1 / math.sqrt(2) - 1) / 2)


def test_merge_rules_on_toy_tensors():
    a, b, c = torch.tensor([1.0, 2.0]), torch.tensor([4.0, 0.0]), torch.tensor([-1.0, 5.0])
    assert torch.equal(merge_tensors([a, b, c], "rdsc"), a + (b - a) + (c - a))
    assert torch.equal(merge_tensors([a, b, c], "top"), c)
    assert torch.equal(merge_tensors([a], "rdsc"), a)


@pytest.mark.parametrize("family", ["llama", "opt"])
def test_merged_block_takes_projections_by_rule_and_norms_from_base(family):
    model = deep_model(family, 4)
    adapter = ModelAdapter(model)
    with torch.no_grad():
        for b in adapter.layers:
            for norm in adapter.spec.norms:
                get_path(b, norm).weight.normal_()
    blocks = list(adapter.layers)[1:4]
    for rule in ("rdsc", "top"):
        m = merged_block(adapter, blocks, rule)
        for name in adapter.linear_names():
            parts = [get_path(b, name) for b in blocks]
            want = parts[-1].weight if rule == "top" else parts[0].weight + sum(p.weight - parts[0].weight for p in parts[1:])
            assert torch.allclose(get_path(m, name).weight, want, atol=1e-6)
            if parts[0].bias is not None:
                wantb = parts[-1].bias if rule == "top" else parts[0].bias + sum(p.bias - parts[0].bias for p in parts[1:])
                assert torch.allclose(get_path(m, name).bias, wantb, atol=1e-6)
        for norm in adapter.spec.norms:
            assert torch.equal(get_path(m, norm).weight, get_path(blocks[0], norm).weight)


class _FakeState(DepthState):
    """A DepthState over dummy blocks, to test the loops' bookkeeping without a model."""
    def __init__(self, n):
        self.blocks, self.groups, self.log, self.rule = list(range(n)), [[i] for i in range(n)], [], "rdsc"

    def merge(self, lo, hi, **info):
        merged = [i for g in self.groups[lo:hi + 1] for i in g]
        self.blocks[lo:hi + 1] = [None]
        self.groups[lo:hi + 1] = [merged]
        self.log.append({"merged": merged, **info})


def test_slide_follows_the_reference_loop():
    # similarity passes iff the window's original span is within a "patch" {2..5} or {6..8}
    patches = [set(range(2, 6)), set(range(6, 9))]

    def sim(state, lo, hi):
        span = {i for g in state.groups[lo:hi + 1] for i in g}
        return 0.9 if any(span <= p for p in patches) else 0.1

    state = _FakeState(10)   # block 9 is protected; the first window is [7, 8]
    assert slide(state, 0.5, sim) == 2 + 3
    assert [e["merged"] for e in state.log] == [[6, 7, 8], [2, 3, 4, 5]]
    assert slide(_FakeState(10), 1.0, sim) == 0          # threshold above every similarity: no merge
    capped = _FakeState(10)
    assert slide(capped, 0.5, sim, cap=3) == 3            # stops at exactly the cap
    assert [e["merged"] for e in capped.log] == [[6, 7, 8], [4, 5]]


def test_slide_commits_a_window_that_reaches_block_zero():
    state = _FakeState(6)
    assert slide(state, 0.5, lambda s, lo, hi: 1.0) == 4
    assert state.groups == [[0, 1, 2, 3, 4], [5]]


def test_collapse_shrinks_its_last_window_to_hit_the_cap():
    state = _FakeState(12)
    assert collapse(state, 0.5, lambda s, lo, hi: 1.0, size=4, interval=2, cap=5) == 5
    # [7..10] first (3 go); then 2 jumps down a window of 3 current blocks, the merged one included
    assert [e["merged"] for e in state.log] == [[7, 8, 9, 10], [5, 6, 7, 8, 9, 10]]


def test_bisection_finds_the_largest_threshold_reaching_k():
    count = lambda t: sum(t < c for c in (0.2, 0.4, 0.6, 0.8))   # removes one more below each cut
    t, trail = bisect_threshold(count, 3)
    assert 0.4 - 1e-4 < t < 0.4 and count(t) == 3
    with pytest.raises(Exception, match="fewer than the 5"):
        bisect_threshold(count, 5)


@pytest.mark.parametrize("config", [SLMConfig(remove_layers=3), SLMConfig(remove_layers=2, merge="top"),
                                    LaCoConfig(remove_layers=3), SLMConfig(ratio=0.5), LaCoConfig(remove_layers=5)])
def test_count_methods_remove_exactly_k_blocks(config):
    model = deep_model("llama", 8)
    ids = torch.randint(0, VOCAB, (3, 24), generator=torch.Generator().manual_seed(0))
    res = prune(model, config, ids, progress=False)
    k = config.target(8)
    assert model.config.num_hidden_layers == 8 - k == len(ModelAdapter(model).layers)
    assert res.details["depth"]["layers_removed"] == k
    assert sorted(i for g in res.details["depth"]["groups"] for i in g) == list(range(8))  # merges keep coverage
    assert res.details["depth"]["groups"][-1] == [7]      # the last block is protected


def test_slm_with_a_threshold_above_one_merges_nothing_and_is_deterministic():
    ids = torch.randint(0, VOCAB, (3, 24), generator=torch.Generator().manual_seed(0))
    model = deep_model("llama", 8)
    prune(model, SLMConfig(threshold=1.01), ids, progress=False)
    assert model.config.num_hidden_layers == 8
    a, b = deep_model("llama", 8), deep_model("llama", 8)
    ra = prune(a, SLMConfig(threshold=0.5), ids, progress=False)
    rb = prune(b, SLMConfig(threshold=0.5), ids, progress=False)
    assert ra.details["depth"]["groups"] == rb.details["depth"]["groups"]


def _nll_without(model, ids, removed):
    m = copy.deepcopy(model)
    layers = ModelAdapter(m).layers
    for i in sorted(removed, reverse=True):
        del layers[i]
    with torch.no_grad():
        logits = m(ids, use_cache=False).logits[:, :-1]
    return torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1)).item()


def test_sleb_and_ppl_pick_what_brute_force_picks():
    model = deep_model("llama", 7)
    ids = torch.randint(0, VOCAB, (3, 24), generator=torch.Generator().manual_seed(2))
    # SLEB round 1: among blocks 1..5, the one whose removal gives the lowest NLL; round 2 on top of it
    first = min(range(1, 6), key=lambda i: _nll_without(model, ids, [i]))
    rest = [i for i in range(1, 6) if i != first]
    second = min(rest, key=lambda i: _nll_without(model, ids, [first, i]))
    sleb = copy.deepcopy(model)
    res = prune(sleb, SLEBConfig(remove_layers=2), ids, progress=False)
    assert res.details["removed"] == sorted([first, second])
    # PPL without the plus heuristic: the two blocks of lowest single-removal NLL, in one shot
    single = sorted(range(7), key=lambda i: _nll_without(model, ids, [i]))[:2]
    ppl = copy.deepcopy(model)
    res = prune(ppl, PPLConfig(remove_layers=2, plus_heuristic=False), ids, progress=False)
    assert res.details["removed"] == sorted(single)
    assert res.details["calibration_ppl"][str(single[0])] == pytest.approx(math.exp(_nll_without(model, ids, [single[0]])), rel=1e-4)


def test_shortgpt_removes_the_lowest_block_influence():
    model = deep_model("llama", 6)
    ids = torch.randint(0, VOCAB, (2, 16), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        hs = model(ids, output_hidden_states=True).hidden_states   # entry i: block i's input (last is normed)
    bi = [block_influence(hs[i], hs[i + 1]) for i in range(5)]
    res = prune(model, ShortGPTConfig(remove_layers=2), ids, progress=False)
    assert res.details["block_influence"][:5] == pytest.approx(bi, abs=1e-6)
    assert res.details["removed"] == sorted(sorted(range(6), key=lambda i: res.details["block_influence"][i])[:2])


def test_stack_final_hidden_matches_the_model():
    model = deep_model("qwen2", 4)
    ids = torch.randint(0, VOCAB, (2, 16), generator=torch.Generator().manual_seed(4))
    stack = BlockStack(ModelAdapter(model), ids)
    states = stack.all_inputs(list(ModelAdapter(model).layers))
    with torch.no_grad():
        ref = model(ids, output_hidden_states=True).hidden_states[-1]
    assert torch.allclose(stack.final_hidden(states[-1]), ref, atol=1e-5)


@pytest.mark.parametrize("family", ["llama", "qwen2", "opt"])
def test_merged_model_saves_reloads_and_generates_with_the_kv_cache(family, tmp_path, tokenizer):
    model = deep_model(family, 6)
    ids = torch.randint(3, VOCAB, (2, 20), generator=torch.Generator().manual_seed(5))
    prune(model, SLMConfig(remove_layers=2), ids, progress=False)
    prune(model, ShortGPTConfig(remove_layers=1), ids, progress=False)   # a removal on top of a merge
    assert model.config.num_hidden_layers == 3
    if getattr(model.config, "layer_types", None) is not None:
        assert len(model.config.layer_types) == 3
    model.save_pretrained(tmp_path / "m")
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "m").eval()
    assert len(ModelAdapter(reloaded).layers) == 3
    x = ids[:1, :8]
    with torch.no_grad():
        assert torch.allclose(model(ids).logits, reloaded(ids).logits, atol=1e-6)
        cached = reloaded.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=8, do_sample=False,
                                   use_cache=True, pad_token_id=0)
        uncached = reloaded.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=8, do_sample=False,
                                     use_cache=False, pad_token_id=0)
    assert torch.equal(cached, uncached)
    assert [b.self_attn.layer_idx for b in ModelAdapter(reloaded).layers] == [0, 1, 2]


def test_cli_depth_prune_writes_a_smaller_checkpoint(tiny_model_dir, tmp_path, data_dir, capsys):
    src = tmp_path / "deep"
    deep_model("llama", 8).save_pretrained(src)
    AutoTokenizerDir = tiny_model_dir  # the tokenizer saved with the tiny model
    from transformers import AutoTokenizer
    AutoTokenizer.from_pretrained(AutoTokenizerDir).save_pretrained(src)
    out = tmp_path / "slm"
    assert main(["prune", "--model", str(src), "--method", "slm", "--ratio", "0.25", "--calib", "wikitext2:validation",
                 "--nsamples", "3", "--seqlen", "32", "--eval", "wikitext2", "--eval-seqlen", "64",
                 "--eval-windows", "1", "--data-dir", data_dir, "--output", str(out)]) == 0
    summary = capsys.readouterr().out
    assert "layers        8 -> 6" in summary
    report = json.loads((out / "prunekit_report.json").read_text())
    assert report["calibration"]["nsamples"] == 3 and report["method"]["depth"]["layers_after"] == 6
    reloaded = AutoModelForCausalLM.from_pretrained(out)
    assert reloaded.config.num_hidden_layers == 6
    assert generate_step_lengths(reloaded) == [5, 1, 1, 1]    # decodes with the KV cache by default
    size = lambda d: (d / "model.safetensors").stat().st_size
    per_block = sum(p.numel() for p in ModelAdapter(reloaded).layers[0].parameters()) * 4
    assert size(src) - size(out) == pytest.approx(2 * per_block, rel=0.01)
    assert main(["prune", "--model", str(src), "--method", "slm", "--sparsity", "0.5", "--calib", "wikitext2:validation",
                 "--data-dir", data_dir, "--output", str(tmp_path / "x")]) == 2
    assert "--sparsity does not apply to method slm" in capsys.readouterr().err
    assert main(["prune", "--model", str(src), "--method", "shortgpt", "--remove-layers", "8", "--calib", "wikitext2:validation",
                 "--data-dir", data_dir, "--output", str(tmp_path / "y")]) == 2
    assert "cannot remove 8 of 8" in capsys.readouterr().err
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_cli_analyze_writes_cka_and_scores(tiny_model_dir, tmp_path, data_dir, capsys):
    out = tmp_path / "analysis"
    assert main(["analyze", "--model", str(tiny_model_dir), "--calib", "wikitext2:validation", "--nsamples", "2",
                 "--seqlen", "16", "--data-dir", data_dir, "--output", str(out)]) == 0
    report = json.loads((out / "analysis.json").read_text())
    cka = torch.tensor(report["cka"])
    assert cka.shape == (3, 3) and torch.allclose(cka.diagonal(), torch.ones(3, dtype=cka.dtype))
    assert len(report["block_influence"]) == 3 and len(report["adjacent_cosine"]) == 2
    assert report["tokens"] == 32
    assert (out / "cka.png").stat().st_size > 1000 and (out / "layer_scores.png").stat().st_size > 1000
    skipped = tmp_path / "skipped"
    assert main(["analyze", "--model", str(tiny_model_dir), "--calib", "wikitext2:validation", "--nsamples", "2",
                 "--seqlen", "16", "--skip-first", "4", "--data-dir", data_dir, "--output", str(skipped)]) == 0
    assert json.loads((skipped / "analysis.json").read_text())["tokens"] == 24


def test_speed_ratios_pair_the_rounds_of_models_timed_together():
    from prunekit.eval.speed import ratios
    base = {"params_total": 10, "layers": 4, "peak_rss_gb": 1.0}
    pruned = {**base, "layers": 2, "prefill_all_s": [1.0, 3.0, 2.0], "prefill_s": 2.0,
              "decode_all_tokens_per_s": [20.0, 5.0, 30.0], "decode_tokens_per_s": 20.0, "session": "a"}
    dense = {**base, "prefill_all_s": [2.0, 6.0, 2.0], "prefill_s": 2.0,
             "decode_all_tokens_per_s": [10.0, 2.5, 10.0], "decode_tokens_per_s": 10.0, "session": "a"}
    r = ratios(pruned, dense)
    # per-round ratios 0.5, 0.5, 1.0 (prefill) and 2, 2, 3 (decode): their medians
    assert r["paired_rounds"] and r["prefill_latency"] == 0.5 and r["decode_tokens_per_s"] == 2.0
    r = ratios(pruned, {**dense, "session": "b"})      # measured apart: ratio of the medians
    assert not r["paired_rounds"] and r["prefill_latency"] == 1.0 and r["decode_tokens_per_s"] == 2.0
    assert r["layers"] == 0.5


def test_cli_bench_reports_exact_counts_and_ratios(tmp_path, tokenizer):
    dense, small = deep_model("llama", 4), deep_model("llama", 4)
    ids = torch.randint(0, VOCAB, (2, 16), generator=torch.Generator().manual_seed(6))
    prune(small, ShortGPTConfig(remove_layers=2), ids, progress=False)
    for name, m in (("dense", dense), ("small", small)):
        m.save_pretrained(tmp_path / name)
        tokenizer.save_pretrained(tmp_path / name)
    out = tmp_path / "bench.json"
    assert main(["bench", "--model", str(tmp_path / "small"), "--baseline", str(tmp_path / "dense"), "--seqlen", "32",
                 "--prompt-len", "8", "--new-tokens", "4", "--reps", "2", "--output", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["ratios"]["layers"] == 0.5
    assert res["pruned"]["params_total"] == sum(p.numel() for p in small.parameters())
    assert res["ratios"]["params"] == pytest.approx(res["pruned"]["params_total"] / res["baseline"]["params_total"])
    assert res["pruned"]["disk_bytes"] < res["baseline"]["disk_bytes"]
    assert res["pruned"]["prefill_s"] > 0 and res["pruned"]["decode_tokens_per_s"] > 0
    assert res["ratios"]["paired_rounds"] and len(res["pruned"]["prefill_all_s"]) == 2
