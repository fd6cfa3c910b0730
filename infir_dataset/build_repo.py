"""`infir build-repo`: turn InF-IR records into a Hub dataset repo folder (Parquet shards + README with YAML configs).

Layout written under DIR (the same as `push_to_hub` makes, so `load_dataset(DIR)` and the Hub viewer read it):
  data/<split>-NNNNN-of-NNNNN.parquet        default config, one split per source (+ `<source>_holdout`)
  triplets/{positive,hard_negative}-*.parquet long-form triplets of the training splits
  provenance/<split>-*.parquet               generator, judge, prompt version and verdicts, keyed by id
  README.md                                  dataset card with YAML metadata and statistics
  rejects.jsonl                              every record left out, with its origin and reasons (never uploaded)

Memory stays bounded whatever the size of the inputs: they are read a batch at a time, valid records are spilled to
sorted runs on disk (`sorted_runs`), and only compact keys stay in memory (ids and 16-byte digests to order, deduplicate
and split the records, contamination bits, word counts); the shards are then written as they fill, in one pass over
the runs. Rejected records go to rejects.jsonl as they are found.
"""

import argparse
import hashlib
import itertools
import json
import os
import shutil
import sys
import tempfile
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .decontaminate import CHECKED_FIELDS, NGRAM, NgramIndex, contamination_mask, load_eval_texts, masked_fields
from .dedup import deduplicate_keys, row_digests
from .parquet_shards import ROW_GROUP_ROWS, ShardWriter
from .records import InputError, Origin, iter_rows, to_record
from .schema import HAND_WRITTEN, PROVENANCE_FEATURES, RECORD_FEATURES, RECORD_FIELDS, TRIPLET_FEATURES
from .sorted_runs import Run, RunWriter, gather, in_order, scan
from .validate import (
    EDIT_ALLOWANCE_WORDS,
    INSTRUCTION_WORDS,
    LENGTH_TOLERANCE,
    MAX_CHARS,
    MAX_EDIT_SHARE,
    PASSAGE_WORDS,
    PROVENANCE_STRINGS,
    QUERY_WORDS,
    SPLIT_NAME,
    reason_code,
    validate,
)

SHARD_ROWS = 100_000
READ_BATCH_ROWS = 10_000
HOLDOUT_SUFFIX = "_holdout"
REJECTS = "rejects.jsonl"
RUNS = ".runs"  # the spilled records, inside the build's temporary folder
OWNED = ("data", "triplets", "provenance", "README.md", REJECTS)
CARD_TEMPLATE = "dataset_card.md.jinja"
CONFIG_FOLDERS = {"default": "data", "triplets": "triplets", "provenance": "provenance"}
TAGS = ["instruction-following", "information-retrieval", "hard-negatives", "synthetic", "embeddings", "infir"]
# `license: other` must say which terms (the Hub's card spec): by default those of the MS MARCO passages the rows
# are written from, which allow non-commercial research use only.
MSMARCO_LICENSE_NAME = "ms-marco"
MSMARCO_LICENSE_LINK = "https://microsoft.github.io/msmarco/"


class BuildError(Exception):
    """The inputs were read but no repo can be built from them (e.g. no record survived validation)."""


@dataclass
class BuildStats:
    """What `build_repo` wrote and left out; the dataset card's statistics table is rendered from it."""

    out_dir: str
    input_rows: int = 0
    rows_per_split: dict[str, int] = field(default_factory=dict)
    triplet_rows: dict[str, int] = field(default_factory=dict)
    provenance_rows: int = 0
    rejected: int = 0
    rejection_reasons: dict[str, int] = field(default_factory=dict)
    duplicates: dict[str, int] = field(default_factory=dict)
    contaminated: int = 0
    contaminated_fields: dict[str, int] = field(default_factory=dict)
    eval_texts: int = 0
    decontaminated_against: list[str] = field(default_factory=list)
    holdout_fraction: float = 0.0
    sources: list[str] = field(default_factory=list)
    holdout_splits: list[str] = field(default_factory=list)
    word_lengths: dict[str, dict[str, float]] = field(default_factory=dict)
    judge_verdicts: dict[str, int] = field(default_factory=dict)

    @property
    def kept(self) -> int:
        return sum(self.rows_per_split.values())


# A spilled row: the record's columns, then its provenance's (null for a record without provenance).
_PROVENANCE_SCHEMA = pa.schema([f.with_nullable(True) for f in PROVENANCE_FEATURES.arrow_schema])
_PROVENANCE_COLUMNS = ("generator_model", "judge_model", "prompt_version", "verdicts")
_SPILL_SCHEMA = pa.schema([*RECORD_FEATURES.arrow_schema, *(_PROVENANCE_SCHEMA.field(c) for c in _PROVENANCE_COLUMNS)])
_RECORD_COLUMNS = RECORD_FEATURES.arrow_schema.names
_SEPARATOR = "\x1f"


class _Rejects:
    """rejects.jsonl, a line per record left out as soon as it is; the first one is kept for the error message."""

    def __init__(self, path: Path):
        self._file = path.open("w", encoding="utf-8")
        self.first: dict | None = None

    def add(self, entry: dict) -> None:
        self.first = self.first or entry
        self._file.write(json.dumps(entry, ensure_ascii=False, default=str) + "\n")

    def close(self) -> None:
        self._file.close()


@dataclass
class _Keys:
    """What stays in memory of each valid record once it is spilled, by input order (about 150 bytes a record)."""

    ids: pa.Array
    source: np.ndarray  # index into `sources`
    sources: list[str]
    given: np.ndarray  # read from a `--holdout` input
    held_out: np.ndarray  # given, or chosen by `--holdout-fraction`
    exact: np.ndarray  # dedup keys (`dedup.row_digests`)
    near: np.ndarray
    contaminated: np.ndarray  # a bit per field of CHECKED_FIELDS, for records that are not given held out
    has_provenance: np.ndarray
    origin: np.ndarray  # (index into `origins`, line, row, index into `origins` of the split), -1 for none
    origins: list[str]

    def origin_of(self, row: int) -> dict:
        file, line, number, split = (int(v) for v in self.origin[row])
        return Origin(
            self.origins[file],
            line=line if line >= 0 else None,
            row=number if number >= 0 else None,
            split=self.origins[split] if split >= 0 else None,
        ).as_dict()


class _Spiller:
    """Turns batches of valid records into their keys and sorted runs. (Not on a thread of its own beside the
    validation: both are mostly Python, and the GIL made that slower than one after the other, with the
    decontamination's Arrow work spread over the cores.)"""

    def __init__(self, runs: RunWriter, index: NgramIndex | None, holdout_fraction: float):
        self.runs, self.index, self.fraction = runs, index, holdout_fraction
        self.ids = [pa.array([], pa.string())]
        self.parts: dict[str, list[np.ndarray]] = {
            "source": [np.zeros(0, np.int32)],
            "given": [np.zeros(0, bool)],
            "held_out": [np.zeros(0, bool)],
            "exact": [np.zeros(0, "S16")],
            "near": [np.zeros(0, "S16")],
            "contaminated": [np.zeros(0, np.uint16)],
            "has_provenance": [np.zeros(0, bool)],
            "origin": [np.zeros((0, 4), np.int64)],
        }
        self.sources: dict[str, int] = {}
        self.origins: dict[str, int] = {}

    def finish(self) -> tuple[_Keys, list[Run]]:
        keys = _Keys(
            ids=pa.chunked_array(self.ids).combine_chunks(),
            sources=list(self.sources),
            origins=list(self.origins),
            **{name: np.concatenate(parts) for name, parts in self.parts.items()},
        )
        return keys, self.runs.close()

    def _code(self, names: dict[str, int], name: str | None) -> int:
        return -1 if name is None else names.setdefault(name, len(names))

    def add(self, records: list[dict], provenance: list[dict], origins: list[Origin], given: list[bool]) -> None:
        table = pa.Table.from_pylist(records, schema=RECORD_FEATURES.arrow_schema)
        prov = pa.Table.from_pylist(provenance, schema=_PROVENANCE_SCHEMA)
        rows = pa.Table.from_arrays(
            [*table.columns, *(prov[c] for c in _PROVENANCE_COLUMNS)], schema=_SPILL_SCHEMA
        ).combine_chunks()
        ids = rows["id"].combine_chunks()
        given_flags = np.array(given, dtype=bool)
        chosen = np.array([self.fraction > 0 and is_holdout(i, self.fraction) for i in ids.to_pylist()], dtype=bool)
        held_out = given_flags | chosen
        source = np.array([self._code(self.sources, s) for s in rows["source"].to_pylist()], dtype=np.int32)
        exact, near = row_digests(table)
        contaminated = np.zeros(len(rows), dtype=np.uint16)
        if self.index is not None and not given_flags.all():
            checked = np.flatnonzero(~given_flags)
            contaminated[checked] = contamination_mask(table.take(checked), self.index)
        origin = np.array(
            [
                (
                    self._code(self.origins, o.file),
                    -1 if o.line is None else o.line,
                    -1 if o.row is None else o.row,
                    self._code(self.origins, o.split),
                )
                for o in origins
            ],
            dtype=np.int64,
        )
        self.ids.append(ids)
        for name, value in (
            ("source", source),
            ("given", given_flags),
            ("held_out", held_out),
            ("exact", exact),
            ("near", near),
            ("contaminated", contaminated),
            ("has_provenance", pc.is_valid(rows["generator_model"]).to_numpy(zero_copy_only=False)),
            ("origin", origin),
        ):
            self.parts[name].append(value)
        # Within a run, rows in the order of the output: split, given held-out rows first, id (see `_splits`).
        splits = pc.binary_join_element_wise(rows["source"], pa.array(np.where(held_out, HOLDOUT_SUFFIX, "")), "")
        self.runs.add(rows, pa.table({"split": splits, "not_given": ~given_flags, "id": ids}))


def _content_digests(rows: pa.Table) -> np.ndarray:
    keys = _sort_keys(rows)
    columns = [keys[name] for name in keys.column_names if name != "id"]
    joined = pc.binary_join_element_wise(*columns, _SEPARATOR, null_handling="replace", null_replacement="\x00")
    return np.array([hashlib.blake2b(t.encode(), digest_size=16).digest() for t in joined.to_pylist()], dtype="S16")


def _read(
    inputs: Sequence[str | os.PathLike],
    source: str,
    stats: BuildStats,
    rejects: _Rejects,
    spiller: _Spiller,
    holdout_from: int,
) -> tuple[_Keys, list[Run]]:
    """Validate every input row: invalid ones go to rejects.jsonl, valid ones to `spiller` a batch at a time.
    Rows of `inputs[holdout_from:]` are marked as given held out."""
    records, provenance, origins, given = [], [], [], []
    reasons_count: Counter[str] = Counter()
    for number, path in enumerate(inputs):
        for raw in iter_rows(path):
            stats.input_rows += 1
            reasons = validate(raw.data)
            if reasons:
                rejects.add({**raw.origin.as_dict(), "stage": "validate", "reasons": reasons, "record": raw.data})
                reasons_count.update({reason_code(r) for r in reasons})
                stats.rejected += 1
                continue
            record, prov = to_record(raw, source)
            records.append(record)
            provenance.append(prov or {"id": record["id"], "source": record["source"]})
            origins.append(raw.origin)
            given.append(number >= holdout_from)
            if len(records) == READ_BATCH_ROWS:
                spiller.add(records, provenance, origins, given)
                records, provenance, origins, given = [], [], [], []
    if records:
        spiller.add(records, provenance, origins, given)
    stats.rejection_reasons = dict(sorted(reasons_count.items()))
    return spiller.finish()


def _holdout_texts(paths: Sequence[str | os.PathLike]) -> Iterator[str]:
    """The checked fields of the valid rows of the `--holdout` inputs: evaluation texts for the other rows."""
    for path in paths:
        for raw in iter_rows(path):
            if not validate(raw.data):
                yield from (raw.data[name] for name in CHECKED_FIELDS)


def _eval_index(
    decontaminate: Sequence[str | os.PathLike], holdout: Sequence[str | os.PathLike], stats: BuildStats
) -> NgramIndex | None:
    if not decontaminate and not holdout:
        return None
    index = NgramIndex.from_texts(itertools.chain(load_eval_texts(decontaminate), _holdout_texts(holdout)))
    stats.eval_texts = index.texts
    stats.decontaminated_against = [Path(p).name for p in (*decontaminate, *holdout)]
    _release_memory()
    return index


def _sort_keys(rows: pa.Table) -> pa.Table:
    """Id, content, source and provenance of spilled rows, as sort keys (the verdicts as one string each)."""
    verdicts = rows["verdicts"].combine_chunks()
    items = verdicts.values
    verdict_text = pc.binary_join_element_wise(
        items.field("check"), pc.cast(items.field("passed"), pa.string()), items.field("reason"), _SEPARATOR
    )
    return pa.table(
        {
            **{name: rows[name] for name in ("id", *RECORD_FIELDS, "source")},
            **{f"provenance.{name}": rows[name] for name in PROVENANCE_STRINGS},
            "provenance.verdicts": pc.binary_join(
                pa.ListArray.from_arrays(verdicts.offsets, verdict_text, mask=verdicts.is_null()), "\x1e"
            ),
        }
    )


def _dedup_order(keys: _Keys, runs: list[Run]) -> np.ndarray:
    """Valid records in the order in which dedup keeps the first of a group, independent of input order: given
    held-out records first, then on id, content, source and provenance (records without provenance last), ties in
    input order. Only records that share an id are read back for this, and only those whose content differs are
    sorted on it."""
    n = len(keys.ids)
    not_given = ~keys.given
    by_id = pa.table({"not_given": not_given, "id": keys.ids, "input": np.arange(n)})
    order = pc.sort_indices(by_id, sort_keys=[(name, "ascending") for name in by_id.column_names]).to_numpy().copy()
    if n < 2:
        return order
    ids = keys.ids.take(order)
    same = pc.equal(ids[1:], ids[:-1]).to_numpy(zero_copy_only=False) & (not_given[order][1:] == not_given[order][:-1])
    shared = np.concatenate([same, [False]]) | np.concatenate([[False], same])  # positions in a group of two or more
    if not shared.any():
        return order
    content = np.zeros(n, dtype="S16")
    for rows, table in scan(runs, order[shared]):
        content[rows] = _content_digests(table)
    group = np.concatenate([[0], np.cumsum(~same)])
    first = np.flatnonzero(np.concatenate([[True], ~same]))
    content = content[order]
    differs = np.isin(group, group[content != content[first[group]]])
    if differs.any():
        rows = order[differs]
        full = _sort_keys(gather(runs, rows))
        table = pa.table(
            {"not_given": not_given[rows], **{name: full[name] for name in full.column_names}, "input": rows}
        )
        sort_keys = [(name, "ascending", "at_end") for name in table.column_names]
        order[differs] = rows[pc.sort_indices(table, sort_keys=sort_keys).to_numpy()]
    return order


def _dedup(keys: _Keys, order: np.ndarray, stats: BuildStats, rejects: _Rejects) -> np.ndarray:
    """The rows of `order` that are no duplicate of an earlier one."""
    result = deduplicate_keys(keys.ids.take(order), keys.exact[order], keys.near[order])
    for position, code, kept_id in result.removed:
        row = int(order[position])
        reason = f"{code}: of {kept_id}"
        rejects.add({**keys.origin_of(row), "stage": "dedup", "id": keys.ids[row].as_py(), "reasons": [reason]})
    stats.duplicates = result.counts()
    return order[result.keep]


def _decontaminate(keys: _Keys, order: np.ndarray, n: int, stats: BuildStats, rejects: _Rejects) -> np.ndarray:
    """The rows of `order` that share no `n`-gram with the evaluation texts (given held-out rows are the evaluation)."""
    masks = keys.contaminated[order]
    by_field: Counter[str] = Counter()
    for row, mask in zip(order[masks > 0], masks[masks > 0], strict=True):
        fields = masked_fields(int(mask))
        by_field.update(fields)
        reason = f"contaminated: {', '.join(fields)} share a {n}-token sequence with the evaluation texts"
        rejects.add(
            {
                **keys.origin_of(int(row)),
                "stage": "decontaminate",
                "id": keys.ids[int(row)].as_py(),
                "reasons": [reason],
            }
        )
    stats.contaminated = int(np.count_nonzero(masks))
    stats.contaminated_fields = dict(sorted(by_field.items()))
    return order[masks == 0]


def _where(reject: dict) -> str:
    """`file:line` (JSONL), or `file:split:row` / `file:row` (Parquet, dataset) of a rejected row."""
    place = [reject["file"], reject.get("split"), reject.get("line", reject.get("row"))]
    return ":".join(str(p) for p in place if p is not None)


def _release_memory() -> None:
    """Hand memory freed by the last step back to the OS: Arrow's allocator otherwise keeps it, and NumPy's
    allocations cannot reuse it, so the peak would be the sum of both."""
    pa.default_memory_pool().release_unused()


def is_holdout(record_id: str, fraction: float) -> bool:
    """Deterministic held-out membership: the id's SHA-256 read as a number in [0, 1) is below `fraction`."""
    return int.from_bytes(hashlib.sha256(record_id.encode()).digest()[:8], "big") / 2**64 < fraction


@dataclass
class _Splits:
    """Kept rows in output order: by split name, then as dedup ordered them (given held-out rows first, then id).
    `bounds[split]` are its positions [a, b) in that order."""

    order: np.ndarray
    bounds: dict[str, tuple[int, int]]
    held_out: set[str]


def _splits(keys: _Keys, kept: np.ndarray, stats: BuildStats) -> _Splits:
    pairs = keys.source[kept].astype(np.int64) * 2 + keys.held_out[kept]  # (source, held out) as one code
    codes, inverse = np.unique(pairs, return_inverse=True)
    names = [keys.sources[code // 2] + (HOLDOUT_SUFFIX if code % 2 else "") for code in codes]
    held_names = {name for name, code in zip(names, codes, strict=True) if code % 2}
    if clash := held_names & {name for name, code in zip(names, codes, strict=True) if not code % 2}:
        raise BuildError(f"source {min(clash)!r} would share its split with held-out rows; rename that source")
    split_names = sorted(names)  # the order in which the card and the Hub list the splits
    split_of = np.array([split_names.index(name) for name in names])[inverse]
    counts = np.bincount(split_of, minlength=len(split_names))
    ends = np.cumsum(counts)
    bounds = {name: (int(end - count), int(end)) for name, count, end in zip(split_names, counts, ends, strict=True)}
    stats.sources = sorted({keys.sources[code // 2] for code in codes})
    stats.holdout_splits = sorted(held_names)
    # Stable: within a split, rows stay in dedup order (ids are unique by now, so: given held-out rows first, then id).
    return _Splits(kept[np.argsort(split_of, kind="stable")], bounds, held_names)


def _triplets(records: pa.Table, instruction: str, query: str, passage: str, kind: str) -> pa.Table:
    columns = [records["id"], records[instruction], records[query], records[passage], pa.array([kind] * len(records))]
    return pa.Table.from_arrays(columns, schema=TRIPLET_FEATURES.arrow_schema)


def _hard_negatives(records: pa.Table) -> pa.Table:
    """Each record's two poisoned triplets side by side: (I-, Q+, HN1), then (I+, Q-, HN2)."""
    first = _triplets(
        records, "instruction_negative", "query_positive", "hard_negative_document_1", "instruction_negative"
    )
    second = _triplets(records, "instruction_positive", "query_negative", "hard_negative_document_2", "query_negative")
    n = len(records)
    return pa.concat_tables([first, second]).take(np.arange(2 * n).reshape(2, n).T.ravel())


@dataclass
class _Written:
    """What `_write` wrote: (rows, Arrow bytes) per config and split; the generators, judges and prompt versions of
    the rows; their passing verdicts per check; and the words of each text field per row, in output order."""

    sizes: dict[str, dict[str, tuple[int, int]]]
    models: dict[str, list[str]]
    verdicts: dict[str, int]
    words: dict[str, np.ndarray]


def _write(keys: _Keys, runs: list[Run], splits: _Splits, folder: Path, shard_rows: int) -> _Written:
    """All shards, in one pass over the runs in output order. What describes the rows in the card is counted on the
    way, while the shards' row groups are encoded on their own threads."""
    writers: dict[str, dict[str, ShardWriter]] = {"default": {}, "triplets": {}, "provenance": {}}
    record_schema, provenance_schema = RECORD_FEATURES.arrow_schema, PROVENANCE_FEATURES.arrow_schema
    training = 0
    for name, (a, b) in splits.bounds.items():
        writers["default"][name] = ShardWriter(folder / "data", name, b - a, shard_rows, record_schema)
        training += 0 if name in splits.held_out else b - a
        with_provenance = int(np.count_nonzero(keys.has_provenance[splits.order[a:b]]))
        if with_provenance:
            writers["provenance"][name] = ShardWriter(
                folder / "provenance", name, with_provenance, shard_rows, provenance_schema
            )
    if training:
        schema = TRIPLET_FEATURES.arrow_schema
        writers["triplets"]["positive"] = ShardWriter(folder / "triplets", "positive", training, shard_rows, schema)
        writers["triplets"]["hard_negative"] = ShardWriter(
            folder / "triplets", "hard_negative", 2 * training, shard_rows, schema
        )
    positions = np.full(len(keys.ids), -1, dtype=np.int64)
    positions[splits.order] = np.arange(len(splits.order))
    models: dict[str, set[str]] = {"generators": set(), "judges": set(), "prompt_versions": set()}
    columns = {"generators": "generator_model", "judges": "judge_model", "prompt_versions": "prompt_version"}
    verdicts: Counter[str] = Counter()
    words: dict[str, list[np.ndarray]] = {name: [] for name in RECORD_FIELDS}
    for start, window in zip(itertools.count(0, ROW_GROUP_ROWS), in_order(runs, positions, ROW_GROUP_ROWS)):
        for name, (a, b) in splits.bounds.items():
            low, high = max(a, start), min(b, start + len(window))
            if low >= high:
                continue
            rows = window.slice(low - start, high - low)
            writers["default"][name].add(rows.select(_RECORD_COLUMNS))
            if name in writers["provenance"]:
                writers["provenance"][name].add(
                    rows.filter(pc.is_valid(rows["generator_model"])).select(provenance_schema.names)
                )
            if name not in splits.held_out:
                writers["triplets"]["positive"].add(
                    _triplets(rows, "instruction_positive", "query_positive", "document_positive", "positive")
                )
                writers["triplets"]["hard_negative"].add(_hard_negatives(rows))
            for key, column in columns.items():
                models[key].update(pc.unique(rows[column].drop_null()).to_pylist())
            verdicts.update(_passed_checks(rows))
            for field_name, counts in _word_counts(rows).items():
                words[field_name].append(counts)
    sizes = {
        config: {split: (writer.total, writer.close()) for split, writer in config_writers.items()}
        for config, config_writers in writers.items()
        if config_writers
    }
    return _Written(
        sizes,
        {key: sorted(values) for key, values in models.items()},
        dict(sorted(verdicts.items())),
        {name: np.concatenate(parts) for name, parts in words.items()},
    )


def _word_counts(table: pa.Table) -> dict[str, np.ndarray]:
    """Whitespace-separated words of every text field, per row."""
    return {
        name: pc.list_value_length(pc.utf8_split_whitespace(pc.utf8_trim_whitespace(table[name])))
        .to_numpy(zero_copy_only=False)
        .astype(np.int32)
        for name in RECORD_FIELDS
    }


def _length_summary(counts: dict[str, np.ndarray]) -> dict[str, dict[str, float]]:
    return {
        name: {
            "min": int(c.min()),
            "mean": round(float(c.mean()), 1),
            "median": float(np.median(c)),
            "p95": float(np.percentile(c, 95)),
            "max": int(c.max()),
        }
        for name, c in counts.items()
    }


def _passed_checks(provenance: pa.Table) -> dict[str, int]:
    """For each judge check in the provenance, how many rows carry a passing verdict of it."""
    verdicts = pc.list_flatten(provenance["verdicts"])
    passed = verdicts.filter(pc.struct_field(verdicts, "passed"))
    counts = pc.value_counts(pc.struct_field(passed, "check")).to_pylist()
    return {c["values"]: c["counts"] for c in sorted(counts, key=lambda c: c["values"])}


def _size_category(n: int) -> str:
    for limit, label in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")):
        if n < limit:
            return label
    return "1M<n<10M"


def _card(
    stats: BuildStats, sizes: dict[str, dict[str, tuple[int, int]]], models: dict[str, list[str]], **meta: str
) -> str:
    """README.md: YAML metadata (with `configs` and `dataset_info` as `push_to_hub` writes them) and the card.
    `sizes[config][split]` is (rows, Arrow bytes)."""
    from datasets import DatasetInfo, SplitDict, SplitInfo
    from datasets.info import DatasetInfosDict
    from huggingface_hub import DatasetCardData

    from hub_cards import render

    features = {"default": RECORD_FEATURES, "triplets": TRIPLET_FEATURES, "provenance": PROVENANCE_FEATURES}
    configs, infos = [], DatasetInfosDict()
    for name, splits in sizes.items():
        files = [{"split": s, "path": f"{CONFIG_FOLDERS[name]}/{s}-*"} for s in splits]
        configs.append({"config_name": name, **({"default": True} if name == "default" else {}), "data_files": files})
        split_infos = SplitDict()
        for s, (rows, nbytes) in splits.items():
            split_infos.add(SplitInfo(name=s, num_bytes=nbytes, num_examples=rows))
        size = sum(nbytes for _, nbytes in splits.values())
        infos[name] = DatasetInfo(features=features[name], splits=split_infos, dataset_size=size)
    card_data = DatasetCardData(
        language=["en"],
        license=meta["license"],
        license_name=meta["license_name"],
        license_link=meta["license_link"],
        task_categories=["text-retrieval"],
        task_ids=["document-retrieval"],
        size_categories=[_size_category(stats.kept)],
        pretty_name=meta["pretty_name"],
        tags=TAGS,
        configs=configs,
    )
    infos.to_dataset_card_data(card_data)
    return render(
        CARD_TEMPLATE,
        card_yaml=card_data.to_yaml(),
        pretty_name=meta["pretty_name"],
        repo_id=meta["repo_id"],
        license=meta["license"],
        license_name=meta["license_name"],
        license_link=meta["license_link"],
        msmarco_terms=meta["license_link"] == MSMARCO_LICENSE_LINK,
        stats=stats,
        sources=stats.sources,
        holdout_splits=stats.holdout_splits,
        train_splits=[s for s in stats.rows_per_split if s not in stats.holdout_splits],
        has_provenance="provenance" in sizes,
        ngram=NGRAM,
        length_bounds=[
            ("instructions", INSTRUCTION_WORDS, MAX_CHARS["instruction"]),
            ("queries", QUERY_WORDS, MAX_CHARS["query"]),
            ("passages", PASSAGE_WORDS, MAX_CHARS["passage"]),
        ],
        hand_written=HAND_WRITTEN if HAND_WRITTEN in models["generators"] else None,
        edit_rules={"share": MAX_EDIT_SHARE, "words": EDIT_ALLOWANCE_WORDS, "length": LENGTH_TOLERANCE},
        **models,
    )


def _install(tmp: Path, out: Path) -> None:
    """Replace the builder's own entries of `out` with the freshly built ones; other files (e.g. .git) stay."""
    out.mkdir(parents=True, exist_ok=True)
    for name in OWNED:
        old = out / name
        if old.is_dir():
            shutil.rmtree(old)
        elif old.exists():
            old.unlink()
        if (tmp / name).exists():
            os.replace(tmp / name, old)


def build_repo(
    inputs: Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    *,
    decontaminate: Sequence[str | os.PathLike] = (),
    holdout: Sequence[str | os.PathLike] = (),
    holdout_fraction: float = 0.0,
    source: str = "msmarco",
    shard_rows: int = SHARD_ROWS,
    license: str = "other",
    license_name: str | None = None,
    license_link: str | None = None,
    pretty_name: str = "InF-IR",
    repo_id: str = "InF-IR/InF-IR",
) -> BuildStats:
    """Validate, deduplicate and decontaminate the records of `inputs`, and write the dataset repo to `out_dir`.

    `source` names the split of rows that carry no `source` of their own. Rows of `holdout` go to `<source>_holdout`
    splits as given, and the other rows are decontaminated against them too. Raises `InputError` for an unreadable
    input and `BuildError` when nothing is left to write; in both cases `out_dir` is left as it was.
    `license="other"` without `license_name` and `license_link` means MS MARCO's terms.
    """
    if not SPLIT_NAME.match(source):
        raise BuildError(f"--source {source!r} is not a valid split name (letters, digits, underscores)")
    if not 0.0 <= holdout_fraction < 1.0:
        raise BuildError(f"--holdout-fraction must be in [0, 1), got {holdout_fraction}")
    if shard_rows < 1:
        raise BuildError(f"--shard-rows must be >= 1, got {shard_rows}")
    out = Path(out_dir)
    stats = BuildStats(out_dir=str(out), holdout_fraction=holdout_fraction)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-build-", dir=out.parent))
    rejects = _Rejects(tmp / REJECTS)
    try:
        index = _eval_index(decontaminate, holdout, stats)
        spiller = _Spiller(RunWriter(tmp / RUNS), index, holdout_fraction)
        keys, runs = _read([*inputs, *holdout], source, stats, rejects, spiller, holdout_from=len(inputs))
        _release_memory()
        kept = _dedup(keys, _dedup_order(keys, runs), stats, rejects)
        if index is not None:
            kept = _decontaminate(keys, kept, index.n, stats, rejects)
        rejects.close()
        if not len(kept):
            reasons = ", ".join(f"{k} {v}" for k, v in {**stats.rejection_reasons, **stats.duplicates}.items() if v)
            first = rejects.first
            where = f"; first: {_where(first)}: {first['reasons'][0]}" if first else ""
            raise BuildError(
                f"no record left to write out of {stats.input_rows} input rows ({reasons or 'no rows'}){where}"
            )
        splits = _splits(keys, kept, stats)
        written = _write(keys, runs, splits, tmp, shard_rows)
        sizes = written.sizes
        stats.judge_verdicts, stats.word_lengths = written.verdicts, _length_summary(written.words)
        stats.rows_per_split = {name: rows for name, (rows, _) in sizes["default"].items()}
        stats.triplet_rows = {name: rows for name, (rows, _) in sizes.get("triplets", {}).items()}
        stats.provenance_rows = sum(rows for rows, _ in sizes.get("provenance", {}).values())
        if license == "other" and not (license_name or license_link):
            license_name, license_link = MSMARCO_LICENSE_NAME, MSMARCO_LICENSE_LINK
        meta = {"license": license, "license_name": license_name, "license_link": license_link}
        meta |= {"pretty_name": pretty_name, "repo_id": repo_id}
        (tmp / "README.md").write_text(_card(stats, sizes, written.models, **meta), encoding="utf-8")
        _install(tmp, out)
    finally:
        rejects.close()
        shutil.rmtree(tmp, ignore_errors=True)
    return stats


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "build-repo",
        help="build a Hub dataset repo folder (Parquet shards + dataset card) from InF-IR records",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--input",
        nargs="+",
        action="extend",
        required=True,
        metavar="FILE",
        help="records: .jsonl or .parquet files, a generation output folder, a dataset repo folder, or a Hub id",
    )
    parser.add_argument("--out", required=True, metavar="DIR", help="the dataset repo folder to write")
    parser.add_argument(
        "--decontaminate",
        nargs="+",
        action="extend",
        default=[],
        metavar="FILE",
        help=f"evaluation texts (JSONL/Parquet with text/query/passage fields, or an mteb-layout folder); "
        f"records sharing a {NGRAM}-token sequence with them are dropped",
    )
    parser.add_argument(
        "--holdout",
        nargs="+",
        action="extend",
        default=[],
        metavar="FILE",
        help="held-out records, kept apart as `<source>_holdout` splits; the other records are decontaminated "
        "against them",
    )
    parser.add_argument(
        "--holdout-fraction",
        type=float,
        default=0.0,
        metavar="F",
        help="fraction of records (chosen by id hash) moved to `<source>_holdout` splits for evaluation",
    )
    parser.add_argument(
        "--source", default="msmarco", help="source (split name) of rows without one (default: msmarco)"
    )
    parser.add_argument("--shard-rows", type=int, default=SHARD_ROWS, help=f"rows per Parquet shard ({SHARD_ROWS})")
    parser.add_argument(
        "--license",
        default="other",
        help="license in the card metadata (default: other, with MS MARCO's non-commercial research terms)",
    )
    parser.add_argument("--license-name", help=f"with --license other: the terms' short name ({MSMARCO_LICENSE_NAME})")
    parser.add_argument("--license-link", help=f"with --license other: where the terms are ({MSMARCO_LICENSE_LINK})")
    parser.add_argument("--pretty-name", default="InF-IR", help="dataset name shown on the Hub")
    parser.add_argument("--repo-id", default="InF-IR/InF-IR", help="Hub id used in the card's usage snippets")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        stats = build_repo(
            args.input,
            args.out,
            decontaminate=args.decontaminate,
            holdout=args.holdout,
            holdout_fraction=args.holdout_fraction,
            source=args.source,
            shard_rows=args.shard_rows,
            license=args.license,
            license_name=args.license_name,
            license_link=args.license_link,
            pretty_name=args.pretty_name,
            repo_id=args.repo_id,
        )
    except (InputError, BuildError) as e:
        print(f"infir: error: {e}", file=sys.stderr)
        return 1
    splits = ", ".join(f"{name} {rows:,}" for name, rows in stats.rows_per_split.items())
    removed = sum(stats.duplicates.values())
    print(f"wrote {stats.out_dir}: {stats.kept:,} records of {stats.input_rows:,} ({splits})")
    print(
        f"left out: {stats.rejected:,} invalid, {removed:,} duplicates, {stats.contaminated:,} contaminated"
        f" (details in {Path(stats.out_dir) / REJECTS})"
    )
    return 0
