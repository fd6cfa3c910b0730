"""`infir build-repo`: turn InF-IR records into a Hub dataset repo folder (Parquet shards + README with YAML configs).

Layout written under DIR (the same as `push_to_hub` makes, so `load_dataset(DIR)` and the Hub viewer read it):
  data/<split>-NNNNN-of-NNNNN.parquet        default config, one split per source (+ `<source>_holdout`)
  triplets/{positive,hard_negative}-*.parquet long-form triplets of the training splits
  provenance/<split>-*.parquet               generator, judge, prompt version and verdicts, keyed by id
  README.md                                  dataset card with YAML metadata and statistics
  rejects.jsonl                              every record left out, with its origin and reasons (never uploaded)
"""

import argparse
import hashlib
import itertools
import json
import math
import os
import shutil
import sys
import tempfile
from collections import Counter
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .decontaminate import CHECKED_FIELDS, NGRAM, NgramIndex, contaminated_fields, load_eval_texts
from .dedup import deduplicate
from .records import InputError, Origin, iter_rows, to_record
from .schema import HAND_WRITTEN, PROVENANCE_FEATURES, RECORD_FEATURES, RECORD_FIELDS, TRIPLET_FEATURES
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
# Row groups of 10k rows stay well under the 100 MB that `datasets` aims at, for the Hub viewer's random access.
ROW_GROUP_ROWS = 10_000
HOLDOUT_SUFFIX = "_holdout"
REJECTS = "rejects.jsonl"
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


@dataclass
class _Rows:
    """Valid records as Arrow tables in input order (provenance aligned, null where a record has none),
    their origins, and `index`: the rows still kept, in output order."""

    records: pa.Table
    provenance: pa.Table
    origins: list[Origin]
    index: np.ndarray
    given_holdout: np.ndarray  # bool per record, in input order: read from a `--holdout` input

    def columns(self, names: Sequence[str]) -> pa.Table:
        return pa.table({name: self.records[name].take(self.index) for name in names})


# Provenance rows are collected next to every record; a record without provenance gets nulls, dropped at the end.
_PROVENANCE_SCHEMA = pa.schema([f.with_nullable(True) for f in PROVENANCE_FEATURES.arrow_schema])


def _read(
    inputs: Sequence[str | os.PathLike], source: str, stats: BuildStats, rejects: list[dict], holdout_from: int
) -> _Rows:
    """Validate every input row; valid ones go to Arrow batches so that Python objects never hold the whole corpus.
    Rows of `inputs[holdout_from:]` are marked as held out."""
    batches, prov_batches, origins, given_holdout = [], [], [], []
    records, provenance = [], []
    reasons_count: Counter[str] = Counter()

    def flush() -> None:
        batches.append(pa.RecordBatch.from_pylist(records, schema=RECORD_FEATURES.arrow_schema))
        prov_batches.append(pa.RecordBatch.from_pylist(provenance, schema=_PROVENANCE_SCHEMA))
        records.clear()
        provenance.clear()

    for number, path in enumerate(inputs):
        for raw in iter_rows(path):
            stats.input_rows += 1
            reasons = validate(raw.data)
            if reasons:
                rejects.append({**raw.origin.as_dict(), "stage": "validate", "reasons": reasons, "record": raw.data})
                reasons_count.update({reason_code(r) for r in reasons})
                continue
            record, prov = to_record(raw, source)
            records.append(record)
            provenance.append(prov or {"id": record["id"], "source": record["source"]})
            origins.append(raw.origin)
            given_holdout.append(number >= holdout_from)
            if len(records) == READ_BATCH_ROWS:
                flush()
    flush()
    stats.rejected = len(rejects)
    stats.rejection_reasons = dict(sorted(reasons_count.items()))
    # One chunk per column: Arrow's `take` on a many-chunk column first concatenates the whole column.
    table = pa.Table.from_batches(batches).combine_chunks()
    provenance_table = pa.Table.from_batches(prov_batches).combine_chunks()
    batches.clear()
    prov_batches.clear()
    given = np.array(given_holdout, dtype=bool)
    # Given held-out rows first, so that dedup keeps them over a training row with the same id or triple.
    order = _input_independent_order(table, provenance_table)
    order = order[np.argsort(~given[order], kind="stable")]
    return _Rows(table, provenance_table, origins, order, given)


def _input_independent_order(records: pa.Table, provenance: pa.Table) -> np.ndarray:
    """Rows sorted on id, content, source and provenance (rows without provenance last), so that the output does
    not depend on input order and dedup keeps the same record of a repeated id: the one with provenance."""
    verdicts = provenance["verdicts"].combine_chunks()
    items = verdicts.values
    verdict_text = pc.binary_join_element_wise(
        items.field("check"), pc.cast(items.field("passed"), pa.string()), items.field("reason"), "\x1f"
    )
    keys = pa.table(
        {
            **{name: records[name] for name in ("id", *RECORD_FIELDS, "source")},
            **{f"provenance.{name}": provenance[name] for name in PROVENANCE_STRINGS},
            # Lists cannot be sort keys: the verdicts as one string each (null without provenance).
            "provenance.verdicts": pc.binary_join(
                pa.ListArray.from_arrays(verdicts.offsets, verdict_text, mask=verdicts.is_null()), "\x1e"
            ),
        }
    )
    return pc.sort_indices(keys, sort_keys=[(name, "ascending", "at_end") for name in keys.column_names]).to_numpy()


def _reject(rows: _Rows, position: int, stage: str, rid: str, reason: str) -> dict:
    return {**rows.origins[rows.index[position]].as_dict(), "stage": stage, "id": rid, "reasons": [reason]}


def _dedup(rows: _Rows, stats: BuildStats, rejects: list[dict]) -> None:
    result = deduplicate(rows.records, rows.index)
    for i, code, kept_id in result.removed:
        rid = rows.records["id"][int(rows.index[i])].as_py()
        rejects.append(_reject(rows, i, "dedup", rid, f"{code}: of {kept_id}"))
    stats.duplicates = result.counts()
    rows.index = rows.index[result.keep]


def _held_out(rows: _Rows) -> np.ndarray:
    """Which kept rows were given as held out (`--holdout`)."""
    return rows.given_holdout[rows.index]


def _held_out_texts(rows: _Rows, held_out: np.ndarray) -> Iterator[str]:
    chosen = rows.index[held_out]
    for name in CHECKED_FIELDS:
        yield from rows.records[name].take(chosen).to_pylist()


def _decontaminate(rows: _Rows, index: NgramIndex, stats: BuildStats, rejects: list[dict]) -> None:
    """Drop the training rows that overlap the evaluation texts; held-out rows are the evaluation, so stay."""
    held_out = _held_out(rows)
    overlaps: list[list[str]] = [[] for _ in range(len(rows.index))]
    checked = np.flatnonzero(~held_out)
    for start in range(0, len(checked), READ_BATCH_ROWS):  # a slice of the text at a time keeps memory flat
        positions = checked[start : start + READ_BATCH_ROWS]
        chunk = rows.index[positions]
        found = contaminated_fields(pa.table({f: rows.records[f].take(chunk) for f in CHECKED_FIELDS}), index)
        for position, fields in zip(positions, found, strict=True):
            overlaps[position] = fields
    by_field: Counter[str] = Counter()
    for i, fields in enumerate(overlaps):
        if fields:
            by_field.update(fields)
            rid = rows.records["id"][int(rows.index[i])].as_py()
            reason = f"contaminated: {', '.join(fields)} share a {index.n}-token sequence with the evaluation texts"
            rejects.append(_reject(rows, i, "decontaminate", rid, reason))
    stats.contaminated = sum(1 for fields in overlaps if fields)
    stats.contaminated_fields = dict(sorted(by_field.items()))
    rows.index = rows.index[np.array([not fields for fields in overlaps], dtype=bool)]


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


def _holdout_mask(ids: list[str], fraction: float) -> np.ndarray:
    return np.array([fraction > 0 and is_holdout(i, fraction) for i in ids], dtype=bool)


def _write_parquet(pieces: Iterator[pa.Table], schema: pa.Schema, path: Path) -> int:
    """Parquet as `datasets` writes it: features in the schema metadata, page index, content-defined chunking
    (so the Hub's Xet storage deduplicates re-uploads), one row group per piece. No timestamps: the same pieces
    give the same bytes. Returns the Arrow size of the rows written."""
    from datasets import config

    cdc = config.DEFAULT_CDC_OPTIONS
    nbytes = 0
    with pq.ParquetWriter(
        path, schema, compression="snappy", write_page_index=True, use_content_defined_chunking=cdc
    ) as writer:
        for piece in pieces:
            writer.write_table(piece, row_group_size=len(piece) or 1)
            nbytes += piece.nbytes
        writer.add_key_value_metadata({"content_defined_chunking": json.dumps(cdc)})
    return nbytes


@dataclass
class _Part:
    """One split: row i is row `order[i]` of `table` (single-chunk columns), cast to `schema`. With a second
    table, rows of the two alternate (a record's two poisoned triplets side by side). Rows are taken only when
    written, a row group at a time, so the corpus text is never copied whole."""

    table: pa.Table
    order: np.ndarray
    schema: pa.Schema
    alternate: pa.Table | None = None

    def __len__(self) -> int:
        return len(self.order) * (2 if self.alternate is not None else 1)

    def rows(self, start: int, stop: int) -> pa.Table:
        if self.alternate is None:
            return self.table.take(self.order[start:stop]).cast(self.schema)
        rows = np.arange(start, stop)
        first, second = rows[rows % 2 == 0] // 2, rows[rows % 2 == 1] // 2
        both = pa.concat_tables([self.table.take(self.order[first]), self.alternate.take(self.order[second])])
        back = np.argsort(np.concatenate([np.flatnonzero(rows % 2 == 0), np.flatnonzero(rows % 2 == 1)]))
        return both.take(back).cast(self.schema)


def _write_split(part: _Part, folder: Path, split: str, shard_rows: int) -> tuple[list[Path], int]:
    """Shards of at most `shard_rows` rows, one row group of at most ROW_GROUP_ROWS rows at a time; returns
    the paths and the split's size in Arrow bytes."""
    folder.mkdir(parents=True, exist_ok=True)
    shards = max(1, math.ceil(len(part) / shard_rows))
    paths, nbytes = [], 0
    for i in range(shards):
        path = folder / f"{split}-{i:05d}-of-{shards:05d}.parquet"
        start, stop = i * shard_rows, min((i + 1) * shard_rows, len(part))
        groups = range(start, max(stop, start + 1), ROW_GROUP_ROWS)
        nbytes += _write_parquet((part.rows(g, min(g + ROW_GROUP_ROWS, stop)) for g in groups), part.schema, path)
        paths.append(path)
    return paths, nbytes


def _triplet_parts(records: pa.Table, order: np.ndarray) -> dict[str, _Part]:
    """Long form of rows `order` of `records`: one positive triplet per record in split `positive`, and its two
    poisoned triplets side by side in split `hard_negative`."""
    schema = TRIPLET_FEATURES.arrow_schema
    n = len(records)

    def project(instruction: str, query: str, passage: str, kind: str) -> pa.Table:
        columns = [records["id"], records[instruction], records[query], records[passage], pa.array([kind] * n)]
        return pa.Table.from_arrays(columns, schema=schema)  # zero-copy: shares the records' buffers

    return {
        "positive": _Part(
            project("instruction_positive", "query_positive", "document_positive", "positive"), order, schema
        ),
        "hard_negative": _Part(
            project("instruction_negative", "query_positive", "hard_negative_document_1", "instruction_negative"),
            order,
            schema,
            alternate=project("instruction_positive", "query_negative", "hard_negative_document_2", "query_negative"),
        ),
    }


def _word_counts(table: pa.Table) -> dict[str, np.ndarray]:
    """Whitespace-separated words of every text field, per row (a slice at a time: token lists are large)."""
    counts: dict[str, list[np.ndarray]] = {name: [np.zeros(0, np.int64)] for name in RECORD_FIELDS}
    for batch in table.select(list(RECORD_FIELDS)).to_batches(max_chunksize=READ_BATCH_ROWS):
        for name in RECORD_FIELDS:
            words = pc.list_value_length(pc.utf8_split_whitespace(pc.utf8_trim_whitespace(batch.column(name))))
            counts[name].append(words.to_numpy().astype(np.int64))
    return {name: np.concatenate(parts) for name, parts in counts.items()}


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


def _write_rejects(rejects: list[dict], path: Path) -> None:
    with path.open("w", encoding="utf-8") as f:
        for row in rejects:
            f.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")


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
    rejects: list[dict] = []

    index = None
    if decontaminate and not holdout:  # else built once the held-out rows are read
        index = NgramIndex.from_texts(load_eval_texts(decontaminate))
        stats.eval_texts = index.texts
        stats.decontaminated_against = [Path(p).name for p in decontaminate]
        _release_memory()
    rows = _read([*inputs, *holdout], source, stats, rejects, holdout_from=len(inputs))
    _release_memory()
    if holdout:  # the held-out rows are evaluation texts for the rest
        held_out = _held_out(rows)
        texts = itertools.chain(load_eval_texts(decontaminate), _held_out_texts(rows, held_out))
        index = NgramIndex.from_texts(texts)
        stats.eval_texts = index.texts
        stats.decontaminated_against = [Path(p).name for p in (*decontaminate, *holdout)]
    # Word counts for the card are computed on another core while duplicates and contamination are found.
    with ThreadPoolExecutor(max_workers=1) as background:
        word_counts = background.submit(_word_counts, rows.records)
        _dedup(rows, stats, rejects)
        if index is not None:
            _decontaminate(rows, index, stats, rejects)
        counts = word_counts.result()
    _release_memory()
    if not len(rows.index):
        reasons = ", ".join(f"{k} {v}" for k, v in {**stats.rejection_reasons, **stats.duplicates}.items() if v)
        first = f"; first: {_where(rejects[0])}: {rejects[0]['reasons'][0]}" if rejects else ""
        message = f"no record left to write out of {stats.input_rows} input rows ({reasons or 'no rows'}){first}"
        raise BuildError(message)

    kept = rows.columns(("id", "source"))
    given = _held_out(rows)
    holdout = _holdout_mask(kept["id"].to_pylist(), holdout_fraction) | given
    split_of = np.char.add(np.array(kept["source"].to_pylist(), dtype=str), np.where(holdout, HOLDOUT_SUFFIX, ""))
    stats.sources = sorted(set(kept["source"].to_pylist()))
    stats.holdout_splits = sorted(set(split_of[holdout].tolist()))
    if clash := set(stats.holdout_splits) & set(split_of[~holdout].tolist()):
        raise BuildError(f"source {min(clash)!r} would share its split with held-out rows; rename that source")
    del kept
    by_split = np.argsort(split_of, kind="stable")  # stable: rows stay in id order within a split
    order, split_of, holdout = rows.index[by_split], split_of[by_split], holdout[by_split]
    stats.word_lengths = _length_summary({name: c[order] for name, c in counts.items()})

    names = sorted(set(split_of.tolist()))
    bounds = {name: (np.searchsorted(split_of, name), np.searchsorted(split_of, name, "right")) for name in names}
    parts: dict[str, dict[str, _Part]] = {
        "default": {
            name: _Part(rows.records, order[a:b], RECORD_FEATURES.arrow_schema) for name, (a, b) in bounds.items()
        }
    }
    training = order[~holdout]
    if len(training):
        parts["triplets"] = _triplet_parts(rows.records, training)
    has_provenance = pc.is_valid(rows.provenance["generator_model"]).to_numpy(zero_copy_only=False)
    provenance = {name: order[a:b][has_provenance[order[a:b]]] for name, (a, b) in bounds.items()}
    if any(len(p) for p in provenance.values()):
        schema = PROVENANCE_FEATURES.arrow_schema
        parts["provenance"] = {name: _Part(rows.provenance, p, schema) for name, p in provenance.items() if len(p)}
    columns = {"generators": "generator_model", "judges": "judge_model", "prompt_versions": "prompt_version"}
    kept_provenance = rows.provenance.take(order)
    models = {key: sorted(pc.unique(kept_provenance[c].drop_null()).to_pylist()) for key, c in columns.items()}
    stats.judge_verdicts = _passed_checks(kept_provenance)

    stats.rows_per_split = {name: len(p) for name, p in parts["default"].items()}
    stats.triplet_rows = {name: len(p) for name, p in parts.get("triplets", {}).items()}
    stats.provenance_rows = sum(len(p) for p in parts.get("provenance", {}).values())

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-build-", dir=out.parent))
    try:
        jobs = [(c, s, p) for c, config_parts in parts.items() for s, p in config_parts.items()]
        sizes: dict[str, dict[str, tuple[int, int]]] = {config: {} for config in parts}
        # Parquet encoding and compression release the GIL: write the splits on all cores.
        with ThreadPoolExecutor(max_workers=os.cpu_count()) as pool:
            written = pool.map(lambda job: _write_split(job[2], tmp / CONFIG_FOLDERS[job[0]], job[1], shard_rows), jobs)
            for (config, split, part), (_, nbytes) in zip(jobs, written, strict=True):
                sizes[config][split] = (len(part), nbytes)
        _write_rejects(rejects, tmp / REJECTS)
        if license == "other" and not (license_name or license_link):
            license_name, license_link = MSMARCO_LICENSE_NAME, MSMARCO_LICENSE_LINK
        meta = {"license": license, "license_name": license_name, "license_link": license_link}
        meta |= {"pretty_name": pretty_name, "repo_id": repo_id}
        (tmp / "README.md").write_text(_card(stats, sizes, models, **meta), encoding="utf-8")
        _install(tmp, out)
    finally:
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
