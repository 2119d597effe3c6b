"""Loading: the GGUF cache is keyed by content, the loader keeps the checkpoint's dtype."""
import os

import torch

import prunekit

from tests.helpers.checkpoints import save_folder as _save
from tests.helpers.models import plain_model


def test_gguf_cache_is_keyed_by_content_not_path(tmp_path, monkeypatch):
    """Each environment installs its own copy of a bundled GGUF: copies share one conversion,
    while a changed byte in the tensor data at the end gets its own."""
    from prunekit.models.loading import _GGUF_SAMPLE, _gguf_cache_path

    monkeypatch.setenv("PRUNEKIT_CACHE", str(tmp_path / "cache"))
    data = bytes(range(256)) * ((3 * _GGUF_SAMPLE) // 256)
    a, b = tmp_path / "env1" / "m.gguf", tmp_path / "env2" / "m.gguf"
    for f in (a, b):
        f.parent.mkdir()
        f.write_bytes(data)
    os.utime(b, (1, 1))
    assert _gguf_cache_path(str(a)) == _gguf_cache_path(str(b))
    changed = bytearray(data)
    changed[-10] ^= 1
    b.write_bytes(bytes(changed))
    assert _gguf_cache_path(str(a)) != _gguf_cache_path(str(b))


def test_loader_default_keeps_the_checkpoint_dtype(tokenizer, tmp_path):
    src = _save(plain_model("llama"), tokenizer, tmp_path / "src", dtype=torch.bfloat16)
    model, _, _ = prunekit.load_model(str(src))
    assert next(model.parameters()).dtype == torch.bfloat16
