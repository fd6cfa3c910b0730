"""Drop training records that overlap evaluation data: a shared 13-token sequence, as in GPT-3's decontamination.

Instructions, queries and passages are checked. Tokens are the words of `normalise.normalise_array` (lowercased;
punctuation, symbols and spacing separate words). A text shorter than 13 tokens (most queries) cannot hold a 13-gram;
it counts as contaminated when its whole token sequence equals the whole token sequence of a short evaluation text.
All hashing runs on Arrow/NumPy arrays, so a 100k-record set takes seconds.
"""

import os
import re
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .jsonl import InputError, read_jsonl
from .normalise import normalise_array
from .validate import INSTRUCTION_FIELDS, PASSAGE_FIELDS, QUERY_FIELDS

NGRAM = 13
# Instructions too: evaluation sets such as FollowIR ship long instructions that a generator could echo.
CHECKED_FIELDS = INSTRUCTION_FIELDS + QUERY_FIELDS + PASSAGE_FIELDS
TEXT_KEYS = ("text", "query", "passage", "instruction")
# mteb / BEIR layout: configs `corpus`, `queries` (or `query`) and `instruction`, optionally language-prefixed.
EVAL_PART = re.compile(r"(^|[-_])(corpus|queries|query|instructions?)($|[-_])")
CHUNK_TEXTS = 5_000
_MULTIPLIER = np.uint64(0x9E3779B97F4A7C15)


Texts = Sequence[str] | pa.Array | pa.ChunkedArray


def _as_array(texts: Texts) -> pa.Array:
    if isinstance(texts, pa.ChunkedArray):
        texts = texts.combine_chunks()
    return texts.cast(pa.large_string()) if isinstance(texts, pa.Array) else pa.array(texts, type=pa.large_string())


def _tokenise(texts: Texts) -> tuple[pa.ListArray, np.ndarray]:
    """Token lists of the texts, and which texts have any token (Arrow splits "" into [""])."""
    arr = normalise_array(_as_array(texts))
    return pc.split_pattern(arr, " "), pc.greater(pc.utf8_length(arr), 0).to_numpy(zero_copy_only=False)


@dataclass(frozen=True)
class _Vocabulary:
    """The evaluation texts' words, each with a random 64-bit code. A word outside it cannot be part of a match,
    so record tokens are looked up here instead of being hashed one by one."""

    positions: dict[str, int]
    codes: np.ndarray

    @classmethod
    def of(cls, words: pa.Array) -> "_Vocabulary":
        codes = np.random.default_rng(0).integers(0, 2**64, size=len(words), dtype=np.uint64, endpoint=False)
        return cls({word: i for i, word in enumerate(words.to_pylist())}, codes)

    def encode(self, texts: Texts) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(code per token, whether each token is known, tokens per text, whether each text has any token)."""
        tokens, nonempty = _tokenise(texts)
        lengths = pc.list_value_length(tokens).to_numpy(zero_copy_only=False).astype(np.int64)
        # Only the chunk's distinct words are looked up, in a dict built once: Arrow's `index_in` would rebuild a
        # hash table of the whole vocabulary (millions of words for a large evaluation corpus) at every call.
        encoded = pc.dictionary_encode(pc.list_flatten(tokens))
        distinct = encoded.dictionary.to_pylist()
        get = self.positions.get
        positions = np.fromiter((get(word, -1) for word in distinct), np.int64, len(distinct))
        idx = positions[encoded.indices.to_numpy(zero_copy_only=False)]
        known = idx >= 0
        codes = self.codes[np.where(known, idx, 0)] if len(self.codes) else np.zeros(len(idx), np.uint64)
        return codes, known, lengths, nonempty


def _window_hashes(codes: np.ndarray, n: int) -> np.ndarray:
    """A 64-bit polynomial hash of every run of n consecutive codes: position k of a window is weighted by
    MULTIPLIER ** (n - 1 - k), so the same codes in another order hash differently."""
    windows = len(codes) - n + 1
    out = np.zeros(windows, dtype=np.uint64)
    for k in range(n):
        out = out * _MULTIPLIER + codes[k : k + windows]
    return out


def _hashes(vocabulary: _Vocabulary, texts: Texts, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(n-gram hashes, index of the text each comes from, hashes of whole short texts, index of those texts).
    Only sequences made of known words are hashed: the others cannot occur in the evaluation texts."""
    codes, known, lengths, nonempty = vocabulary.encode(texts)
    starts = np.cumsum(lengths) - lengths
    unknown_before = np.concatenate([[0], np.cumsum(~known)])
    owner = np.repeat(np.arange(len(lengths)), lengths)
    windows = len(codes) - n + 1
    if windows > 0:
        grams = _window_hashes(codes, n)
        position = np.arange(windows)
        inside = position + n <= (starts + lengths)[owner[:windows]]  # windows that do not run into the next text
        valid = inside & (unknown_before[position + n] == unknown_before[position])
        grams, gram_owner = grams[valid], owner[:windows][valid]
    else:
        grams, gram_owner = np.empty(0, np.uint64), np.empty(0, np.int64)

    short = np.flatnonzero(nonempty & (lengths < n))
    short = short[unknown_before[starts[short] + lengths[short]] == unknown_before[starts[short]]]
    short_hash = np.zeros(len(short), dtype=np.uint64)
    if len(short):
        # The whole sequence, padded with zeros to n - 1 tokens, then its length.
        for k in range(n - 1):
            take = np.minimum(starts[short] + k, len(codes) - 1)
            short_hash = short_hash * _MULTIPLIER + np.where(k < lengths[short], codes[take], np.uint64(0))
        short_hash = short_hash * _MULTIPLIER + lengths[short].astype(np.uint64)
    return grams, gram_owner, short_hash, short


def _member(sorted_values: np.ndarray, filter_bits: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Membership of `values` in `sorted_values`; a bitmap over the low hash bits first rules out most misses."""
    found = np.zeros(len(values), dtype=bool)
    if len(sorted_values) == 0:
        return found
    candidates = np.flatnonzero(filter_bits[values & np.uint64(len(filter_bits) - 1)])
    idx = np.minimum(np.searchsorted(sorted_values, values[candidates]), len(sorted_values) - 1)
    found[candidates] = sorted_values[idx] == values[candidates]
    return found


def _bitmap(values: np.ndarray) -> np.ndarray:
    size = 1 << max(16, int(len(values) * 16).bit_length())  # ~16 slots per value: few false candidates
    bits = np.zeros(size, dtype=bool)
    bits[values & np.uint64(size - 1)] = True
    return bits


@dataclass(frozen=True)
class NgramIndex:
    """Sorted hashes of the evaluation texts' n-grams, and of their whole token sequences when shorter than n."""

    vocabulary: _Vocabulary
    ngrams: np.ndarray
    shorts: np.ndarray
    texts: int
    n: int = NGRAM
    ngram_bits: np.ndarray = field(init=False, repr=False)
    short_bits: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "ngram_bits", _bitmap(self.ngrams))
        object.__setattr__(self, "short_bits", _bitmap(self.shorts))

    @classmethod
    def from_texts(cls, texts: Iterable[str], n: int = NGRAM) -> "NgramIndex":
        chunks = [_as_array(chunk) for chunk in _chunks(texts)]
        words = [pc.unique(pc.list_flatten(_tokenise(chunk)[0])) for chunk in chunks]
        vocabulary = _Vocabulary.of(pc.unique(pa.chunked_array(words, pa.large_string())))
        grams, shorts = [np.empty(0, np.uint64)], [np.empty(0, np.uint64)]
        for chunk in chunks:
            g, _, s, _ = _hashes(vocabulary, chunk, n)
            grams.append(np.unique(g))
            shorts.append(np.unique(s))
        count = sum(len(c) for c in chunks)
        return cls(vocabulary, np.unique(np.concatenate(grams)), np.unique(np.concatenate(shorts)), count, n)

    def contains(self, texts: Texts) -> np.ndarray:
        """`out[i]` is True when texts[i] shares an n-gram (or, if short, its whole text) with the evaluation texts."""
        out = np.zeros(len(texts), dtype=bool)
        for start in range(0, len(texts), CHUNK_TEXTS):
            grams, owner, shorts, short_owner = _hashes(self.vocabulary, texts[start : start + CHUNK_TEXTS], self.n)
            out[start + owner[_member(self.ngrams, self.ngram_bits, grams)]] = True
            out[start + short_owner[_member(self.shorts, self.short_bits, shorts)]] = True
        return out


def _chunks(texts: Iterable[str]) -> Iterator[list[str]]:
    chunk: list[str] = []
    for text in texts:
        chunk.append(text)
        if len(chunk) == CHUNK_TEXTS:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _jsonl_texts(path: Path) -> Iterator[str]:
    for _, row in read_jsonl(path):
        yield from (row[k] for k in TEXT_KEYS if isinstance(row.get(k), str))


def _parquet_texts(path: Path) -> Iterator[str]:
    try:
        parquet = pq.ParquetFile(path)
        columns = [c for c in TEXT_KEYS if c in parquet.schema_arrow.names]
        for batch in parquet.iter_batches(columns=columns):
            for column in batch.columns:
                yield from (t for t in column.to_pylist() if isinstance(t, str))
    except (pa.ArrowException, OSError) as e:
        raise InputError(path, f"cannot read Parquet: {e}") from None


def _eval_files(folder: Path) -> list[Path]:
    """Query, corpus and instruction files of an mteb-layout (or BEIR) folder; qrels and run files are skipped."""
    files = []
    for path in sorted(folder.rglob("*")):
        if not path.is_file() or path.suffix not in (".jsonl", ".parquet"):
            continue
        parts = [*path.relative_to(folder).parent.parts, path.name.split(".")[0]]
        if any(EVAL_PART.search(part) for part in parts):
            files.append(path)
    return files


def load_eval_texts(paths: Iterable[str | os.PathLike]) -> Iterator[str]:
    """Evaluation texts (`text`, `query`, `passage` or `instruction` fields) of JSONL/Parquet files or mteb folders."""
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            files = _eval_files(path)
            if not files:
                raise InputError(path, "no corpus/queries .jsonl or .parquet files (mteb or BEIR layout) found")
        elif path.is_file():
            files = [path]
        else:
            raise InputError(path, "no such file or folder")
        for file in files:
            count = 0
            for text in _parquet_texts(file) if file.suffix == ".parquet" else _jsonl_texts(file):
                count += 1
                yield text
            if count == 0:
                raise InputError(file, f"no evaluation texts (fields {', '.join(TEXT_KEYS)})")


def contamination_mask(table: pa.Table, index: NgramIndex) -> np.ndarray:
    """For each row of `table` (InF-IR records), a bit per field of CHECKED_FIELDS (bit k: field k) that overlaps the
    evaluation texts."""
    # Arrow and NumPy release the GIL, so the fields are checked on all cores.
    with ThreadPoolExecutor(max_workers=os.cpu_count()) as pool:
        hits = list(pool.map(lambda name: index.contains(table[name]), CHECKED_FIELDS))
    mask = np.zeros(len(table), dtype=np.uint16)
    for bit, found in enumerate(hits):
        mask |= found.astype(np.uint16) << bit
    return mask


def masked_fields(mask: int) -> list[str]:
    """The fields of CHECKED_FIELDS whose bit is set in `mask`, in that order."""
    return [name for bit, name in enumerate(CHECKED_FIELDS) if mask >> bit & 1]


def contaminated_fields(table: pa.Table, index: NgramIndex) -> list[list[str]]:
    """For each row of `table` (InF-IR records), the fields (instructions, queries and passages) that overlap the
    evaluation texts."""
    return [masked_fields(int(mask)) for mask in contamination_mask(table, index)]
