"""Exact and near-duplicate removal of InF-IR records on their positive (instruction, query, passage) triple.

Near duplicates are triples equal after `normalise.normalise` (lowercase; punctuation, symbols and spacing ignored).
Records must come sorted by id: the first of each group is kept, so the result does not depend on input order.
Normalisation runs on Arrow arrays (`normalise_array`), a chunk at a time; each row's keys are 16-byte digests, so
`infir build-repo` keeps the keys of a corpus (`row_digests`) and decides (`deduplicate_keys`) without its text.
"""

import hashlib
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .normalise import normalise_array

KEY_FIELDS = ("instruction_positive", "query_positive", "document_positive")
_SEPARATOR = "\x1f"
CHUNK_ROWS = 10_000


def _digests(columns: list[pa.Array | pa.ChunkedArray]) -> np.ndarray:
    joined = pc.binary_join_element_wise(*columns, _SEPARATOR).to_pylist()
    return np.array([hashlib.blake2b(text.encode(), digest_size=16).digest() for text in joined], dtype="S16")


def row_digests(table: pa.Table) -> tuple[np.ndarray, np.ndarray]:
    """The exact and the near-duplicate key of each row of `table` (16-byte digests of its positive triple)."""
    columns = [table[f] for f in KEY_FIELDS]
    return _digests(columns), _digests([normalise_array(c) for c in columns])


def _codes(values: np.ndarray) -> np.ndarray:
    """An integer per row, equal for equal values."""
    return np.unique(values, return_inverse=True)[1] if len(values) else np.zeros(0, np.int64)


@dataclass
class DedupResult:
    """`keep[i]` tells whether record i survives; `removed` lists (index, reason code, id of the record kept)."""

    keep: np.ndarray
    removed: list[tuple[int, str, str]] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        out = {"duplicate_id": 0, "exact_duplicate": 0, "near_duplicate": 0}
        for _, code, _ in self.removed:
            out[code] += 1
        return out


def deduplicate(table: pa.Table, order: np.ndarray | None = None) -> DedupResult:
    """Mark repeated ids, then exact duplicates, then near duplicates of an earlier row of `table.take(order)` (all of
    `table` without `order`) for removal, reading the rows in chunks so that only a slice of the text is copied."""
    order = np.arange(len(table)) if order is None else order
    exact, near = [np.empty(0, "S16")], [np.empty(0, "S16")]
    for start in range(0, len(order), CHUNK_ROWS):
        chunk = table.select(list(KEY_FIELDS)).take(order[start : start + CHUNK_ROWS])
        chunk_exact, chunk_near = row_digests(chunk)
        exact.append(chunk_exact)
        near.append(chunk_near)
    return deduplicate_keys(table["id"].take(order), np.concatenate(exact), np.concatenate(near))


def deduplicate_keys(ids: pa.Array | pa.ChunkedArray, exact: np.ndarray, near: np.ndarray) -> DedupResult:
    """`deduplicate` on the rows' ids and `row_digests`, given in the order in which the first of a group is kept.

    Each step looks only at the rows the previous steps kept, so a row is never removed for repeating a row that was
    itself removed.
    """
    if isinstance(ids, pa.ChunkedArray):
        ids = ids.combine_chunks()
    keys = {
        "duplicate_id": pc.dictionary_encode(ids).indices.to_numpy(zero_copy_only=False),
        "exact_duplicate": _codes(exact),
        "near_duplicate": _codes(near),
    }
    result = DedupResult(keep=np.ones(len(ids), dtype=bool))
    for code, codes in keys.items():
        survivors = np.flatnonzero(result.keep)
        _, first, inverse = np.unique(codes[survivors], return_index=True, return_inverse=True)
        first_row = survivors[first[inverse]]
        repeated = first_row < survivors
        for row, original in zip(survivors[repeated], first_row[repeated], strict=True):
            result.removed.append((int(row), code, ids[int(original)].as_py()))
        result.keep[survivors[repeated]] = False
    result.removed.sort()
    return result
