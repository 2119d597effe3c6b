"""Issue 23, item 4. The Python API refuses a config field of the wrong type (at construction, a
ConfigError naming the field) and calibration ids that are not a 2-D integer tensor inside the
vocabulary (one PrunekitError line naming calibration) before any work."""
import dataclasses
import json
import typing

import numpy as np
import pytest
import torch

import prunekit
from prunekit import (ConfigError, MagnitudeConfig, PPLConfig, PrunekitError, SearchConfig, ShortGPTConfig,
                      SLMConfig, SparseGPTConfig, SparseLLMConfig, WandaConfig)
from prunekit.cli import _flag_name, main
from prunekit.methods.options import _conform
from prunekit.methods.registry import all_methods
from prunekit.recovery import RecoveryConfig

from . import toy_random_method as toy
from .conftest import VOCAB, make_tiny_model

BAD_CONFIGS = [
    (lambda: WandaConfig(sparsity="0.5"), "sparsity", "must be a number"),
    (lambda: ShortGPTConfig(remove_layers=2.5), "remove_layers", "must be an integer"),
    (lambda: ShortGPTConfig(remove_layers=True), "remove_layers", "must be an integer"),
    (lambda: SparseGPTConfig(sparsity=0.5, blocksize=64.0), "blocksize", "must be an integer"),
    (lambda: SparseLLMConfig(sparsity=0.5, iterations="2"), "iterations", "must be an integer"),
    (lambda: PPLConfig(remove_layers=1, plus_heuristic="no"), "plus_heuristic", "must be true or false"),
    (lambda: SLMConfig(remove_layers=1, merge=None), "merge", "must be a string (got NoneType None)"),
    (lambda: SearchConfig(keep="0.8"), "keep", "must be a number"),
    (lambda: toy.RandomMaskConfig(sparsity=0.5, mask_seed=1.5), "mask_seed", "must be an integer"),
    (lambda: RecoveryConfig(steps=2.0), "steps", "must be an integer"),
]


@pytest.mark.parametrize("make,field,words", BAD_CONFIGS, ids=[b[1] + "-" + str(i) for i, b in enumerate(BAD_CONFIGS)])
def test_wrong_field_type_is_a_config_error_at_construction(make, field, words):
    with pytest.raises(ConfigError) as err:
        make()
    assert err.value.fields == [field]
    assert str(err.value).startswith(f"{field} {words}"), str(err.value)
    assert err.value.render(_flag_name).startswith("--" + field.replace("_", "-") + " "), \
        err.value.render(_flag_name)


def test_numbers_are_stored_as_the_annotated_type():
    assert type(WandaConfig(sparsity=0).sparsity) is float          # an int is a fine float
    assert type(WandaConfig(sparsity=np.float32(0.5)).sparsity) is float
    assert type(ShortGPTConfig(remove_layers=np.int64(2)).remove_layers) is int
    assert json.dumps(SparseGPTConfig(sparsity=np.float32(0.5), blocksize=np.int64(64)).to_dict())
    assert RecoveryConfig(lora_alpha=16).lora_alpha == 16.0


def test_every_default_fits_its_annotation():
    """The check is only as good as the annotations: every registered config's defaults (and
    RecoveryConfig's) must fit them, None only where Optional."""
    classes = [cls.config_class for cls in all_methods().values()] + [RecoveryConfig]
    for cfg in classes:
        hints = typing.get_type_hints(cfg)
        for f in dataclasses.fields(cfg):
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            assert _conform(default, hints[f.name])[0], (cfg.__name__, f.name, default, hints[f.name])


def test_field_set_after_construction_is_refused_by_prune():
    model = make_tiny_model("llama")
    config = MagnitudeConfig(sparsity=0.5)
    config.sparsity = "0.5"
    with pytest.raises(ConfigError, match="^sparsity must be a number"):
        prunekit.prune(model, config, progress=False)


GOOD = torch.randint(3, VOCAB, (2, 16), generator=torch.Generator().manual_seed(0))
BAD_CALIBRATION = [
    (GOOD[0], "must be 2-D token ids [nsamples, seqlen] (got shape [16])"),
    (GOOD[None], "must be 2-D token ids [nsamples, seqlen] (got shape [1, 2, 16])"),
    (GOOD.float(), "must hold integer token ids (got dtype torch.float32)"),
    (GOOD.tolist(), "must be a Calibration or a 2-D integer torch tensor"),
    (GOOD[:, :0], "is empty (shape [2, 0])"),
    (torch.cat([GOOD, torch.full((1, 16), VOCAB)]), f"token ids must lie in [0, {VOCAB})"),
    (torch.cat([GOOD, torch.full((1, 16), -1)]), f"token ids must lie in [0, {VOCAB})"),
    (prunekit.Calibration(GOOD + VOCAB, "x", None, 0),
     f"these range over [{int(GOOD.min()) + VOCAB}, {int(GOOD.max()) + VOCAB}]"),
]


@pytest.mark.parametrize("calibration,message", BAD_CALIBRATION,
                         ids=["1-D", "3-D", "float", "list", "empty", "above vocab", "negative", "Calibration"])
def test_bad_calibration_is_one_line_naming_it(calibration, message):
    model = make_tiny_model("llama")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(PrunekitError) as err:
        prunekit.prune(model, WandaConfig(sparsity=0.5), calibration, progress=False)
    text = str(err.value)
    assert type(err.value) is PrunekitError and "\n" not in text
    assert text.startswith("calibration ") and message in text, text
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())      # nothing was pruned


def test_int32_calibration_and_the_check_function_for_streaming():
    from prunekit.data.calibration import checked_calibration_ids, input_vocab_size
    model = make_tiny_model("llama")
    assert input_vocab_size(model) == VOCAB
    ids = checked_calibration_ids(prunekit.Calibration(GOOD.int(), "x", None, 0), VOCAB)
    assert ids.dtype == torch.int64 and torch.equal(ids, GOOD)
    result = prunekit.prune(model, WandaConfig(sparsity=0.5), GOOD.int(), progress=False)
    assert result.sparsity["overall"] == pytest.approx(0.5)
