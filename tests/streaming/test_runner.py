"""Streaming is a block source of the one runner: a method's own `run` drives itself over blocks
read from the checkpoint, so a new method streams without any streaming code knowing it. Shown
with methods defined here and nowhere else: a layer-wise one that carries state across blocks
(killed and resumed), a depth one, and the contributor's toy method."""
from dataclasses import dataclass

import pytest
import torch

import prunekit
from prunekit.methods.base import apply_mask
from prunekit.methods.depth.base import DepthConfig, DepthMethod
from prunekit.methods.registry import register_method
from prunekit.methods.sparsity.base import LayerwiseMethod, SparsityConfig
from prunekit.solvers.masks import sparsity_mask
from prunekit.streaming import stream_prune
from prunekit.streaming.blocks import StreamedBlocks

from tests.helpers import toy_random_method as toy
from tests.helpers.checkpoints import read_folder
from tests.helpers.models import VOCAB, plain_model
from tests.helpers.tokenizers import word_tokenizer


@dataclass
class CountingConfig(SparsityConfig):
    pass


class Counting(LayerwiseMethod):
    """Wanda-like scores, plus a count of the calibration rows each block saw: state that a resumed
    run must carry over, declared once in `carried`."""
    carried = LayerwiseMethod.carried + ("rows",)

    def __init__(self, config, adapter):
        super().__init__(config, adapter)
        self.rows, self.norms = {}, {}

    def observe(self, index, block):
        def hook(name):
            def record(x, _):
                x = x.reshape(-1, x.shape[-1]).float()
                self.norms[name] = self.norms.get(name, 0) + (x * x).sum(0)
                self.rows[index] = self.rows.get(index, 0) + x.shape[0]
            return record
        return {lin: hook(name) for name, lin in self.linears(block).items()}

    def edit(self, index, block):
        for name, lin in self.linears(block).items():
            score = lin.weight.abs() * self.norms.pop(name).sqrt()
            apply_mask(lin, sparsity_mask(score, self.config.sparsity, self.config.nm, per_row=True))

    def summary(self):
        return {"rows": dict(self.rows)}


@dataclass
class DropLastConfig(DepthConfig):
    pass


class DropLast(DepthMethod):
    """Removes the last `remove_layers` blocks after one scoring pass (which it does not need,
    but a depth method makes one)."""
    streamable = True

    def search(self, stack, state, progress=True):
        stack.all_inputs(state.blocks)
        for _ in range(self.config.target(len(state))):
            state.remove(len(state) - 1)


def _ids():
    return torch.randint(3, VOCAB, (4, 32), generator=torch.Generator().manual_seed(0))


@pytest.fixture(autouse=True)
def registered():
    """The two methods of this module, registered for its tests only (the registry is global)."""
    from prunekit.methods import registry
    register_method("test-counting", CountingConfig)(Counting)
    register_method("test-drop-last", DropLastConfig)(DropLast)
    yield
    for name, config in (("test-counting", CountingConfig), ("test-drop-last", DropLastConfig)):
        registry._BY_NAME.pop(name, None)
        registry._BY_CONFIG.pop(config, None)


@pytest.fixture
def source(tmp_path):
    path = tmp_path / "src"
    plain_model("llama", layers=4).save_pretrained(path)
    word_tokenizer().save_pretrained(path)
    return path


def _kill_after(monkeypatch, units: int) -> None:
    """Ctrl-C right after the `units`-th unit is durably written."""
    real = StreamedBlocks.finish_unit

    def finish(self, finished, payload=None):
        real(self, finished, payload)
        if finished == units:
            raise KeyboardInterrupt
    monkeypatch.setattr(StreamedBlocks, "finish_unit", finish)


def _in_memory(source, config):
    model, _, _ = prunekit.load_model(str(source))
    result = prunekit.prune(model, config, _ids(), progress=False)
    return result, result.model.state_dict()


@pytest.mark.parametrize("config", [lambda: CountingConfig(sparsity=0.5), lambda: DropLastConfig(remove_layers=1),
                                    lambda: toy.RandomMaskConfig(sparsity=0.5, mask_seed=3)],
                         ids=["layerwise", "depth", "toy"])
def test_a_method_defined_elsewhere_streams_equal_to_in_memory(config, source, tmp_path):
    expected, weights = _in_memory(source, config())
    streamed = stream_prune(str(source), config(), _ids(), tmp_path / "out", progress=False)
    got = read_folder(tmp_path / "out")
    assert set(got) == set(weights)
    assert all(torch.equal(got[k], weights[k]) for k in got)
    assert streamed.details == {**expected.details, "streamed": True}


def test_carried_state_survives_a_kill_between_blocks(source, tmp_path, monkeypatch):
    whole = stream_prune(str(source), CountingConfig(sparsity=0.5), _ids(), tmp_path / "whole", progress=False)
    _kill_after(monkeypatch, 2)
    with pytest.raises(KeyboardInterrupt):
        stream_prune(str(source), CountingConfig(sparsity=0.5), _ids(), tmp_path / "out", progress=False)
    monkeypatch.undo()
    resumed = stream_prune(str(source), CountingConfig(sparsity=0.5), _ids(), tmp_path / "out", resume=True,
                           progress=False)
    linears = len(prunekit.ModelAdapter(plain_model("llama", layers=4)).linear_names())
    assert resumed.details["rows"] == whole.details["rows"] == {i: linears * 4 * 32 for i in range(4)}
    got, want = read_folder(tmp_path / "out"), read_folder(tmp_path / "whole")
    assert set(got) == set(want) and all(torch.equal(got[k], want[k]) for k in got)


def test_a_depth_plan_is_kept_across_a_kill(source, tmp_path, monkeypatch):
    calls = []
    _kill_after(monkeypatch, 1)
    with pytest.raises(KeyboardInterrupt):
        stream_prune(str(source), DropLastConfig(remove_layers=2), _ids(), tmp_path / "out", progress=False)
    monkeypatch.undo()
    monkeypatch.setattr(DropLast, "search", lambda *a, **k: calls.append(1))     # must not search again
    resumed = stream_prune(str(source), DropLastConfig(remove_layers=2), _ids(), tmp_path / "out", resume=True,
                           progress=False)
    assert calls == [] and resumed.details["depth"]["groups"] == [[0], [1]]
    assert {k.split(".")[2] for k in read_folder(tmp_path / "out") if k.startswith("model.layers.")} == {"0", "1"}
