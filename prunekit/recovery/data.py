"""Training data for recovery: packed causal-LM windows or Alpaca instruction examples.

Named datasets and .txt / text .jsonl files are tokenised as one stream (documents separated by
EOS) and cut into non-overlapping windows of `seqlen` tokens, every token a target. A .jsonl in
Alpaca form (instruction, input, output) becomes one example per row with the Stanford Alpaca
prompt template, as LLM-Pruner and Shortened-LLM train; the prompt tokens get label -100 so only
the response is learned (their train_on_inputs=False). The evaluation sets are refused: training
on the text that perplexity is measured on would make the result meaningless.
"""
from __future__ import annotations

import gzip
import hashlib
import json
import math
import random
from dataclasses import dataclass, field
from pathlib import Path

from ..data.sources import DATASETS, default_data_dir, load_source, parse_data_spec
from ..errors import PrunekitError

IGNORE = -100     # the label cross-entropy skips

# (dataset, split) pairs prunekit evaluates on (eval/ppl.py); never training data
EVALUATION_SPLITS = {("wikitext2", "test"), ("ptb", "test"), ("c4", "validation")}

# Stanford Alpaca's template (tatsu-lab/stanford_alpaca), used by LLM-Pruner and Shortened-LLM
PROMPT_WITH_INPUT = ("Below is an instruction that describes a task, paired with an input that provides further "
                     "context. Write a response that appropriately completes the request.\n\n"
                     "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n")
PROMPT_NO_INPUT = ("Below is an instruction that describes a task. Write a response that appropriately completes "
                   "the request.\n\n### Instruction:\n{instruction}\n\n### Response:\n")


@dataclass
class TrainingData:
    train: list = field(repr=False)          # [{"input_ids": [...], "labels": [...]}]
    validation: list = field(repr=False)
    info: dict = field(default_factory=dict)


def alpaca_prompt(row: dict) -> str:
    if row.get("input", "").strip():
        return PROMPT_WITH_INPUT.format(instruction=row["instruction"], input=row["input"])
    return PROMPT_NO_INPUT.format(instruction=row["instruction"])


def alpaca_example(tokenizer, row: dict, seqlen: int) -> dict:
    """Prompt and response tokenised apart and joined, so the prompt/response boundary is exact;
    truncated to `seqlen` (an EOS cut off by the truncation is not re-added, as in the papers)."""
    prompt = tokenizer(alpaca_prompt(row), return_attention_mask=False)["input_ids"]
    answer = tokenizer(row["output"], add_special_tokens=False, return_attention_mask=False)["input_ids"]
    if tokenizer.eos_token_id is not None:
        answer = answer + [tokenizer.eos_token_id]
    ids = (prompt + answer)[:seqlen]
    labels = ([IGNORE] * len(prompt) + answer)[:seqlen]
    return {"input_ids": ids, "labels": labels}


# ---------------------------------------------------------------- evaluation data is refused

def _content_hash(path: Path) -> str:
    opener = gzip.open if path.suffix == ".gz" else open
    h = hashlib.sha256()
    with opener(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def evaluation_files(data_dir: str | None) -> list[Path]:
    """The data folder's evaluation files: perplexity test splits and the zero-shot task files."""
    if not data_dir:
        return []
    root = Path(data_dir)
    files = [root / rel for name, split in sorted(EVALUATION_SPLITS) for rel in DATASETS[name].local.get(split, ())]
    files += sorted((root / "tasks").glob("**/*.jsonl*"))
    return [f for f in files if f.is_file()]


def _in_evaluation_layout(path: Path) -> bool:
    """True for a file sitting where a data folder keeps an evaluation file (wikitext2/test.txt,
    tasks/boolq/validation.jsonl, ...), even when no --data-dir names that folder."""
    rels = [rel for name, split in EVALUATION_SPLITS for rel in DATASETS[name].local.get(split, ())]
    if any(path.as_posix().endswith("/" + rel) for rel in rels):
        return True
    parts = path.parts
    return len(parts) >= 3 and parts[-3] == "tasks" and _is_jsonl(path)


def refuse_evaluation_data(spec: str, data_dir: str | None) -> None:
    """One-line error when `spec` names an evaluation split or is (a copy of) an evaluation file."""
    name, split = parse_data_spec(spec, "train")
    if (name, split) in EVALUATION_SPLITS:
        raise PrunekitError(f"{name}:{split} is an evaluation set and cannot be training data: use a train split")
    path = Path(spec).expanduser()
    if split is not None or not path.is_file():
        return
    resolved = path.resolve()
    if _in_evaluation_layout(resolved):
        raise PrunekitError(f"{spec} is an evaluation file of a prunekit data folder: it cannot be training data")
    evals = evaluation_files(data_dir)
    for f in evals:
        if f.resolve() == resolved:
            raise PrunekitError(f"{spec} is the evaluation file {f}: it cannot be training data")
    digest = _content_hash(resolved) if evals else None
    for f in evals:
        if _content_hash(f) == digest:
            raise PrunekitError(f"{spec} has the same content as the evaluation file {f}: it cannot be training data")


# ---------------------------------------------------------------- reading

def _read_rows(path: Path) -> list[dict]:
    opener = gzip.open if path.suffix == ".gz" else open
    rows = []
    with opener(path, "rt", encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise PrunekitError(f"{path}: line {n} is not JSON ({e.msg})") from e
    if not rows:
        raise PrunekitError(f"data file {path} is empty")
    return rows


def _is_jsonl(path: Path) -> bool:
    name = path.name.lower()
    return name.endswith((".jsonl", ".jsonl.gz", ".json.gz"))


def _alpaca_rows(path: Path) -> list[dict] | None:
    """The rows when the file is in Alpaca form, None when it is plain text rows."""
    rows = _read_rows(path)
    if "instruction" not in rows[0]:
        return None
    for n, row in enumerate(rows, 1):
        if not isinstance(row.get("instruction"), str) or not isinstance(row.get("output"), str):
            raise PrunekitError(f"{path}: row {n} lacks a string 'instruction' or 'output' (Alpaca form)")
    return rows


def _packed_windows(tokenizer, documents: list[str], seqlen: int, want: int | None) -> list[dict]:
    """Documents tokenised in order, each followed by EOS, cut into windows of seqlen until `want`."""
    eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    rest, windows = [], []
    for doc in documents:
        if not doc.strip():
            continue
        stream = rest + tokenizer(doc, return_attention_mask=False, verbose=False)["input_ids"] + eos
        full = len(stream) // seqlen * seqlen
        windows += [stream[s:s + seqlen] for s in range(0, full, seqlen)]
        rest = stream[full:]
        if want is not None and len(windows) >= want:
            break
    windows = windows[:want] if want is not None else windows
    return [{"input_ids": w, "labels": list(w)} for w in windows]


VAL_MIN, VAL_MAX = 4, 64     # a validation loss of one window is noise; of thousands, a slow evaluation


def held_out_count(total: int, fraction: float) -> int:
    """round(fraction x total), at least VAL_MIN (never over a quarter of the data), at most VAL_MAX."""
    return max(1, min(VAL_MAX, max(min(VAL_MIN, total // 4), round(fraction * total))))


def _split(examples: list, config, rng: random.Random) -> tuple[list, list]:
    if len(examples) < 2:
        raise PrunekitError(f"{len(examples)} training example(s): need at least 2 (one is held out for validation)")
    held = config.val_windows or held_out_count(len(examples), config.val_fraction)
    if held >= len(examples):
        raise PrunekitError(f"--val-windows {held} leaves no training example of {len(examples)}")
    order = list(range(len(examples)))
    rng.shuffle(order)
    return [examples[i] for i in order[held:]], [examples[i] for i in order[:held]]


def examples_wanted(config) -> int | None:
    """Examples to prepare: enough for the steps plus the held-out slice (None: all)."""
    if config.max_examples:
        return config.max_examples
    if config.steps is None:
        return None
    train = config.steps * config.examples_per_step
    if config.val_windows:
        return train + config.val_windows
    held = min(VAL_MAX, max(VAL_MIN, math.ceil(train * config.val_fraction / (1 - config.val_fraction))))
    return train + held + 1


def build_training_data(spec: str, tokenizer, config, data_dir: str | None = None) -> TrainingData:
    """Training and held-out validation examples from a dataset name, NAME:SPLIT or a file."""
    data_dir = data_dir or default_data_dir()
    refuse_evaluation_data(spec, data_dir)
    want = examples_wanted(config)
    path = Path(spec).expanduser()
    alpaca = _alpaca_rows(path) if parse_data_spec(spec, "train")[1] is None and path.is_file() \
        and _is_jsonl(path) else None
    if alpaca is not None:
        examples = [alpaca_example(tokenizer, row, config.seqlen) for row in alpaca[:want]]
        kept = [e for e in examples if any(t != IGNORE for t in e["labels"])]
        info = {"dataset": path.name, "split": None, "where": str(path), "format": "alpaca",
                "rows": len(alpaca), "dropped_prompt_too_long": len(examples) - len(kept)}
        examples = kept
        if not kept:
            raise PrunekitError(f"{path}: every Alpaca prompt fills the cutoff of {config.seqlen} tokens: "
                                f"raise --seqlen")
    else:
        source = load_source(spec, "train", data_dir)
        examples = _packed_windows(tokenizer, source.documents if source.kind == "documents" else [source.text()],
                                   config.seqlen, want)
        info = {"dataset": source.name, "split": source.split, "where": source.where, "format": "packed"}
        if not examples:
            raise PrunekitError(f"{source.where or spec}: shorter than one training window of {config.seqlen} tokens")
    train, validation = _split(examples, config, random.Random(config.seed))
    info.update(seqlen=config.seqlen, train_examples=len(train), validation_examples=len(validation),
                train_tokens=sum(len(e["input_ids"]) for e in train),
                train_target_tokens=sum(sum(t != IGNORE for t in e["labels"]) for e in train))
    return TrainingData(train, validation, info)
