"""Write a prunekit output folder: a normal Hugging Face checkpoint plus its report, atomically."""
from __future__ import annotations

import json
from pathlib import Path

from .atomic import atomic_dir, atomic_write_text, check_output_dir, json_text, write_json

REPORT_NAME = "prunekit_report.json"

__all__ = ["REPORT_NAME", "atomic_dir", "check_output_dir", "write_json", "save_checkpoint", "read_report",
           "update_report"]


def save_checkpoint(model, tokenizer, report: dict | None, out, overwrite: bool = False, extra=None) -> Path:
    """A normal Hugging Face checkpoint (safetensors, tokenizer, the modeling file of models with
    per-layer widths) plus prunekit_report.json; `extra(folder)` may add files (plots) before the
    folder is moved into place."""
    with atomic_dir(out, overwrite) as tmp:
        if extra is not None:
            extra(tmp)
        model.save_pretrained(tmp, safe_serialization=True)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        if report is not None:
            write_json(tmp / REPORT_NAME, report)
    return Path(out)


def read_report(folder) -> dict | None:
    p = Path(folder) / REPORT_NAME
    return json.loads(p.read_text()) if p.is_file() else None


def update_report(folder, updates: dict) -> None:
    """Merge results into a prunekit output folder's report (one atomic file write)."""
    p = Path(folder) / REPORT_NAME
    report = json.loads(p.read_text())
    for key, value in updates.items():
        if isinstance(value, dict) and isinstance(report.get(key), dict):
            report[key].update(value)
        else:
            report[key] = value
    atomic_write_text(p, json_text(report))
