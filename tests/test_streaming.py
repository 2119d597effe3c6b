"""Streaming: blocks read from safetensors on demand, written at once, resumable. Every streamed
result is compared with the in-memory path on the same checkpoint (weights byte-equal)."""
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from safetensors import safe_open

import prunekit
from prunekit.errors import PrunekitError
from prunekit.methods import MagnitudeConfig, ShortGPTConfig, SparseGPTConfig, WandaConfig, LaCoConfig, SearchConfig, SparseLLMConfig
from prunekit.stats import sparsity_stats
from prunekit.streaming import partial_dir, stream_perplexity, stream_prune

from .conftest import VOCAB, make_tiny_model

ROOT = Path(__file__).resolve().parents[1]


def _ids(n=4, L=32, seed=0):
    return torch.randint(3, VOCAB, (n, L), generator=torch.Generator().manual_seed(seed))


def _save(model, tokenizer, path, dtype=None, shard=None):
    if dtype is not None:
        model = model.to(dtype)
    kw = {"max_shard_size": shard} if shard else {}
    model.save_pretrained(path, **kw)
    tokenizer.save_pretrained(path)
    return path


def _read_folder(path) -> dict:
    """Every tensor of a safetensors checkpoint folder (single file or shards)."""
    out = {}
    for f in sorted(Path(path).glob("*.safetensors")):
        with safe_open(str(f), framework="pt") as h:
            out.update({k: h.get_tensor(k) for k in h.keys()})
    return out


def _in_memory(path, config, ids, dtype="float32"):
    model, _, _ = prunekit.load_model(str(path), dtype)
    prunekit.prune(model, config, ids, progress=False)
    return model


def _assert_byte_equal(streamed: dict, model):
    ref = model.state_dict()
    # a tied head is stored once, as save_pretrained does
    left_out = {n for n in ref if n not in streamed}
    assert left_out == ({"lm_head.weight"} if model.config.tie_word_embeddings else set())
    assert set(streamed) <= set(ref)
    for k, v in streamed.items():
        assert v.dtype == ref[k].dtype, k
        assert torch.equal(v.contiguous().view(torch.uint8), ref[k].contiguous().view(torch.uint8)), k


CONFIGS = {
    "magnitude": lambda: MagnitudeConfig(sparsity=0.5),
    "wanda": lambda: WandaConfig(sparsity=0.5),
    "sparsegpt": lambda: SparseGPTConfig(pattern="2:4"),
    "sparsellm": lambda: SparseLLMConfig(sparsity=0.5, iterations=2),
}


@pytest.mark.parametrize("family", ["llama", "opt"])
@pytest.mark.parametrize("method", list(CONFIGS))
def test_streamed_equals_in_memory(family, method, tokenizer, tmp_path):
    src = _save(make_tiny_model(family), tokenizer, tmp_path / "src")
    ids = _ids()
    res = stream_prune(str(src), CONFIGS[method](), ids, tmp_path / "out", progress=False)
    ref = _in_memory(src, CONFIGS[method](), ids)
    out = _read_folder(tmp_path / "out")
    _assert_byte_equal(out, ref)
    assert res.sparsity == sparsity_stats(prunekit.ModelAdapter(ref))
    assert not partial_dir((tmp_path / "out").resolve()).exists()


def test_sharded_input_and_output_load_with_from_pretrained(tokenizer, tmp_path):
    from transformers import AutoModelForCausalLM

    src = _save(make_tiny_model("llama", layers=4), tokenizer, tmp_path / "src", shard="100KB")
    assert (src / "model.safetensors.index.json").is_file()
    ids = _ids()
    stream_prune(str(src), WandaConfig(sparsity=0.5), ids, tmp_path / "out", max_shard_bytes=150_000, progress=False)
    index = json.loads((tmp_path / "out" / "model.safetensors.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) > 2 and all((tmp_path / "out" / s).is_file() for s in shards)
    assert sorted(p.name for p in (tmp_path / "out").glob("*.safetensors")) == shards
    for s in shards:   # bounded, except a single unit larger than the bound (here the embeddings and head)
        with safe_open(str(tmp_path / "out" / s), framework="pt") as h:
            units = {k.split(".")[2] if k.startswith("model.layers.") else "rest" for k in h.keys()}
        assert (tmp_path / "out" / s).stat().st_size <= 150_000 + 4096 or len(units) == 1, (s, units)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path / "out", dtype=torch.float32)
    ref = _in_memory(src, WandaConfig(sparsity=0.5), ids)
    x = _ids(1, 16, seed=5)
    with torch.no_grad():
        assert torch.equal(loaded(x).logits, ref(x).logits)


def test_bf16_source_stays_bf16(tokenizer, tmp_path):
    src = _save(make_tiny_model("llama"), tokenizer, tmp_path / "src", dtype=torch.bfloat16)
    ids = _ids()
    stream_prune(str(src), SparseGPTConfig(sparsity=0.5), ids, tmp_path / "out", progress=False)
    out = _read_folder(tmp_path / "out")
    assert {v.dtype for v in out.values()} == {torch.bfloat16}
    assert json.loads((tmp_path / "out" / "config.json").read_text())["dtype"] == "bfloat16"
    _assert_byte_equal(out, _in_memory(src, SparseGPTConfig(sparsity=0.5), ids, "bfloat16"))


def test_loader_default_keeps_the_checkpoint_dtype(tokenizer, tmp_path):
    src = _save(make_tiny_model("llama"), tokenizer, tmp_path / "src", dtype=torch.bfloat16)
    model, _, _ = prunekit.load_model(str(src))
    assert next(model.parameters()).dtype == torch.bfloat16


def _files(folder) -> dict:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(Path(folder).rglob("*")) if p.is_file()}


class _Kill(Exception):
    pass


@pytest.mark.parametrize("method", ["magnitude", "wanda", "sparsegpt", "sparsellm"])
def test_kill_and_resume_equals_uninterrupted(method, tokenizer, tmp_path):
    src = _save(make_tiny_model("llama", layers=4), tokenizer, tmp_path / "src", shard="100KB")
    ids = _ids()
    kw = dict(max_shard_bytes=150_000, progress=False)
    stream_prune(str(src), CONFIGS[method](), ids, tmp_path / "ref", **kw)
    ref = _files(tmp_path / "ref")
    for k in (0, 2, 3, 4):            # after the first, a middle and the last block, after the non-block tensors

        def boom(unit, k=k):
            if unit == k:
                raise _Kill

        out = tmp_path / f"out{k}"
        with pytest.raises(_Kill):
            stream_prune(str(src), CONFIGS[method](), ids, out, on_unit=boom, **kw)
        assert not out.exists() and partial_dir(out.resolve()).is_dir()
        seen = []
        res = stream_prune(str(src), CONFIGS[method](), ids, out, resume=True, on_unit=seen.append, **kw)
        assert seen == list(range(k + 1, 5))          # only what was not finished ran again
        assert any("resumed" in e for e in res.events)
        assert _files(out) == ref
        assert not partial_dir(out.resolve()).exists()


def test_resume_with_other_settings_is_refused_and_leftover_is_replaced(tokenizer, tmp_path):
    src = _save(make_tiny_model("llama"), tokenizer, tmp_path / "src")
    ids = _ids()
    out = tmp_path / "out"

    def boom(unit):
        if unit == 1:
            raise _Kill

    with pytest.raises(_Kill):
        stream_prune(str(src), WandaConfig(sparsity=0.5), ids, out, on_unit=boom, progress=False)
    with pytest.raises(PrunekitError, match=r"--resume refused.*sparsity: 0\.5 then, 0\.6 now"):
        stream_prune(str(src), WandaConfig(sparsity=0.6), ids, out, resume=True, progress=False)
    with pytest.raises(PrunekitError, match="calibration"):
        stream_prune(str(src), WandaConfig(sparsity=0.5), _ids(seed=1), out, resume=True, progress=False)
    res = stream_prune(str(src), WandaConfig(sparsity=0.6), ids, out, progress=False)
    note = [e for e in res.events if "leftover" in e]
    assert len(note) == 1 and str(partial_dir(out.resolve())) in note[0] and "KiB" in note[0]
    _assert_byte_equal(_read_folder(out), _in_memory(src, WandaConfig(sparsity=0.6), ids))


CHILD = """
import sys, torch
from prunekit.methods import SparseGPTConfig
from prunekit.stats import sparsity_stats
from prunekit.streaming import stream_prune
ids = torch.load(sys.argv[3])
def unit(k):
    print("unit", k, flush=True)
    if k >= 1:
        import time; time.sleep(30)    # the parent kills us here, or earlier
stream_prune(sys.argv[1], SparseGPTConfig(sparsity=0.5), ids, sys.argv[2], on_unit=unit, progress=False,
             max_shard_bytes=150_000)
"""


def test_sigkill_then_resume_equals_uninterrupted(tokenizer, tmp_path):
    src = _save(make_tiny_model("llama", layers=4), tokenizer, tmp_path / "src")
    ids = _ids()
    torch.save(ids, tmp_path / "ids.pt")
    out = tmp_path / "out"
    # float sums depend on the thread count: the killed run and the resume use the same one, as a
    # resume on the same machine does
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": str(torch.get_num_threads())}
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(src), str(out), str(tmp_path / "ids.pt")],
                             stdout=subprocess.PIPE, text=True, env=env)
    try:
        for line in child.stdout:
            if line.strip() == "unit 1":
                break
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
    assert child.returncode == -signal.SIGKILL and not out.exists()
    seen = []
    stream_prune(str(src), SparseGPTConfig(sparsity=0.5), ids, out, resume=True, on_unit=seen.append,
                 max_shard_bytes=150_000, progress=False)
    assert seen == [2, 3, 4]
    stream_prune(str(src), SparseGPTConfig(sparsity=0.5), ids, tmp_path / "ref", max_shard_bytes=150_000,
                 progress=False)
    assert _files(out) == _files(tmp_path / "ref")


def test_shortgpt_streamed_equals_in_memory(tokenizer, tmp_path):
    from transformers import AutoModelForCausalLM

    src = _save(make_tiny_model("llama", layers=6), tokenizer, tmp_path / "src")
    ids = _ids(4, 24)
    res = stream_prune(str(src), ShortGPTConfig(remove_layers=2), ids, tmp_path / "out", progress=False)
    ref = _in_memory(src, ShortGPTConfig(remove_layers=2), ids)
    _assert_byte_equal(_read_folder(tmp_path / "out"), ref)
    assert res.details["depth"]["layers_after"] == 4 == ref.config.num_hidden_layers
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path / "out", dtype=torch.float32)
    x = _ids(1, 16, seed=5)
    with torch.no_grad():
        assert torch.equal(loaded(x).logits, ref(x).logits)


def test_streamed_perplexity_equals_in_memory(tokenizer, tmp_path):
    from prunekit.eval.ppl import perplexity_of_ids

    src = _save(make_tiny_model("opt"), tokenizer, tmp_path / "src")
    ids = torch.randint(3, VOCAB, (5 * 32 + 7,), generator=torch.Generator().manual_seed(3))
    model, _, _ = prunekit.load_model(str(src))
    ref = perplexity_of_ids(model, ids, seqlen=32, progress=False)
    got = stream_perplexity(str(src), ids, seqlen=32, chunk_windows=2, progress=False)
    assert got["windows"] == ref["windows"] == 5
    assert got["ppl"] == pytest.approx(ref["ppl"], rel=1e-6)


@pytest.mark.parametrize("config", [LaCoConfig(remove_layers=1), SearchConfig(keep=0.8)], ids=["laco", "search"])
def test_methods_that_cannot_stream_refuse_in_one_line(config, tokenizer, tmp_path):
    src = _save(make_tiny_model("llama"), tokenizer, tmp_path / "src")
    with pytest.raises(PrunekitError, match="cannot stream") as e:
        stream_prune(str(src), config, _ids(), tmp_path / "out", progress=False)
    assert "\n" not in str(e.value) and not (tmp_path / "out").exists()


def _random_checkpoint_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_random_checkpoint", ROOT / "tools" / "make_random_checkpoint.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _write_random_llama(path: Path, tokenizer, layers: int, hidden: int, inter: int, dtype=torch.float32,
                        shard_bytes: int = 10**8) -> int:
    """A random Llama written by the benchmark script's shard writer (one tensor in memory at a time)."""
    from transformers import LlamaConfig
    from tqdm import tqdm

    mk = _random_checkpoint_module()
    cfg = dict(hidden_size=hidden, intermediate_size=inter, num_attention_heads=hidden // 64,
               num_key_value_heads=max(1, hidden // 256), num_hidden_layers=layers, vocab_size=VOCAB,
               tie_word_embeddings=False, head_dim=64)
    path.mkdir()
    code = {torch.float32: "F32", torch.bfloat16: "BF16"}[dtype]
    shards = mk.plan_shards(mk.tensors_of(cfg), dtype.itemsize, shard_bytes)
    names = [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))]
    for name, tensors in zip(names, shards):
        mk.write_shard(path / name, tensors, dtype, code, 0, tqdm(disable=True))
    index = {"metadata": {}, "weight_map": {t: n for n, ts in zip(names, shards) for t, _ in ts}}
    (path / "model.safetensors.index.json").write_text(json.dumps(index))
    LlamaConfig(**cfg, bos_token_id=1, eos_token_id=2, pad_token_id=0, dtype=str(dtype).split(".")[1]).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return sum(p.stat().st_size for p in path.glob("*.safetensors"))


def test_random_checkpoint_script_writes_what_from_pretrained_reads(tokenizer, tmp_path):
    from transformers import AutoModelForCausalLM

    mk = _random_checkpoint_module()
    shape = mk.shape_for(1e9)
    assert abs(shape["total"] - 1e9) / 1e9 < 0.05          # the parameter count asked for, within 5%
    _write_random_llama(tmp_path / "rand", tokenizer, layers=3, hidden=128, inter=384, dtype=torch.bfloat16,
                        shard_bytes=200_000)
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "rand", dtype="auto")
    sd = model.state_dict()
    name = "model.layers.1.mlp.up_proj.weight"
    assert sd[name].dtype == torch.bfloat16
    assert torch.equal(sd[name], mk.make_tensor(name, (384, 128), torch.bfloat16, 0))
    assert torch.equal(sd["model.norm.weight"], torch.ones(128, dtype=torch.bfloat16))
    assert len(list((tmp_path / "rand").glob("*.safetensors"))) > 3


CGROUP = Path("/sys/fs/cgroup/memory")
CG_CHILD = """
import sys, torch
from prunekit.methods import WandaConfig
from prunekit.streaming import stream_prune
ids = torch.randint(3, 384, (4, 64), generator=torch.Generator().manual_seed(0))
r = stream_prune(sys.argv[1], WandaConfig(sparsity=0.5), ids, sys.argv[2], progress=False, max_shard_bytes=50_000_000)
print("overall", r.sparsity["overall"], flush=True)
"""


def test_streamed_run_inside_a_memory_limit_below_the_model_size(tokenizer, tmp_path):
    # cgroup v1 memory controller (this machine mounts v1 at /sys/fs/cgroup/memory; v2 has memory.max instead)
    if not (CGROUP / "memory.limit_in_bytes").is_file():
        pytest.skip(f"no cgroup v1 memory controller at {CGROUP}")
    if any(l.startswith("SwapTotal:") and int(l.split()[1]) > 0 for l in open("/proc/meminfo")):
        pytest.skip("swap is on: a memory limit would not force the model out of memory")
    group = CGROUP / f"prunekit-test-{os.getpid()}"
    try:
        group.mkdir()
    except OSError as e:
        pytest.skip(f"memory cgroups are not writable here: {e}")
    try:
        # a Python process with torch and transformers imported needs about 300 MB before any weight
        size = _write_random_llama(tmp_path / "big", tokenizer, layers=48, hidden=512, inter=1536)
        limit = 450 * 2**20
        assert size > limit * 1.2      # an in-memory load alone needs more than the limit (no swap)
        (group / "memory.limit_in_bytes").write_text(str(limit))
        env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
        child = subprocess.run([sys.executable, "-c", CG_CHILD, str(tmp_path / "big"), str(tmp_path / "out")],
                               capture_output=True, text=True, env=env, timeout=600,
                               preexec_fn=lambda: (group / "cgroup.procs").write_text(str(os.getpid())))
        peak = int((group / "memory.max_usage_in_bytes").read_text())
    finally:
        group.rmdir()
    assert child.returncode == 0, child.stderr[-2000:]
    assert peak <= limit
    assert "overall 0.5" in child.stdout
    out = _read_folder(tmp_path / "out")
    w = out["model.layers.47.mlp.down_proj.weight"]
    assert (w == 0).sum(1).tolist() == [w.shape[1] // 2] * w.shape[0]    # Wanda: half of every row
    assert len(out) == len(_read_folder(tmp_path / "big"))


def test_cli_stream_equals_in_memory_and_keeps_bf16(tiny_model_dir, tmp_path, data_dir, capsys):
    from safetensors import safe_open

    from prunekit.cli import main

    def tensors(folder):
        out = {}
        for f in sorted(Path(folder).glob("*.safetensors")):
            with safe_open(f, "pt") as st:
                out.update({k: st.get_tensor(k) for k in st.keys()})
        return out

    common = ["prune", "--model", str(tiny_model_dir), "--method", "wanda", "--sparsity", "0.5", "--calib",
              "wikitext2:validation", "--nsamples", "4", "--seqlen", "32", "--eval", "wikitext2", "--eval-seqlen",
              "64", "--eval-windows", "2", "--data-dir", data_dir]
    assert main(common + ["--output", str(tmp_path / "mem")]) == 0
    assert main(common + ["--output", str(tmp_path / "str"), "--stream"]) == 0
    mem, streamed = tensors(tmp_path / "mem"), tensors(tmp_path / "str")
    assert set(mem) == set(streamed) and all(torch.equal(mem[k], streamed[k]) for k in mem)
    a = json.loads((tmp_path / "mem" / "prunekit_report.json").read_text())
    b = json.loads((tmp_path / "str" / "prunekit_report.json").read_text())
    assert b["streamed"] and b["method"]["name"] == "wanda"
    assert b["eval"]["wikitext2"]["protocol"] == a["eval"]["wikitext2"]["protocol"] == "wt2-64/2"
    assert abs(b["eval"]["wikitext2"]["ppl"] - a["eval"]["wikitext2"]["ppl"]) < 1e-4 * a["eval"]["wikitext2"]["ppl"]
    capsys.readouterr()
    assert main(common + ["--output", str(tmp_path / "x"), "--resume", "--eval", "none"]) == 0   # --resume streams
    assert "  mode          streamed (--resume)" in capsys.readouterr().out
    assert torch.equal(tensors(tmp_path / "x")["model.layers.1.mlp.up_proj.weight"],
                       streamed["model.layers.1.mlp.up_proj.weight"])

    bf16 = tmp_path / "bf16"
    AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.bfloat16).save_pretrained(bf16)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(bf16)
    args = common + ["--output", str(tmp_path / "bfout"), "--stream", "--eval", "none"]
    args[args.index(str(tiny_model_dir))] = str(bf16)
    assert main(args) == 0
    assert {t.dtype for t in tensors(tmp_path / "bfout").values()} == {torch.bfloat16}
