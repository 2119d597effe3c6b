"""Find a named dataset split (local folder first, then the hub) or read a local text file.

A source is a list of documents plus how they are joined: "stream" sources (WikiText-2, PTB,
a .txt file) are joined and tokenised once; "documents" sources (C4, a .jsonl file) keep
their documents apart because calibration samples whole documents (docs/methods.md).
"""
from __future__ import annotations

import gzip
import json
import os
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import PrunekitError
from ..hub import hub_unreachable_reason


@dataclass
class TextSource:
    name: str
    split: str | None
    kind: str                 # "stream" | "documents"
    join: str                 # separator used when the documents are read as one text
    documents: list = field(repr=False)
    where: str = ""           # the file or hub dataset it came from

    def text(self) -> str:
        return self.join.join(self.documents)


@dataclass(frozen=True)
class NamedDataset:
    kind: str
    join: str
    splits: tuple
    local: dict               # split -> candidate relative paths, first found wins
    hub: tuple                # (path, config name, text field, data_files per split or None)


def _wikitext_rows(text: str) -> list[str]:
    # The raw files hold one HF row per line; blank lines are empty rows (data/README.md).
    return [line + "\n" if line.strip() else "" for line in text.split("\n")[:-1]]


DATASETS = {
    "wikitext2": NamedDataset(
        kind="stream", join="\n\n", splits=("train", "validation", "test"),
        local={s: (f"wikitext2/{s}.txt",) for s in ("train", "validation", "test")},
        hub=("wikitext", "wikitext-2-raw-v1", "text", None)),
    "ptb": NamedDataset(
        kind="stream", join=" ", splits=("train", "validation", "test"),
        local={s: (f"ptb/{s}.txt",) for s in ("train", "validation", "test")},
        hub=("ptb_text_only", "penn_treebank", "sentence", None)),
    "c4": NamedDataset(
        kind="documents", join=" ", splits=("train", "validation"),
        local={"train": ("c4/c4-train.00000-of-01024.json.gz", "c4/c4-train.00000-of-01024.first1000.jsonl.gz"),
               "validation": ("c4/c4-validation.00000-of-00008.json.gz", "c4/c4-validation.subset2000.jsonl.gz")},
        hub=("allenai/c4", None, "text", {"train": "en/c4-train.00000-of-01024.json.gz",
                                          "validation": "en/c4-validation.00000-of-00008.json.gz"})),
}


def default_data_dir() -> str | None:
    return os.environ.get("PRUNEKIT_DATA_DIR") or None


def parse_data_spec(spec: str, default_split: str) -> tuple[str, str | None]:
    """'c4' -> ('c4', default split); 'wikitext2:validation' -> explicit split; paths pass through."""
    if spec in DATASETS:
        return spec, default_split
    name, sep, split = spec.partition(":")
    if sep and name in DATASETS:
        if split not in DATASETS[name].splits:
            raise PrunekitError(f"dataset {name} has no split '{split}': choose from {', '.join(DATASETS[name].splits)}")
        return name, split
    return spec, None


def _read_lines_file(path: Path) -> str:
    opener = gzip.open if path.suffix == ".gz" else open
    with _as_text(path), opener(path, "rt", encoding="utf-8") as f:
        return f.read()


@contextmanager
def _as_text(path: Path):
    """A binary file given as text data: one line, not a UnicodeDecodeError traceback."""
    try:
        yield
    except UnicodeDecodeError as e:
        raise PrunekitError(f"{path}: not UTF-8 text (undecodable byte at offset {e.start}); is it a binary file?") from None
    except (gzip.BadGzipFile, EOFError) as e:
        raise PrunekitError(f"{path}: not a readable gzip file ({e})") from None


def _read_jsonl(path: Path, field_name: str = "text") -> list[str]:
    opener = gzip.open if path.suffix == ".gz" else open
    docs = []
    with _as_text(path), opener(path, "rt", encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise PrunekitError(f"{path}: line {n} is not JSON ({e.msg})") from e
            if not isinstance(row, dict) or field_name not in row:
                raise PrunekitError(f"{path}: line {n} has no '{field_name}' field")
            if not isinstance(row[field_name], str):
                raise PrunekitError(f"{path}: line {n}: '{field_name}' is a {type(row[field_name]).__name__}, "
                                    "not a string")
            docs.append(row[field_name])
    return docs


def _local_named(name: str, split: str, data_dir: str) -> TextSource | None:
    ds = DATASETS[name]
    for rel in ds.local.get(split, ()):
        path = Path(data_dir) / rel
        if not path.is_file():
            continue
        if name == "wikitext2":
            docs = _wikitext_rows(_read_lines_file(path))
        elif name == "ptb":
            docs = [line.strip() for line in _read_lines_file(path).split("\n") if line.strip()]
        else:
            docs = _read_jsonl(path)
        return TextSource(name, split, ds.kind, ds.join, docs, where=str(path))
    return None


def _hub_named(name: str, split: str) -> TextSource:
    import datasets as hf_datasets

    ds = DATASETS[name]
    path, config, text_field, data_files = ds.hub
    kwargs = {"split": split}
    if data_files:
        kwargs["data_files"] = {split: data_files[split]}
    rows = hf_datasets.load_dataset(path, config, **kwargs)
    return TextSource(name, split, ds.kind, ds.join, list(rows[text_field]), where=f"hub:{path}")


def load_file(path: str) -> TextSource:
    p = Path(path).expanduser()
    if p.is_dir():
        raise PrunekitError(f"{path} is a folder: give a .txt or .jsonl file")
    if not p.is_file():
        raise PrunekitError(f"data file not found: {path}")
    suffixes = "".join(p.suffixes[-2:]) if p.suffix == ".gz" else p.suffix
    if suffixes in (".jsonl", ".jsonl.gz", ".json.gz"):
        docs = _read_jsonl(p)
        src = TextSource(p.name, None, "documents", " ", docs, where=str(p))
    elif suffixes in (".txt", ".txt.gz"):
        src = TextSource(p.name, None, "stream", "", [_read_lines_file(p)], where=str(p))
    else:
        raise PrunekitError(f"unsupported data file {path}: use a .txt or .jsonl file")
    if not any(d.strip() for d in src.documents):
        raise PrunekitError(f"data file {path} is empty")
    return src


def check_source_spec(spec: str, default_split: str) -> tuple[str, str | None]:
    """(dataset name, split), or (file path, None): an unknown name, a split the dataset lacks or a
    file that does not exist is refused here, before anything is read."""
    name, split = parse_data_spec(spec, default_split)
    if name not in DATASETS:
        if Path(name).expanduser().exists():
            return name, None
        if "." in Path(name).name:
            raise PrunekitError(f"data file not found: {name}")
        raise PrunekitError(f"unknown dataset '{spec}': use one of {', '.join(DATASETS)} or a .txt/.jsonl file")
    if split not in DATASETS[name].splits:
        raise PrunekitError(f"dataset {name} has no split '{split}': choose from {', '.join(DATASETS[name].splits)}")
    return name, split


def load_source(spec: str, default_split: str, data_dir: str | None = None) -> TextSource:
    """A named dataset ('c4', 'wikitext2:validation') or a local .txt/.jsonl file."""
    name, split = check_source_spec(spec, default_split)
    if split is None:
        return load_file(name)
    data_dir = data_dir or default_data_dir()
    looked = []
    if data_dir:
        src = _local_named(name, split, data_dir)
        if src is not None:
            return src
        looked.append(" or ".join(str(Path(data_dir) / r) for r in DATASETS[name].local[split]))
    else:
        looked.append("no --data-dir / PRUNEKIT_DATA_DIR given")
    reason = hub_unreachable_reason()
    try:
        if reason:
            raise ConnectionError(reason)
        return _hub_named(name, split)
    except Exception as e:  # datasets raises many types when offline or missing
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise PrunekitError(
            f"dataset {name} ({split}) not found: looked in {looked[0]} and on the Hugging Face hub ({reason[:160]})"
        ) from e
