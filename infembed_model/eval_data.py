"""Read an evaluation folder in the mteb / Hub retrieval layout with `datasets.load_dataset(folder, config)`.

Configs (declared in the folder's README.md YAML, as on the Hub): `corpus` (`_id`, `text`, optional `title`), `queries`
(`_id`, `text`), `default` (qrels: `query-id`, `corpus-id`, `score`), and the optional `instruction` (`query-id`,
`instruction`), `top_ranked` (`query-id`, `corpus-ids`: candidates to rerank) and `qrel_diff` (`query-id` without the
`-og`/`-changed` suffix, `corpus-ids`: documents whose relevance changed, FollowIR). Like mteb, a config's split is
`test` when it has one, else its only split, and queries without qrels are not evaluated.
"""

from dataclasses import dataclass
from pathlib import Path

from datasets import get_dataset_config_names, get_dataset_split_names, load_dataset

from infir_dataset.local_cache import cache_dir_for

REQUIRED_CONFIGS = ("corpus", "queries", "default")


class EvalDataError(ValueError):
    """An evaluation folder that cannot be evaluated; the message is one line meant for the user."""


@dataclass
class EvalDataset:
    name: str
    corpus_ids: list[str]
    corpus_texts: list[str]  # mteb's document text: "title text" when a title exists
    query_ids: list[str]
    queries: list[str]
    instructions: list[str]  # "" where a query has none
    qrels: dict[str, dict[str, int]]
    top_ranked: dict[str, list[str]] | None = None
    qrel_diff: dict[str, list[str]] | None = None


def document_text(title: str | None, text: str | None) -> str:
    """The text mteb encodes for a corpus row (`mteb/_create_dataloaders.py` `_corpus_to_dict`)."""
    return f"{title} {text}".strip() if title else (text or "").strip()


def _examples(ids: set[str], n: int = 3) -> str:
    return ", ".join(repr(i) for i in sorted(ids)[:n]) + (", ..." if len(ids) > n else "")


def _split(folder: str, config: str) -> str:
    splits = get_dataset_split_names(folder, config_name=config)
    return "test" if "test" in splits else splits[0]


def _release_arrow_memory() -> None:
    """Give back what Arrow's allocator keeps after datasets converted a config to its Arrow cache: about 1 KB per
    corpus row (200,000 MS MARCO passages read from one Parquet row group left 195 MB held), for the rest of the run."""
    import pyarrow

    release = getattr(pyarrow.default_memory_pool(), "release_unused", None)
    if release is not None:
        release()


def _load(folder: str, config: str, columns: tuple[str, ...], optional: tuple[str, ...] = ()) -> dict[str, list]:
    """The config's columns as lists; `optional` columns are returned only where the config has them."""
    try:
        ds = load_dataset(folder, config, split=_split(folder, config), cache_dir=cache_dir_for(folder))
    except ValueError as e:
        if "corresponds to no data" in str(e):  # datasets' answer for a config whose files hold 0 rows
            return {c: [] for c in columns + optional}
        raise EvalDataError(f"{folder}: cannot load config {config!r} ({e})") from None
    finally:
        _release_arrow_memory()
    missing = [c for c in columns if c not in ds.column_names]
    if missing:
        raise EvalDataError(f"{folder}: config {config!r} lacks column(s) {missing}; it has {ds.column_names}")
    return {c: ds[c] for c in columns + optional if c in ds.column_names}


def load_eval_dataset(folder: str | Path, name: str | None = None) -> EvalDataset:
    """Load and check one evaluation folder; raises EvalDataError with one line naming what is wrong."""
    folder = str(folder)
    if not Path(folder).is_dir():
        raise EvalDataError(f"{folder}: no such folder")
    try:
        configs = set(get_dataset_config_names(folder))
    except Exception as e:  # datasets raises several types for an unreadable README/layout
        raise EvalDataError(f"{folder}: cannot read the dataset layout ({type(e).__name__}: {e})") from None
    aliases = {"queries": "query", "default": "qrels"}  # names mteb also accepts
    missing = [c for c in REQUIRED_CONFIGS if c not in configs and aliases[c] not in configs]
    if missing:
        raise EvalDataError(
            f"{folder}: missing config(s) {missing} (found {sorted(configs)}); "
            "an evaluation folder needs corpus, queries and default (qrels) declared in README.md"
        )
    resolved = {c: c if c in configs else aliases[c] for c in REQUIRED_CONFIGS}

    corpus = _load(folder, resolved["corpus"], ("_id", "text"), optional=("title",))  # mteb: title is optional
    if not corpus["_id"]:
        raise EvalDataError(f"{folder}: the corpus is empty (0 documents)")
    corpus_ids = [str(i) for i in corpus["_id"]]
    titles = corpus.get("title") or [None] * len(corpus_ids)
    corpus_texts = [document_text(t, x) for t, x in zip(titles, corpus["text"], strict=True)]

    queries = _load(folder, resolved["queries"], ("_id", "text"))
    query_text = {str(i): t for i, t in zip(queries["_id"], queries["text"], strict=True)}

    rows = _load(folder, resolved["default"], ("query-id", "corpus-id", "score"))
    qrels: dict[str, dict[str, int]] = {}
    for q, d, s in zip(rows["query-id"], rows["corpus-id"], rows["score"], strict=True):
        qrels.setdefault(str(q), {})[str(d)] = int(s)
    if not qrels:
        raise EvalDataError(f"{folder}: config 'default' (qrels) is empty (0 judgements)")
    known_docs = set(corpus_ids)
    bad_docs = {d for judged in qrels.values() for d in judged} - known_docs
    bad_queries = set(qrels) - set(query_text)
    if bad_docs or bad_queries:
        parts = []
        if bad_docs:
            parts.append(f"{len(bad_docs)} document id(s) not in the corpus ({_examples(bad_docs)})")
        if bad_queries:
            parts.append(f"{len(bad_queries)} query id(s) not in queries ({_examples(bad_queries)})")
        raise EvalDataError(f"{folder}: qrels (config 'default') name " + " and ".join(parts))

    query_ids = [q for q in query_text if q in qrels]
    instructions = {q: "" for q in query_ids}
    if "instruction" in configs:
        rows = _load(folder, "instruction", ("query-id", "instruction"))
        given = {str(q): i or "" for q, i in zip(rows["query-id"], rows["instruction"], strict=True)}
        lacking = set(query_ids) - set(given)
        if lacking:
            raise EvalDataError(
                f"{folder}: config 'instruction' has no row for {len(lacking)} evaluated query id(s) "
                f"({_examples(lacking)})"
            )
        instructions = {q: given[q] for q in query_ids}

    top_ranked = None
    if "top_ranked" in configs:
        rows = _load(folder, "top_ranked", ("query-id", "corpus-ids"))
        top_ranked = {str(q): [str(d) for d in ds] for q, ds in zip(rows["query-id"], rows["corpus-ids"], strict=True)}
        bad = {d for ds in top_ranked.values() for d in ds} - known_docs
        lacking = set(query_ids) - set(top_ranked)
        if bad or lacking:
            raise EvalDataError(
                f"{folder}: config 'top_ranked' names {len(bad)} document id(s) not in the corpus"
                f"{' (' + _examples(bad) + ')' if bad else ''} and lacks {len(lacking)} evaluated query id(s)"
                f"{' (' + _examples(lacking) + ')' if lacking else ''}"
            )

    qrel_diff = None
    if "qrel_diff" in configs:
        rows = _load(folder, "qrel_diff", ("query-id", "corpus-ids"))
        qrel_diff = {str(q): [str(d) for d in ds] for q, ds in zip(rows["query-id"], rows["corpus-ids"], strict=True)}
        bad = {d for ds in qrel_diff.values() for d in ds} - known_docs
        if bad:
            raise EvalDataError(
                f"{folder}: config 'qrel_diff' names {len(bad)} document id(s) not in the corpus ({_examples(bad)})"
            )

    return EvalDataset(
        name=name or Path(folder).resolve().name,
        corpus_ids=corpus_ids,
        corpus_texts=corpus_texts,
        query_ids=query_ids,
        queries=[query_text[q] for q in query_ids],
        instructions=[instructions[q] for q in query_ids],
        qrels={q: qrels[q] for q in query_ids},
        top_ranked=top_ranked,
        qrel_diff=qrel_diff,
    )
