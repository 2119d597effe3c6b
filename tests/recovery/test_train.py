"""Recovery training: one LoRA step lowers the loss, a resumed run equals an uninterrupted one."""
import pytest
import torch
from transformers import TrainerCallback

from prunekit.errors import PrunekitError
from prunekit.models.adapter import ModelAdapter
from prunekit.recovery import RecoveryConfig, recover
from prunekit.recovery.lora import attach_lora
from prunekit.recovery.output import work_dir

from tests.helpers.models import VOCAB, plain_model


TINY = dict(seqlen=32, eval_every=2, save_every=2, warmup_steps=0)


DATA = "wikitext2:validation"


def _ids(n=2, length=24, seed=1):
    return torch.randint(3, VOCAB, (n, length), generator=torch.Generator().manual_seed(seed))


def test_one_lora_step_lowers_the_loss_on_a_fixed_batch(tokenizer, tmp_path):
    from prunekit.recovery.data import TrainingData
    from prunekit.recovery.train import train_model

    model = plain_model("llama")
    ids = _ids(2, 32)
    batch = [{"input_ids": row.tolist(), "labels": row.tolist()} for row in ids]
    cfg = RecoveryConfig(steps=1, batch_size=2, grad_accum=1, lr=1e-2, lora_dropout=0.0, **TINY)
    targets = cfg.target_names(ModelAdapter(model).linear_names())
    torch.manual_seed(0)
    peft_model = attach_lora(model, cfg, targets)
    with torch.no_grad():
        before = peft_model(input_ids=ids, labels=ids).loss.item()
    train_model(peft_model, tokenizer, TrainingData(batch, batch[:1]), cfg, tmp_path / "ck", progress=False)
    peft_model.eval()
    with torch.no_grad():
        after = peft_model(input_ids=ids, labels=ids).loss.item()
    assert after < before - 1e-3


class _Kill(TrainerCallback):
    def __init__(self, at):
        self.at = at

    def on_step_end(self, args, state, control, **kw):
        if state.global_step == self.at:
            raise KeyboardInterrupt


@pytest.mark.slow
def test_resume_after_a_kill_equals_an_uninterrupted_run(tokenizer, data_dir, tmp_path):
    cfg = dict(steps=5, lr=5e-3, **TINY)
    full = recover(plain_model("llama"), RecoveryConfig(**cfg), data=DATA, tokenizer=tokenizer,
                   data_dir=data_dir, output=str(tmp_path / "full"), progress=False)
    out = tmp_path / "killed"
    with pytest.raises(KeyboardInterrupt):
        recover(plain_model("llama"), RecoveryConfig(**cfg), data=DATA, tokenizer=tokenizer, data_dir=data_dir,
                output=str(out), progress=False, callbacks=[_Kill(3)])
    assert not out.exists() and (work_dir(out) / "checkpoints" / "checkpoint-2").is_dir()
    with pytest.raises(PrunekitError, match="--resume"):
        recover(plain_model("llama"), RecoveryConfig(**cfg), data=DATA, tokenizer=tokenizer, data_dir=data_dir,
                output=str(out), progress=False)
    resumed = recover(plain_model("llama"), RecoveryConfig(**cfg, resume=True), data=DATA, tokenizer=tokenizer,
                      data_dir=data_dir, output=str(out), progress=False)
    rec = resumed.report["recovery"]
    assert rec["resumed_from"] == "checkpoint-2"
    assert rec["tokens_seen"] == full.tokens_seen == 5 * 2 * 2 * 32 and rec["tokens_this_run"] == 3 * 2 * 2 * 32
    a, b = full.model.state_dict(), resumed.model.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k                                  # exactly equal, not only close
    assert [h["loss"] for h in resumed.history["train"]] == [h["loss"] for h in full.history["train"]]
    assert not work_dir(out).exists()
