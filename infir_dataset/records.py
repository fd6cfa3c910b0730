"""Read InF-IR rows from JSONL or Parquet files, a local dataset-repo folder, or a Hub dataset id.

Every row comes with its `Origin` (file and line, or split and row) so that a rejected record can be traced back.
A file that cannot be parsed raises `InputError`, whose message names the file and line.
"""

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .jsonl import InputError, read_jsonl
from .local_cache import cache_dir_for
from .schema import RECORD_FIELDS, record_id

JSONL_SUFFIXES = (".jsonl", ".ndjson", ".json")
PARQUET_SUFFIXES = (".parquet",)
HUB_ID = re.compile(r"^[\w.-]+/[\w.-]+$")
BATCH_ROWS = 4096


@dataclass(slots=True)
class Origin:
    """Where a row came from: a 1-based `line` of a JSONL file, or a 0-based `row` of a Parquet file or split."""

    file: str
    line: int | None = None
    row: int | None = None
    split: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            k: v
            for k, v in (("file", self.file), ("split", self.split), ("line", self.line), ("row", self.row))
            if v is not None
        }


@dataclass(slots=True)
class RawRow:
    """One input row as read, before validation; `origin.split` is the dataset split it came from, if any."""

    data: dict[str, Any]
    origin: Origin


def _iter_jsonl(path: Path) -> Iterator[RawRow]:
    for n, data in read_jsonl(path):
        yield RawRow(data, Origin(str(path), line=n))


def _iter_parquet(path: Path) -> Iterator[RawRow]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
        row = 0
        for batch in parquet.iter_batches(batch_size=BATCH_ROWS):
            for data in batch.to_pylist():
                yield RawRow(data, Origin(str(path), row=row))
                row += 1
    except (pa.ArrowException, OSError) as e:
        raise InputError(path, f"cannot read Parquet: {e}") from None


def _iter_dataset(name: str) -> Iterator[RawRow]:
    """All splits of a dataset's default config (a Hub id or a local repo folder); the split name is the source.
    Provenance rows are found by id, and read (from `datasets`' memory-mapped cache) only when their record is."""
    import datasets

    try:
        cache_dir = cache_dir_for(name)
        splits = datasets.load_dataset(name, cache_dir=cache_dir)
        configs = datasets.get_dataset_config_names(name)
        if "provenance" in configs:
            provenance = list(datasets.load_dataset(name, "provenance", cache_dir=cache_dir).values())
        else:
            provenance = []
    except Exception as e:  # datasets raises many types (FileNotFoundError, ConnectionError, DatasetNotFoundError...)
        raise InputError(name, f"cannot load dataset: {type(e).__name__}: {e}") from None
    where: dict[str, tuple[int, int]] = {}  # id -> (provenance split, row): not the rows, which can be millions
    for number, split in enumerate(provenance):
        row = 0
        for table in split.select_columns(["id"]).with_format("arrow").iter(batch_size=BATCH_ROWS):
            for rid in table["id"].to_pylist():
                where[rid] = (number, row)
                row += 1
    for split, dataset in splits.items():
        row = 0
        for table in dataset.with_format("arrow").iter(batch_size=BATCH_ROWS):
            for data in table.to_pylist():
                if data.get("id") in where:
                    number, at = where[data["id"]]
                    prov = provenance[number][at]
                    data["provenance"] = {k: v for k, v in prov.items() if k not in ("id", "source")}
                yield RawRow(data, Origin(name, row=row, split=split))
                row += 1


def iter_rows(path: str | os.PathLike) -> Iterator[RawRow]:
    """Rows of one input: a .jsonl/.parquet file, a folder (a generation output or a dataset repo), or a Hub id."""
    p = Path(path)
    if p.is_dir():
        if (p / "records.jsonl").is_file() and not (p / "README.md").is_file():
            return _iter_jsonl(p / "records.jsonl")
        return _iter_dataset(str(p))
    if p.is_file():
        suffix = p.suffix.lower()
        if suffix in JSONL_SUFFIXES:
            return _iter_jsonl(p)
        if suffix in PARQUET_SUFFIXES:
            return _iter_parquet(p)
        raise InputError(p, "unknown file type (expected .jsonl or .parquet)")
    if p.suffix.lower() in JSONL_SUFFIXES + PARQUET_SUFFIXES:  # a mistyped file path, e.g. gen/records.jsonl
        raise InputError(path, "no such file")
    if HUB_ID.match(str(path)):
        return _iter_dataset(str(path))
    raise InputError(path, "no such file or folder, and not a Hub dataset id (ORG/NAME)")


def to_record(raw: RawRow, default_source: str) -> tuple[dict[str, str], dict[str, Any] | None]:
    """A validated row as (record with `id`, `source` and the seven fields, provenance row or None).

    The source is the row's own, else the split it came from, else `default_source`; a missing id is
    `record_id(source, query_positive, document_positive)`, as the generator derives it.
    """
    data = raw.data
    source = data.get("source") or raw.origin.split or default_source
    rid = data.get("id") or record_id(source, data["query_positive"], data["document_positive"])
    record = {"id": rid, "source": source, **{f: data[f] for f in RECORD_FIELDS}}
    prov = data.get("provenance")
    if prov is None:
        return record, None
    verdicts = [
        {"check": v["check"], "passed": v["passed"], "reason": v.get("reason") or ""} for v in prov.get("verdicts", [])
    ]
    provenance = {
        "id": rid,
        "source": source,
        "generator_model": prov["generator_model"],
        "judge_model": prov["judge_model"],
        "prompt_version": prov["prompt_version"],
        "verdicts": verdicts,
    }
    return record, provenance
