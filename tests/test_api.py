"""prunekit.prune refuses a config field changed to the wrong type after construction, and calibration ids
that are not a 2-D integer tensor inside the vocabulary (one PrunekitError line naming calibration),
before any work."""
import pytest
import torch

import prunekit
from prunekit import ConfigError, MagnitudeConfig, PrunekitError, WandaConfig

from tests.helpers.models import VOCAB, plain_model


def test_field_set_after_construction_is_refused_by_prune():
    model = plain_model("llama")
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
    model = plain_model("llama")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(PrunekitError) as err:
        prunekit.prune(model, WandaConfig(sparsity=0.5), calibration, progress=False)
    text = str(err.value)
    assert type(err.value) is PrunekitError and "\n" not in text
    assert text.startswith("calibration ") and message in text, text
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())      # nothing was pruned


def test_int32_calibration_and_the_check_function_for_streaming():
    from prunekit.data.calibration import checked_calibration_ids, input_vocab_size
    model = plain_model("llama")
    assert input_vocab_size(model) == VOCAB
    ids = checked_calibration_ids(prunekit.Calibration(GOOD.int(), "x", None, 0), VOCAB)
    assert ids.dtype == torch.int64 and torch.equal(ids, GOOD)
    result = prunekit.prune(model, WandaConfig(sparsity=0.5), GOOD.int(), progress=False)
    assert result.sparsity["overall"] == pytest.approx(0.5)
