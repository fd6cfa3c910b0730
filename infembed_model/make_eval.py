"""`infembed make-eval`: build an evaluation folder (mteb / Hub retrieval layout, see eval_data.py).

    infembed make-eval --followir QUERIES.jsonl --corpus CORPUS.jsonl --output DIR
    infembed make-eval --from-infir DIR_OR_FILE [--split msmarco_holdout] --output DIR

FollowIR-style input: one JSON object per line with `id`, `query`, `instruction_og`, `instruction_changed`,
`qrels_og` and `qrels_changed` (`{doc_id: score}`) and optionally `candidates` (doc ids to rerank, written as
`top_ranked`); the corpus JSONL has `_id` (or `id`), `text` and optionally `title`. Each line becomes queries
`<id>-og` and `<id>-changed`; `qrel_diff` lists the documents relevant under the original instruction and not
under the changed one.

InF-IR input (rows with the seven fields, e.g. the held-out split of a repo from `infir build-repo`): the corpus is
every P+, HN1 and HN2; each row gives `<id>-og` = (I+, Q+) with P+ relevant, `<id>-changed` = (I-, Q+) with HN1
relevant and P+ not (so qrel_diff = P+), and `<id>-qneg` = (I+, Q-) with HN2 relevant, a plain retrieval query.
"""

import argparse
import hashlib
import shutil
import sys
from pathlib import Path

from datasets import Dataset, Features, List, Value

from infir_dataset.jsonl import InputError, read_jsonl

FEATURES = {
    "corpus": Features({"_id": Value("string"), "title": Value("string"), "text": Value("string")}),
    "queries": Features({"_id": Value("string"), "text": Value("string")}),
    "instruction": Features({"query-id": Value("string"), "instruction": Value("string")}),
    "default": Features({"query-id": Value("string"), "corpus-id": Value("string"), "score": Value("int32")}),
    "top_ranked": Features({"query-id": Value("string"), "corpus-ids": List(Value("string"))}),
    "qrel_diff": Features({"query-id": Value("string"), "corpus-ids": List(Value("string"))}),
}
FOLLOWIR_FIELDS = ("query", "instruction_og", "instruction_changed", "qrels_og", "qrels_changed")


class MakeEvalError(ValueError):
    """Bad input; the message names the file and line or field."""


def write_eval_folder(output: str | Path, tables: dict[str, list[dict]], pretty_name: str) -> Path:
    """Write each config's rows as Parquet and a README.md whose YAML `configs` make load_dataset/mteb read them.

    Splits are `test`, except `qrel_diff` whose split is `qrel_diff` (what mteb's FollowIR tasks load)."""
    from huggingface_hub import DatasetCard, DatasetCardData

    output = Path(output)
    if output.exists() and not (output.is_dir() and not any(output.iterdir())):
        if not is_eval_folder(output):
            raise MakeEvalError(f"{output}: exists and is not an evaluation folder (not replaced)")
        shutil.rmtree(output)
    configs = []
    for config, rows in tables.items():
        split = "qrel_diff" if config == "qrel_diff" else "test"
        path = f"{config}/{split}.parquet"
        (output / config).mkdir(parents=True)
        Dataset.from_list(rows, features=FEATURES[config]).to_parquet(output / path)
        configs.append({"config_name": config, "data_files": [{"split": split, "path": path}]})
    data = DatasetCardData(
        pretty_name=pretty_name,
        task_categories=["text-retrieval"],
        task_ids=["document-retrieval"],
        tags=["instruction-following", "information-retrieval", "mteb"],
        configs=configs,
    )
    counts = ", ".join(f"{c}: {len(r)} rows" for c, r in tables.items())
    body = (
        f"# {pretty_name}\n\nAn instruction-following retrieval evaluation set in the mteb / Hub retrieval layout "
        f"({counts}). Evaluate with `infembed eval --model M --data <this folder> --output DIR`.\n"
    )
    DatasetCard(f"---\n{data.to_yaml()}\n---\n\n{body}").save(output / "README.md")
    return output


def is_eval_folder(folder: Path) -> bool:
    """True for a folder that write_eval_folder wrote: its README's tags and configs, and nothing else in it."""
    from huggingface_hub import DatasetCard

    readme = folder / "README.md"
    if not readme.is_file():
        return False
    try:
        data = DatasetCard.load(readme).data.to_dict()
    except Exception:  # an unreadable card is not ours
        return False
    configs = {c.get("config_name") for c in data.get("configs") or [] if isinstance(c, dict)}
    entries = {p.name for p in folder.iterdir()}
    return (
        "information-retrieval" in (data.get("tags") or [])
        and "corpus" in configs
        and configs <= set(FEATURES)
        and entries <= configs | {"README.md"}
    )


def _score(value, where: str, field: str, doc: str) -> int:
    """A qrel score as an int; anything else is the input's error, named by line, field and document."""
    if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
        raise MakeEvalError(f"{where}: {field}[{doc!r}] must be an integer score, got {value!r}")
    try:
        return int(value)
    except (TypeError, ValueError):
        raise MakeEvalError(f"{where}: {field}[{doc!r}] must be an integer score, got {value!r}") from None


def _read_jsonl(path: Path) -> list[tuple[int, dict]]:
    try:
        return list(read_jsonl(path))
    except InputError as e:
        raise MakeEvalError(str(e)) from None


def _first(row: dict, names: tuple[str, ...], where: str) -> str:
    for name in names:
        if row.get(name) not in (None, ""):
            return str(row[name])
    raise MakeEvalError(f"{where}: missing field {names[0]!r}")


def from_followir(queries_path: str | Path, corpus_path: str | Path) -> dict[str, list[dict]]:
    """Tables of the evaluation folder from FollowIR-style queries and a corpus (both JSONL)."""
    corpus = []
    for n, row in _read_jsonl(Path(corpus_path)):
        where = f"{corpus_path}:{n}"
        corpus.append(
            {
                "_id": _first(row, ("_id", "id", "doc_id"), where),
                "title": row.get("title") or "",
                "text": _first(row, ("text",), where),
            }
        )
    known = {d["_id"] for d in corpus}
    tables = {name: [] for name in ("queries", "instruction", "default", "top_ranked", "qrel_diff")}
    for n, row in _read_jsonl(Path(queries_path)):
        where = f"{queries_path}:{n}"
        qid = _first(row, ("id", "query_id", "query-id", "_id"), where)
        for field in FOLLOWIR_FIELDS:
            if field not in row:
                raise MakeEvalError(f"{where}: missing field {field!r}")
        for field in ("qrels_og", "qrels_changed"):
            if not isinstance(row[field], dict):
                raise MakeEvalError(f"{where}: field {field!r} must be an object {{doc_id: score}}")
            unknown = set(row[field]) - known
            if unknown:
                raise MakeEvalError(f"{where}: {field} names {len(unknown)} document(s) not in {corpus_path}")
        qrels = {
            key: {d: _score(s, where, f"qrels_{key}", d) for d, s in row[f"qrels_{key}"].items()}
            for key in ("og", "changed")
        }
        for suffix, key in (("og", "og"), ("changed", "changed")):
            q = f"{qid}-{suffix}"
            tables["queries"].append({"_id": q, "text": row["query"]})
            tables["instruction"].append({"query-id": q, "instruction": row[f"instruction_{key}"] or ""})
            tables["default"] += [{"query-id": q, "corpus-id": d, "score": s} for d, s in qrels[key].items()]
            if row.get("candidates"):
                tables["top_ranked"].append({"query-id": q, "corpus-ids": [str(d) for d in row["candidates"]]})
        og, changed = qrels["og"], qrels["changed"]
        diff = [d for d, s in og.items() if s > 0 and changed.get(d, 0) <= 0]
        if diff:
            tables["qrel_diff"].append({"query-id": qid, "corpus-ids": diff})
    if not tables["top_ranked"]:
        del tables["top_ranked"]
    return {"corpus": corpus, **tables}


def _load_infir_rows(source: str, split: str) -> list[dict]:
    from datasets import load_dataset

    path = Path(source)
    if path.is_dir():
        from infir_dataset.local_cache import cache_dir_for

        return list(load_dataset(str(path), split=split, cache_dir=cache_dir_for(path)))
    kind = {".jsonl": "json", ".json": "json", ".parquet": "parquet"}.get(path.suffix)
    if kind is None or not path.exists():
        raise MakeEvalError(f"{source}: expected a dataset folder, a .jsonl or a .parquet file")
    return list(load_dataset(kind, data_files=str(path), split="train"))


def doc_id(text: str) -> str:
    return "doc-" + hashlib.sha256(text.encode()).hexdigest()[:16]


def from_infir(rows: list[dict], where: str) -> dict[str, list[dict]]:
    """Tables of the evaluation folder from InF-IR rows (see the module docstring)."""
    from infir_dataset.schema import RECORD_FIELDS, record_id

    corpus: dict[str, str] = {}
    tables = {name: [] for name in ("queries", "instruction", "default", "qrel_diff")}
    for n, row in enumerate(rows):
        missing = [f for f in RECORD_FIELDS if not row.get(f)]
        if missing:
            raise MakeEvalError(f"{where}: row {n} lacks field(s) {missing}")
        rid = row.get("id") or record_id("infir", row["query_positive"], row["document_positive"])
        pos, hn1, hn2 = (row[f] for f in ("document_positive", "hard_negative_document_1", "hard_negative_document_2"))
        for text in (pos, hn1, hn2):
            corpus.setdefault(doc_id(text), text)
        queries = [
            ("og", row["instruction_positive"], row["query_positive"], {doc_id(pos): 1}),
            ("changed", row["instruction_negative"], row["query_positive"], {doc_id(hn1): 1, doc_id(pos): 0}),
            ("qneg", row["instruction_positive"], row["query_negative"], {doc_id(hn2): 1, doc_id(pos): 0}),
        ]
        for suffix, instruction, query, qrels in queries:
            q = f"{rid}-{suffix}"
            tables["queries"].append({"_id": q, "text": query})
            tables["instruction"].append({"query-id": q, "instruction": instruction})
            tables["default"] += [{"query-id": q, "corpus-id": d, "score": s} for d, s in qrels.items()]
        tables["qrel_diff"].append({"query-id": rid, "corpus-ids": [doc_id(pos)]})
    if not rows:
        raise MakeEvalError(f"{where}: no rows")
    return {"corpus": [{"_id": d, "title": "", "text": t} for d, t in corpus.items()], **tables}


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "make-eval",
        help="build an evaluation folder from FollowIR-style JSONL or InF-IR rows",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--followir", metavar="QUERIES_JSONL", help="FollowIR-style queries (needs --corpus)")
    source.add_argument("--from-infir", metavar="DIR_OR_FILE", help="InF-IR repo folder, .jsonl or .parquet")
    p.add_argument("--corpus", metavar="CORPUS_JSONL", help="corpus for --followir")
    p.add_argument("--split", default="msmarco_holdout", help="split of the InF-IR repo (default: msmarco_holdout)")
    p.add_argument(
        "--output", required=True, help="output folder (an earlier evaluation folder there is replaced, nothing else)"
    )
    p.add_argument("--name", help="pretty name in the README")
    p.set_defaults(func=run)


def run(args: argparse.Namespace, extra: list[str]) -> int:
    if extra:
        print(f"infembed make-eval: error: unrecognized arguments: {' '.join(extra)}", file=sys.stderr)
        return 2
    try:
        if args.followir:
            if not args.corpus:
                raise MakeEvalError("--followir needs --corpus CORPUS_JSONL")
            tables = from_followir(args.followir, args.corpus)
        else:
            where = f"{args.from_infir} (split {args.split})" if Path(args.from_infir).is_dir() else args.from_infir
            try:
                rows = _load_infir_rows(args.from_infir, args.split)
            except ValueError as e:  # datasets: unknown split
                raise MakeEvalError(f"{where}: {e}") from None
            tables = from_infir(rows, where)
        out = write_eval_folder(args.output, tables, args.name or Path(args.output).name)
    except (MakeEvalError, FileNotFoundError) as e:
        print(f"infembed make-eval: error: {e}", file=sys.stderr)
        return 2
    print(f"{out}: " + ", ".join(f"{c} {len(r)}" for c, r in tables.items()))
    return 0
