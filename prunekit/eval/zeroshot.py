"""Zero-shot accuracy through lm-evaluation-harness, used as a library.

With a data folder (`--data-dir` / $PRUNEKIT_DATA_DIR, laid out as shared/data/tasks), each
task's local file is converted to the schema of the Hugging Face dataset lm-eval expects, and a
task YAML is written next to it that `include`s lm-eval's own task definition and only swaps the
data source (prompt, choices and metrics stay lm-eval's). The same folder works with lm-eval's
command line (`lm_eval --include_path DIR --tasks pk_boolq ...`), which is how prunekit's numbers
are checked against lm-eval's own. Without a data folder, lm-eval's tasks load from the hub.
"""
from __future__ import annotations

import gzip
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..data.sources import default_data_dir
from ..errors import PrunekitError
from ..hub import hub_unreachable_reason

# the depth papers' average: acc for these, acc_norm for the others
ACC_TASKS = ("boolq", "piqa", "winogrande", "arc_easy")
NORM_TASKS = ("hellaswag", "arc_challenge", "openbookqa")
DEFAULT_TASKS = ("boolq", "piqa", "hellaswag", "winogrande", "arc_easy", "arc_challenge", "openbookqa")


def _boolq(d):
    label = d["label"]
    if isinstance(label, str):
        label = {"true": 1, "false": 0}[label.strip().lower()]
    return {"question": d["question"], "passage": d["passage"], "idx": d.get("idx"), "label": int(label)}


def _piqa(d):
    return {"goal": d["goal"], "sol1": d["sol1"], "sol2": d["sol2"], "label": int(d["label"])}


def _hellaswag(d):
    # the local file is already preprocessed with ctx_a and ctx_b joined; lm-eval rebuilds
    # ctx_a + " " + ctx_b.capitalize() and strips it, so an empty ctx_b gives back ctx
    return {"ind": d.get("ind"), "activity_label": d["activity_label"], "ctx_a": d["ctx"], "ctx_b": "",
            "ctx": d["ctx"], "endings": d["endings"], "label": str(d["label"])}


def _winogrande(d):
    return {"sentence": d["sentence"], "option1": d["option1"], "option2": d["option2"], "answer": str(d["answer"])}


def _ai2(d):
    choices = d["question"]["choices"]
    return {"id": d["id"], "stem": d["question"]["stem"],
            "choices": {"text": [c["text"] for c in choices], "label": [c["label"] for c in choices]},
            "answerKey": d["answerKey"]}


def _arc(d):
    a = _ai2(d)
    return {"id": a["id"], "question": a["stem"], "choices": a["choices"], "answerKey": a["answerKey"]}


def _openbookqa(d):
    a = _ai2(d)
    return {"id": a["id"], "question_stem": a["stem"], "choices": a["choices"], "answerKey": a["answerKey"]}


@dataclass(frozen=True)
class LocalTask:
    file: str                      # path inside the data folder
    split: str                     # the split lm-eval evaluates
    convert: Callable[[dict], dict]


LOCAL_TASKS = {
    "boolq": LocalTask("tasks/boolq/validation.jsonl", "validation", _boolq),
    "piqa": LocalTask("tasks/piqa/validation.jsonl", "validation", _piqa),
    "hellaswag": LocalTask("tasks/hellaswag/validation.jsonl", "validation", _hellaswag),
    "winogrande": LocalTask("tasks/winogrande/validation.jsonl", "validation", _winogrande),
    "arc_easy": LocalTask("tasks/arc_easy/test.jsonl", "test", _arc),
    "arc_challenge": LocalTask("tasks/arc_challenge/test.jsonl", "test", _arc),
    "openbookqa": LocalTask("tasks/openbookqa/test.jsonl", "test", _openbookqa),
}
LOCAL_PREFIX = "pk_"


def parse_tasks(spec: str) -> list[str]:
    tasks = [t.strip() for t in spec.split(",") if t.strip()]
    unknown = [t for t in tasks if t not in LOCAL_TASKS]
    if unknown or not tasks:
        raise PrunekitError(f"unknown zero-shot task(s) {', '.join(unknown) or '(none)'}: choose from {', '.join(LOCAL_TASKS)}")
    return tasks


def _read_jsonl(path: Path) -> list[dict]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def write_local_tasks(tasks: list[str], data_dir: str, out_dir: str | Path) -> dict[str, str]:
    """Convert the local task files and write one lm-eval task YAML per task into out_dir.
    Returns {task: lm-eval task name}. Idempotent for the same inputs."""
    import lm_eval.tasks as lmt

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    manager = lmt.TaskManager()
    names = {}
    for task in tasks:
        spec = LOCAL_TASKS[task]
        src = Path(data_dir) / spec.file
        if not src.is_file():
            raise PrunekitError(f"zero-shot task {task}: {src} not found")
        entry = manager._entry(task)
        if entry is None or entry.yaml_path is None:
            raise PrunekitError(f"lm-eval {lmt.__name__} has no task named {task}")
        rows = [spec.convert(d) for d in _read_jsonl(src)]
        data = out / f"{task}.{spec.split}.jsonl"
        data.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
        name = LOCAL_PREFIX + task
        splits = {"training_split": "null", "validation_split": "null", "test_split": "null"}
        splits[f"{spec.split}_split"] = spec.split
        yaml = [f"include: {Path(entry.yaml_path).resolve()}", f"task: {name}", "tag: []",
                "dataset_path: json", "dataset_name: null",
                "dataset_kwargs:", "  data_files:", f"    {spec.split}: {data.resolve()}",
                *(f"{k}: {v}" for k, v in splits.items()), "fewshot_split: null"]
        (out / f"{name}.yaml").write_text("\n".join(yaml) + "\n")
        names[task] = name
    return names


def local_tasks_dir(tasks: list[str], data_dir: str) -> tuple[Path, dict[str, str]]:
    """A cached folder of converted task files, keyed by the task files' contents."""
    from ..models.loading import cache_dir
    import lm_eval

    h = hashlib.sha256(lm_eval.__version__.encode())
    for t in sorted(tasks):
        p = Path(data_dir) / LOCAL_TASKS[t].file
        h.update(t.encode())
        if p.is_file():
            st = p.stat()
            h.update(f"{p.resolve()}|{st.st_size}|{int(st.st_mtime)}".encode())
    folder = cache_dir() / "lm-eval-tasks" / h.hexdigest()[:16]
    return folder, write_local_tasks(tasks, data_dir, folder)


def zero_shot(model, tokenizer, tasks: list[str], data_dir: str | None = None, limit: int | None = None,
              batch_size: int = 8, device: str = "cpu", progress: bool = True) -> dict:
    """lm-eval's zero-shot accuracy of an in-memory model: per task acc (and acc_norm where
    lm-eval has it), and the depth papers' average."""
    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    data_dir = data_dir or default_data_dir()
    if data_dir and all((Path(data_dir) / LOCAL_TASKS[t].file).is_file() for t in tasks):
        folder, names = local_tasks_dir(tasks, data_dir)
        manager, source = TaskManager(include_path=str(folder)), f"local: {data_dir}/tasks (converted in {folder})"
    else:
        reason = hub_unreachable_reason()
        if reason:
            raise PrunekitError(f"zero-shot task data not found in {data_dir or '(no --data-dir given)'} and the hub "
                                f"is out of reach ({reason[:120]})")
        names, manager, source = {t: t for t in tasks}, TaskManager(), "hub (lm-eval's dataset_path)"
    was = next(model.parameters()).device
    lm = HFLM(pretrained=model.to(device), tokenizer=tokenizer, batch_size=batch_size, device=device)
    try:
        out = lm_eval.simple_evaluate(model=lm, tasks=list(names.values()), task_manager=manager, limit=limit,
                                      num_fewshot=0, log_samples=False, bootstrap_iters=0,
                                      verbosity="ERROR")
    finally:
        model.to(was)
    per_task = {}
    for task, name in names.items():
        r = out["results"][name]
        row = {"acc": r["acc,none"]}
        if "acc_norm,none" in r:
            row["acc_norm"] = r["acc_norm,none"]
        row["examples"] = int(out["n-samples"][name]["effective"])
        row["metric"] = "acc_norm" if task in NORM_TASKS and "acc_norm" in row else "acc"
        per_task[task] = row
    avg = sum(r[r["metric"]] for r in per_task.values()) / len(per_task)
    return {"tasks": per_task, "average": avg, "average_rule": "acc for boolq, piqa, winogrande, arc_easy; "
            "acc_norm for hellaswag, arc_challenge, openbookqa", "limit": limit, "source": source,
            "lm_eval": lm_eval.__version__, "num_fewshot": 0}


def average_stderr(result: dict) -> float:
    """Standard error of the average accuracy, from each task's accuracy and example count (the
    sample standard error lm-eval reports per task, p(1-p)/(n-1), combined as independent means).
    At 50 examples per task it is about 0.026: averages closer than twice that are not told apart."""
    tasks = result["tasks"].values()
    var = sum(t[t["metric"]] * (1 - t[t["metric"]]) / max(t["examples"] - 1, 1) for t in tasks)
    return var ** 0.5 / len(result["tasks"])
