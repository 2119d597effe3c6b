"""Read a safetensors checkpoint one tensor at a time, and a model that holds only what is in use.

The model is built from its config with its parameters on the meta device and its buffers real.
Computed buffers (rotary frequencies) keep their constructed values; persistent buffers the
checkpoint stores (the kept rotary dims of a width-pruned block) are read with their module, as
`from_pretrained` would. Modules are materialised from the checkpoint with `safetensors.safe_open`
when needed and their parameters sent back to meta afterwards, so host memory holds the
embeddings, the head and one block; `load(path, device)` reads a module straight onto the compute
device (safetensors copies each tensor there, no host copy of the block). Sharded checkpoints are read through
`model.safetensors.index.json`; for a hub id each shard is downloaded when first needed.
"""
from __future__ import annotations

import copy
import ctypes
import json
import math
from pathlib import Path

import torch
import torch.nn as nn

from ..errors import PrunekitError
from ..models.loading import DTYPES, ModelSource, resolve_model_source

INDEX = "model.safetensors.index.json"
SINGLE = "model.safetensors"
ST_DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16, "F64": torch.float64}


class CheckpointFiles:
    """Where each tensor lives: a local folder or a hub repository (shards fetched on demand)."""

    def __init__(self, source: ModelSource, revision: str | None = None):
        self.source, self.revision = source, revision
        self._paths = {}
        index = self._fetch(INDEX, required=False)
        if index is not None:
            self.weight_map = json.loads(Path(index).read_text())["weight_map"]
        else:
            single = self._fetch(SINGLE, required=False)
            if single is None:
                raise PrunekitError(f"model '{source.spec}' has no safetensors weights ({SINGLE} or {INDEX}): "
                                    "streaming reads safetensors only")
            with self._open(SINGLE) as f:
                self.weight_map = {k: SINGLE for k in f.keys()}

    def _fetch(self, filename: str, required: bool = True) -> str | None:
        """Local path of a checkpoint file; for a hub id, downloaded now (cached by huggingface_hub)."""
        if self.source.kind != "hub":
            p = Path(self.source.path) / filename
            if p.is_file():
                return str(p)
            if required:
                raise PrunekitError(f"checkpoint file {p} is missing")
            return None
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import EntryNotFoundError

        try:
            return hf_hub_download(self.source.path, filename, revision=self.revision)
        except EntryNotFoundError:
            if required:
                raise PrunekitError(f"model '{self.source.spec}' has no file {filename} on the hub") from None
            return None

    def _open(self, filename: str, device: str | torch.device = "cpu"):
        """A fresh handle per read: safe_open maps the file copy-on-write and its tensors share
        that mapping, so a cached handle would keep every page an in-place edit (a pruning mask)
        ever dirtied; an uncached one is unmapped when the tensors read through it are freed."""
        from safetensors import safe_open

        if filename not in self._paths:
            self._paths[filename] = self._fetch(filename)
        return safe_open(self._paths[filename], framework="pt", device=str(torch.device(device)))

    def keys(self):
        return self.weight_map.keys()

    def read(self, key: str, device: str | torch.device = "cpu") -> torch.Tensor:
        with self._open(self.weight_map[key], device) as f:
            return f.get_tensor(key)

    def dtype_of(self, key: str) -> torch.dtype:
        """The stored dtype, read from the header only."""
        with self._open(self.weight_map[key]) as f:
            code = f.get_slice(key).get_dtype()
        if code not in ST_DTYPES:
            raise PrunekitError(f"tensor {key} is stored as {code}: streaming handles float checkpoints only")
        return ST_DTYPES[code]

    def nbytes(self) -> int:
        """Bytes of all stored tensors (headers only)."""
        total = 0
        for filename in sorted(set(self.weight_map.values())):
            with self._open(filename) as f:
                for key in f.keys():
                    s = f.get_slice(key)
                    total += math.prod(s.get_shape()) * ST_DTYPES.get(s.get_dtype(), torch.float32).itemsize
        return total


def _leaf(root: nn.Module, name: str):
    mod_path, _, leaf = name.rpartition(".")
    return (root.get_submodule(mod_path) if mod_path else root), leaf


def pin_mmap_threshold(nbytes: int = 1 << 20) -> None:
    """Make glibc serve allocations above `nbytes` with their own mappings, returned to the system
    when freed. By default glibc raises that threshold after the first large free (up to 32 MiB),
    after which every streamed block lands in the heap and fragments it: resident memory then grows
    by about a block per block. No-op where glibc's mallopt is absent."""
    try:
        ctypes.CDLL("libc.so.6").mallopt(-3, nbytes)   # M_MMAP_THRESHOLD
    except (OSError, AttributeError):
        pass


class StreamedModel:
    """A causal LM whose weights stay in the checkpoint until a module is asked for."""

    def __init__(self, spec: str, dtype: str | torch.dtype = "auto", trust_remote_code: bool = False,
                 revision: str | None = None):
        from accelerate import init_empty_weights
        from transformers import AutoConfig, AutoModelForCausalLM

        pin_mmap_threshold()
        self.source = resolve_model_source(spec)
        if self.source.gguf:
            raise PrunekitError(f"model '{spec}' is a GGUF file: streaming reads safetensors checkpoints "
                                "(load it once without --stream to convert it)")
        if self.source.kind == "hub":
            from ..hub import hub_unreachable_reason
            reason = hub_unreachable_reason()
            if reason:
                raise PrunekitError(f"model '{spec}' is not a local folder and the hub cannot be reached ({reason})")
        self.files = CheckpointFiles(self.source, revision)
        self.config = AutoConfig.from_pretrained(self.source.path, trust_remote_code=trust_remote_code,
                                                 revision=revision)
        self.stored_dtype = self._stored_dtype()
        self.dtype = self.stored_dtype if dtype == "auto" else (DTYPES[dtype] if isinstance(dtype, str) else dtype)
        # parameters on meta, buffers real: rotary inverse frequencies are computed at construction
        with init_empty_weights(include_buffers=False):
            self.model = AutoModelForCausalLM.from_config(copy.deepcopy(self.config), dtype=self.dtype,
                                                          trust_remote_code=trust_remote_code)
        self.model.tie_weights()   # from_config under init_empty_weights leaves tied twins apart
        self.model.eval()
        self.model.config.use_cache = False
        self.keys = self._checkpoint_keys()
        self.buffer_keys = self._buffer_keys()

    def _stored_dtype(self) -> torch.dtype:
        floats = [k for k in self.files.keys() if k.endswith(".weight")]
        if not floats:
            raise PrunekitError(f"model '{self.source.spec}' has no weight tensors")
        return self.files.dtype_of(floats[0])

    def _checkpoint_keys(self) -> dict[str, str | None]:
        """Model parameter name -> checkpoint key; None for a tied parameter the checkpoint leaves out
        (it is filled from its twin). Checkpoints may store keys with or without the base-model prefix."""
        prefix = getattr(self.model, "base_model_prefix", "") + "."
        stored = set(self.files.keys())
        groups: dict[int, list[str]] = {}
        for name, p in self.model.named_parameters(remove_duplicate=False):
            groups.setdefault(id(p), []).append(name)
        self.twins = {n: g for g in groups.values() for n in g}
        keys, missing = {}, []
        for name in self.twins:
            for cand in (name, name[len(prefix):] if name.startswith(prefix) else None, prefix + name):
                if cand in stored:
                    keys[name] = cand
                    break
            else:
                keys[name] = None
        for name, key in keys.items():
            if key is None and not any(keys[t] for t in self.twins[name]):
                missing.append(name)
        if missing:
            raise PrunekitError(f"checkpoint of '{self.source.spec}' lacks {len(missing)} weights, e.g. {missing[0]}")
        return keys

    def _buffer_keys(self) -> dict[str, str]:
        """Persistent buffer name -> checkpoint key, for the buffers the checkpoint stores (a buffer
        it lacks keeps its constructed value, as from_pretrained leaves it)."""
        params = {n for n, _ in self.model.named_parameters(remove_duplicate=False)}
        prefix = getattr(self.model, "base_model_prefix", "") + "."
        stored = set(self.files.keys())
        keys = {}
        for name in self.model.state_dict(keep_vars=True):
            if name in params:
                continue
            short = name[len(prefix):] if name.startswith(prefix) else None
            key = next((c for c in (name, short, prefix + name) if c in stored), None)
            if key is not None:
                keys[name] = key
        return keys

    def state_names(self, path: str) -> list[str]:
        """Local names of what the module at `path` saves: its parameters and persistent buffers."""
        return list(self.model.get_submodule(path).state_dict(keep_vars=True))

    def read_state(self, name: str, device: str | torch.device = "cpu") -> torch.Tensor:
        """Parameter or persistent buffer `name` as `from_pretrained` would give it: a parameter in
        the run's dtype, a stored buffer in its constructed dtype, an unstored buffer as constructed."""
        if name in self.keys:
            return self.read(name, device)
        current = self.model.get_buffer(name)
        if name not in self.buffer_keys:
            return current
        return self.files.read(self.buffer_keys[name], device).to(current.dtype)

    def key_of(self, name: str) -> str:
        """The checkpoint key that holds parameter `name` (its twin's for a left-out tied one)."""
        return self.keys[name] or next(self.keys[t] for t in self.twins[name] if self.keys[t])

    def read(self, name: str, device: str | torch.device = "cpu") -> torch.Tensor:
        """Parameter `name` from the checkpoint, in the run's dtype, on `device`."""
        return self.files.read(self.key_of(name), device).to(self.dtype)

    @torch.no_grad()
    def load(self, path: str, device: str | torch.device | None = None) -> nn.Module:
        """Materialise the module at `path` (e.g. model.layers.3) from the checkpoint, on `device`
        (None: the CPU). A tied parameter already loaded is shared wherever it is."""
        device = torch.device("cpu") if device is None else torch.device(device)
        module = self.model.get_submodule(path)
        for local, p in list(module.named_parameters(remove_duplicate=False)):
            if not p.is_meta:
                continue
            name = f"{path}.{local}"
            twin = next((self.model.get_parameter(t) for t in self.twins[name]
                         if t != name and not self.model.get_parameter(t).is_meta), None)
            owner, leaf = _leaf(module, local)
            owner._parameters[leaf] = (twin if twin is not None
                                       else nn.Parameter(self.read(name, device), requires_grad=False))
        for local, _ in list(module.named_buffers()):
            name = f"{path}.{local}"
            if name in self.buffer_keys:     # small; kept after release, since nothing computes them again
                owner, leaf = _leaf(module, local)
                owner._buffers[leaf] = self.read_state(name, device)
        return module

    def release(self, path: str) -> None:
        """Send the module's parameters back to meta (their memory is freed)."""
        module = self.model.get_submodule(path)
        for local, p in list(module.named_parameters(remove_duplicate=False)):
            owner, leaf = _leaf(module, local)
            owner._parameters[leaf] = nn.Parameter(torch.empty_like(p, device="meta"), requires_grad=False)

    def module_path(self, module: nn.Module) -> str:
        for name, m in self.model.named_modules():
            if m is module:
                return name
        raise PrunekitError("module is not part of the streamed model")
