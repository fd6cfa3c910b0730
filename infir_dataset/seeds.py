"""Read (query, passage) seeds: JSONL, TSV, or a BEIR / MS MARCO folder (corpus.jsonl, queries.jsonl, qrels/*.tsv).

Every seed is read and checked before any request is sent: a malformed line raises `SeedError("FILE:LINE: reason")`.
"""

import csv
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from .jsonl import InputError, read_jsonl
from .schema import record_id


class SeedError(ValueError):
    """A seed file that cannot be read; the message starts with `FILE:LINE:`."""


@dataclass(frozen=True)
class Seed:
    id: str  # the record id, `record_id(source, query, passage)`
    source: str
    query: str
    passage: str
    origin: str  # FILE:LINE it was read from
    seed_id: str | None = None  # the user's own id, if the file has one


def read_seeds(path: str | Path, source: str, limit: int | None = None) -> list[Seed]:
    """All seeds of `path` in file order, duplicates (same query and passage) dropped, the first `limit` kept."""
    path = Path(path)
    if path.is_dir():
        rows = _read_beir_folder(path)
    elif not path.exists():
        raise SeedError(f"{path}: no such file or folder")
    elif path.suffix.lower() in (".tsv", ".tab"):
        rows = _read_tsv(path)
    else:
        rows = _read_jsonl(path)
    seeds: dict[str, Seed] = {}
    for origin, seed_id, query, passage in rows:
        rid = record_id(source, query, passage)
        seeds.setdefault(rid, Seed(rid, source, query, passage, origin, seed_id))
    out = list(seeds.values())
    return out if limit is None else out[:limit]


def _text(value: object, where: str, field: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise SeedError(f"{where}: field {field!r} must be a non-empty string")
    return value.strip()


def _optional_id(value: object) -> str | None:
    return None if value is None else str(value)


def _jsonl_objects(path: Path) -> Iterator[tuple[str, dict]]:
    try:
        for n, obj in read_jsonl(path):
            yield f"{path}:{n}", obj
    except InputError as e:
        raise SeedError(str(e)) from None


def _read_jsonl(path: Path) -> Iterator[tuple[str, str | None, str, str]]:
    for where, obj in _jsonl_objects(path):
        yield (
            where,
            _optional_id(obj.get("id")),
            _text(obj.get("query"), where, "query"),
            _text(obj.get("passage"), where, "passage"),
        )


def _not_utf8(path: Path) -> SeedError:
    """The error naming the first line of `path` that is not UTF-8 (a text stream cannot tell which line it was)."""
    for n, line in enumerate(path.read_bytes().split(b"\n"), start=1):
        try:
            line.decode("utf-8")
        except UnicodeDecodeError:
            return SeedError(f"{path}:{n}: not UTF-8 text")
    return SeedError(f"{path}: not UTF-8 text")


def _read_tsv(path: Path) -> Iterator[tuple[str, str | None, str, str]]:
    try:
        yield from _read_tsv_rows(path)
    except UnicodeDecodeError:
        raise _not_utf8(path) from None


def _read_tsv_rows(path: Path) -> Iterator[tuple[str, str | None, str, str]]:
    with path.open(encoding="utf-8", newline="") as f:
        reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = next(reader, None)
        if header is None or "query" not in header or "passage" not in header:
            raise SeedError(f"{path}:1: the header must name the columns 'query' and 'passage' (optional 'id')")
        col = {name: i for i, name in enumerate(header)}
        for row in reader:
            where = f"{path}:{reader.line_num}"
            if not any(cell.strip() for cell in row):
                continue
            if len(row) != len(header):
                raise SeedError(f"{where}: {len(row)} columns, the header has {len(header)}")
            seed_id = row[col["id"]] if "id" in col else None
            yield where, seed_id, _text(row[col["query"]], where, "query"), _text(row[col["passage"]], where, "passage")


def _read_beir_folder(folder: Path) -> Iterator[tuple[str, str | None, str, str]]:
    corpus_path, queries_path = folder / "corpus.jsonl", folder / "queries.jsonl"
    qrels_paths = sorted((folder / "qrels").glob("*.tsv"))
    for needed in (corpus_path, queries_path):
        if not needed.exists():
            raise SeedError(f"{needed}: missing (a BEIR folder has corpus.jsonl, queries.jsonl and qrels/*.tsv)")
    if not qrels_paths:
        raise SeedError(f"{folder / 'qrels'}: no *.tsv qrels file")
    corpus = {str(_req(o, "_id", w)): _text(o.get("text"), w, "text") for w, o in _jsonl_objects(corpus_path)}
    queries = {str(_req(o, "_id", w)): _text(o.get("text"), w, "text") for w, o in _jsonl_objects(queries_path)}
    for qrels_path in qrels_paths:
        try:
            yield from _read_qrels(qrels_path, queries, corpus, queries_path.name, corpus_path.name)
        except UnicodeDecodeError:
            raise _not_utf8(qrels_path) from None


def _read_qrels(
    qrels_path: Path, queries: dict[str, str], corpus: dict[str, str], queries_name: str, corpus_name: str
) -> Iterator[tuple[str, str | None, str, str]]:
    with qrels_path.open(encoding="utf-8", newline="") as f:
        for n, line in enumerate(f, start=1):
            cells = line.rstrip("\n").split("\t")
            if n == 1 and not _is_number(cells[-1]):
                continue  # header (`query-id corpus-id score`, or MS MARCO's `qid pid score`)
            if not line.strip():
                continue
            where = f"{qrels_path}:{n}"
            if len(cells) != 3 or not _is_number(cells[2]):
                raise SeedError(f"{where}: expected 3 tab-separated columns: query id, passage id, score")
            qid, pid, score = cells
            if float(score) <= 0:
                continue
            if qid not in queries:
                raise SeedError(f"{where}: query id {qid!r} is not in {queries_name}")
            if pid not in corpus:
                raise SeedError(f"{where}: passage id {pid!r} is not in {corpus_name}")
            yield where, f"{qid}:{pid}", queries[qid], corpus[pid]


def _req(obj: dict, key: str, where: str) -> object:
    if key not in obj:
        raise SeedError(f"{where}: missing field {key!r}")
    return obj[key]


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
