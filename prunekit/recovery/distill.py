"""The Trainer of a distillation run: the student's loss is lm, kd or their mix
(solvers/distill.py), the frozen teacher runs on the same batch in evaluation mode, and the
logs carry each term and the top-1 agreement with the teacher, for training steps and held-out
evaluations alike (the teacher-agreement curves of recovery_loss.png).

With a top-k teacher (--kd-topk) the teacher runs once, before training, over every training and
held-out example, and its summaries (k log-probabilities, their ids, the log tail mass: 12 k + 4
bytes a token) ride in the examples; the teacher is then freed, so training holds one model.
A full-vocabulary summary would be 4 V bytes a token, so that teacher runs online instead."""
from __future__ import annotations

import time

import torch

from ..solvers.distill import kd_per_token, lm_per_token, next_token_targets, teacher_summary


class _Meter:
    """Sums over target tokens since the last log line."""

    def __init__(self):
        self.sums, self.tokens = {}, 0

    def add(self, parts: dict, tokens: int) -> None:
        for k, v in parts.items():
            self.sums[k] = self.sums.get(k, 0.0) + float(v)
        self.tokens += tokens

    def take(self, prefix: str = "") -> dict:
        means = {f"{prefix}{k}": v / max(self.tokens, 1) for k, v in self.sums.items()}
        self.sums, self.tokens = {}, 0
        return means


@torch.no_grad()
def cache_teacher(teacher, rows: list, temperature: float, topk: int, device, progress: bool = True) -> list:
    """Copies of `rows` with the teacher's top-k summary of each example's positions."""
    from ..progress import steps
    out = []
    for row in steps(rows, "teacher top-k", "example", enabled=progress):
        ids = torch.tensor([row["input_ids"]], device=device)
        top, idx, tail = teacher_summary(teacher(input_ids=ids, use_cache=False).logits, temperature, topk)
        out.append({**row, "teacher_top": top[0].cpu(), "teacher_idx": idx[0].int().cpu(), "teacher_tail": tail[0].cpu()})
    return out


def distill_trainer_class():
    from transformers import Trainer

    class DistillTrainer(Trainer):
        def __init__(self, *args, teacher, loss: str, temperature: float, kd_weight: float, kd_topk: int, **kw):
            super().__init__(*args, **kw)
            self.teacher = teacher.to(self.args.device) if teacher is not None else None   # None: cached
            self.kd = dict(loss=loss, temperature=temperature, weight=kd_weight, topk=kd_topk)
            self.meters = {"train": _Meter(), "eval": _Meter()}
            self.teacher_s = 0.0          # wall time of the teacher's forwards while training
            self.loss_is_scaled_for_ga = True    # compute_loss divides by the whole step's target tokens

        def _teacher_logits(self, inputs, training: bool) -> torch.Tensor:
            start = time.perf_counter()
            with torch.no_grad():
                logits = self.teacher(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"],
                                      use_cache=False).logits
            if training:
                if logits.is_cuda:
                    torch.cuda.synchronize()
                self.teacher_s += time.perf_counter() - start
            return logits

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            labels = inputs["labels"]
            outputs = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"], use_cache=False)
            logits = outputs.logits
            targets = next_token_targets(labels)
            if "teacher_top" in inputs:
                summary = (inputs["teacher_top"], inputs["teacher_idx"].long(), inputs["teacher_tail"])
                teacher_top1 = summary[1][..., 0]
            else:
                teacher = self._teacher_logits(inputs, model.training)
                summary = teacher_summary(teacher, self.kd["temperature"], self.kd["topk"])
                teacher_top1 = teacher.argmax(-1)
            lm = lm_per_token(logits, labels)
            kd = kd_per_token(summary, logits, self.kd["temperature"]) * targets
            w = {"lm": 0.0, "kd": 1.0, "kd+lm": self.kd["weight"]}[self.kd["loss"]]
            per_token = w * kd + (1 - w) * lm
            n = int(targets.sum())
            agree = ((teacher_top1 == logits.argmax(-1)) & targets).sum()
            self.meters["train" if model.training else "eval"].add(
                {"lm": lm.detach().sum(), "kd": kd.detach().sum(), "agreement": agree}, n)
            if model.training and num_items_in_batch is not None:
                loss = per_token.sum() / num_items_in_batch      # the whole step's targets, as the lm loss does
            else:
                loss = per_token.sum() / max(n, 1)
                if model.training:
                    loss = loss / self.current_gradient_accumulation_steps
            return (loss, {"logits": logits}) if return_outputs else loss

        def log(self, logs, *args, **kwargs):
            if "loss" in logs:
                logs.update(self.meters["train"].take())
            if "eval_loss" in logs:
                logs.update(self.meters["eval"].take("eval_"))
            return super().log(logs, *args, **kwargs)

    return DistillTrainer
