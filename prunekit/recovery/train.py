"""The training run of a recovery (LoRA adapters or the block weights themselves):
transformers' Trainer with AdamW, linear warm-up and decay, periodic validation loss and
checkpoints that a killed run resumes from; with a teacher, the distillation Trainer
(recovery/distill.py)."""
from __future__ import annotations

import time
from pathlib import Path

import torch

from .. import progress as progress_lines
from .data import IGNORE, TrainingData


class Examples(torch.utils.data.Dataset):
    def __init__(self, rows: list):
        self.rows = rows

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, i):
        return self.rows[i]


TEACHER_KEYS = {"teacher_top": 0.0, "teacher_idx": 0, "teacher_tail": float("-inf")}   # padding values


def pad_collator(pad_id: int):
    """Right-pads a batch to its longest example: inputs with `pad_id`, labels with -100 (no loss),
    attention mask 0 on the padding; a cached teacher summary (recovery/distill.py) with values
    whose loss is finite, and masked out by the labels."""
    def collate(rows: list) -> dict:
        width = max(len(r["input_ids"]) for r in rows)
        ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
        labels = torch.full((len(rows), width), IGNORE, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            n = len(r["input_ids"])
            ids[i, :n] = torch.tensor(r["input_ids"])
            labels[i, :n] = torch.tensor(r["labels"])
            mask[i, :n] = 1
        batch = {"input_ids": ids, "labels": labels, "attention_mask": mask}
        for key, fill in TEACHER_KEYS.items():
            if key in rows[0]:
                first = rows[0][key]
                out = torch.full((len(rows), width, *first.shape[1:]), fill, dtype=first.dtype)
                for i, r in enumerate(rows):
                    out[i, :len(r[key])] = r[key]
                batch[key] = out
        return batch
    return collate


def training_arguments(config, checkpoints: Path, progress: bool, eval_on_start: bool):
    from transformers import TrainingArguments

    return TrainingArguments(
        output_dir=str(checkpoints),
        max_steps=config.steps if config.steps is not None else -1,
        num_train_epochs=config.epochs if config.epochs is not None else 1,
        per_device_train_batch_size=config.batch_size,
        per_device_eval_batch_size=config.batch_size,
        gradient_accumulation_steps=config.grad_accum,
        learning_rate=config.lr,
        optim="adamw_torch",
        weight_decay=0.0,
        lr_scheduler_type="linear",
        warmup_steps=config.warmup_steps,
        logging_steps=1,
        eval_strategy="steps",
        eval_steps=config.eval_every,
        eval_on_start=eval_on_start,
        save_strategy="steps",
        save_steps=config.save_every,
        save_total_limit=1,                      # only the last checkpoint is needed to resume
        seed=config.seed,
        data_seed=config.seed,
        use_cpu=config.device == "cpu",
        dataloader_num_workers=0,
        remove_unused_columns=False,
        label_names=["labels"],
        include_num_input_tokens_seen="non_padding",
        report_to="none",
        disable_tqdm=not progress,
    )


def last_checkpoint(checkpoints: Path) -> str | None:
    from transformers.trainer_utils import get_last_checkpoint

    return get_last_checkpoint(str(checkpoints)) if checkpoints.is_dir() else None


PARTS = ("lm", "kd", "agreement")       # a distillation run's per-term means (recovery/distill.py)


def history_of(log_history: list) -> dict:
    """Train loss per optimiser step and validation loss per evaluation, from the Trainer's log;
    a distillation run adds its lm and kd terms and the top-1 agreement with the teacher."""
    train = [{"step": h["step"], "loss": h["loss"], "lr": h.get("learning_rate"),
              **{k: h[k] for k in PARTS if k in h}} for h in log_history if "loss" in h]
    val = [{"step": h["step"], "loss": h["eval_loss"], **{k: h[f"eval_{k}"] for k in PARTS if f"eval_{k}" in h}}
           for h in log_history if "eval_loss" in h]
    return {"train": train, "validation": val}


def make_trainer(model, args, data: TrainingData, pad_id: int, callbacks, teacher=None, config=None,
                 distill: bool = False):
    """The stock Trainer (lm loss), or with a teacher (or its summaries cached in `data`:
    `distill`) the distillation Trainer."""
    from transformers import Trainer

    common = dict(model=model, args=args, train_dataset=Examples(data.train), eval_dataset=Examples(data.validation),
                  data_collator=pad_collator(pad_id), callbacks=list(callbacks))
    if teacher is None and not distill:
        return Trainer(**common)
    from .distill import distill_trainer_class
    return distill_trainer_class()(**common, teacher=teacher, loss=config.loss, temperature=config.temperature,
                                   kd_weight=config.kd_weight, kd_topk=config.kd_topk)


def train_model(model, tokenizer, data: TrainingData, config, checkpoints: Path, resume: bool = False,
                progress: bool = True, callbacks=(), teacher=None, distill: bool = False) -> dict:
    """Train `model`'s trainable parameters in place (LoRA adapters of a PeftModel, or block
    weights); returns history, tokens seen and timing (and the teacher's share with a teacher)."""
    checkpoint = last_checkpoint(checkpoints) if resume else None
    logged = progress and not progress_lines.is_terminal()      # a log file: lines, not a bar
    if logged:
        callbacks = [*callbacks, step_lines()]
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
    args = training_arguments(config, checkpoints, progress and not logged, eval_on_start=checkpoint is None)
    trainer = make_trainer(model, args, data, pad_id, callbacks, teacher, config, distill)
    earlier = _tokens_at(checkpoint)        # read now: the checkpoint is rotated away during training
    start = time.perf_counter()
    trainer.train(resume_from_checkpoint=checkpoint)
    seconds = time.perf_counter() - start
    state = trainer.state
    val = history_of(state.log_history)["validation"]
    if not val or val[-1]["step"] != state.global_step:
        trainer.evaluate()                       # the validation loss after the last step (logged like the others)
    return {"history": history_of(state.log_history), "steps": state.global_step, "epochs": state.epoch,
            "tokens_seen": int(state.num_input_tokens_seen),
            "tokens_this_run": int(state.num_input_tokens_seen) - earlier,
            "train_s": seconds, "resumed_from": Path(checkpoint).name if checkpoint else None,
            "teacher_s": getattr(trainer, "teacher_s", None)}


def step_lines():
    from transformers import TrainerCallback

    class StepLines(TrainerCallback):
        """Off a terminal, a line every few seconds ("prunekit: recover: step 12/50 (95 s) loss=3.41")."""

        def on_train_begin(self, args, state, control, **kw):
            self.bar = progress_lines.bar(state.max_steps, "recover", "step")
            self.bar.n = state.global_step                  # a resumed run starts part-way

        def on_log(self, args, state, control, logs=None, **kw):
            if logs and "loss" in logs:
                self.bar.set_postfix(loss=f"{logs['loss']:.4g}")

        def on_step_end(self, args, state, control, **kw):
            self.bar.update(1)

    return StepLines()


def _tokens_at(checkpoint: str | None) -> int:
    """Tokens the interrupted run had seen when it saved `checkpoint` (0 for a fresh run)."""
    if checkpoint is None:
        return 0
    import json
    state = json.loads((Path(checkpoint) / "trainer_state.json").read_text())
    return int(state.get("num_input_tokens_seen", 0))
