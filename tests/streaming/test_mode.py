"""Streaming or in memory: the decision from the numbers, weight bytes from the safetensors headers."""
import torch

from prunekit.streaming import decide_mode, weight_bytes

from tests.helpers.models import plain_model


GiB = 1 << 30


def test_decide_mode_from_the_numbers():
    big, avail = int(5.2 * GiB), 8 * GiB
    m = decide_mode(None, big, avail, 0.5)
    assert m.streamed and m.reason == "auto: 5.2 GiB of weights > 0.5 × 8.0 GiB available" and m.warning is None
    m = decide_mode(None, 4 * GiB, avail, 0.5)            # exactly the threshold stays in memory
    assert not m.streamed and m.reason == "auto: 4.0 GiB of weights ≤ 0.5 × 8.0 GiB available"
    assert decide_mode(None, 4 * GiB + 1, avail, 0.5).streamed
    assert not decide_mode(None, big, avail, 0.7).streamed
    m = decide_mode(None, big, avail, 0.5, cannot_stream="method laco cannot stream")
    assert not m.streamed and m.warning == ("5.2 GiB of weights > 0.5 × 8.0 GiB available, but method laco cannot "
                                            "stream: loading it in memory anyway")
    assert decide_mode(None, 1, avail, 0.5, cannot_stream="x").warning is None    # small: nothing to warn of
    assert not decide_mode(None, None, avail, 0.5).streamed                   # size unknown (GGUF, hub)
    assert not decide_mode(None, big, None, 0.5).streamed                     # memory unknown
    assert decide_mode(True, 1, avail, 0.5).reason == "--stream"
    m = decide_mode(False, big, avail, 0.5, cannot_stream="x")
    assert not m.streamed and m.reason == "--no-stream" and m.warning is None
    assert m.to_report() == {"streamed": False, "reason": "--no-stream", "weights_bytes": big,
                             "available_bytes": avail, "stream_above": 0.5}


def test_weight_bytes_from_headers_at_the_load_dtype(tokenizer, tmp_path):
    model = plain_model("llama")
    fp32 = sum(p.numel() for p in model.parameters()) * 4
    model.save_pretrained(tmp_path / "one")
    model.save_pretrained(tmp_path / "sharded", max_shard_size="100KB")
    assert (tmp_path / "sharded" / "model.safetensors.index.json").is_file()
    for folder in ("one", "sharded"):
        assert weight_bytes(str(tmp_path / folder)) == fp32
        assert weight_bytes(str(tmp_path / folder), "bfloat16") == fp32 // 2
    model.to(torch.bfloat16).save_pretrained(tmp_path / "bf16")
    assert weight_bytes(str(tmp_path / "bf16")) == fp32 // 2                   # auto: as stored
    assert weight_bytes(str(tmp_path / "bf16"), "float32") == fp32
    assert weight_bytes("some-org/some-model") is None                         # hub id: not known before loading
    for name, files in {"bin": {"pytorch_model.bin": b"x" * 64}, "bad": {"model.safetensors": b"\x00\x01"}}.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.json").write_text("{}")
        for f, data in files.items():
            (tmp_path / name / f).write_bytes(data)
        assert weight_bytes(str(tmp_path / name)) is None     # no safetensors / unreadable: the loader says why
