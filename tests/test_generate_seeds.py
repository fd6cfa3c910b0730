"""Seed reading: JSONL, TSV, BEIR folders; a malformed seed stops the run with FILE:LINE before any request."""

import json
from pathlib import Path

import pytest
from openai_test_server import OpenAITestServer, run_generate

from infir_dataset.schema import record_id
from infir_dataset.seeds import SeedError, read_seeds

# The real MS MARCO seeds in ../shared/data beside the repository (a CI clone gets a copy there too).
MSMARCO = Path(__file__).resolve().parents[2] / "shared/data/instructir_kaist/data_creation/msmarco/filtered_version"


def test_jsonl_and_tsv_give_the_same_seeds(tmp_path):
    rows = [{"id": "a", "query": "q one", "passage": "p one"}, {"id": "b", "query": "q two", "passage": 'p "two"'}]
    jsonl = tmp_path / "s.jsonl"
    jsonl.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    tsv = tmp_path / "s.tsv"
    tsv.write_text("id\tquery\tpassage\n" + "".join(f"{r['id']}\t{r['query']}\t{r['passage']}\n" for r in rows))
    from_jsonl, from_tsv = read_seeds(jsonl, "msmarco"), read_seeds(tsv, "msmarco")
    assert [(s.seed_id, s.query, s.passage) for s in from_jsonl] == [(r["id"], r["query"], r["passage"]) for r in rows]
    expected_ids = [record_id("msmarco", r["query"], r["passage"]) for r in rows]
    assert [s.id for s in from_jsonl] == [s.id for s in from_tsv] == expected_ids
    assert from_tsv[1].origin == f"{tsv}:3"


def test_duplicate_seeds_are_read_once_and_limit_applies(tmp_path):
    path = tmp_path / "s.jsonl"
    path.write_text("".join(json.dumps({"query": q, "passage": "p"}) + "\n" for q in ["a", "b", "a", "c"]))
    assert [s.query for s in read_seeds(path, "x")] == ["a", "b", "c"]
    assert [s.query for s in read_seeds(path, "x", limit=2)] == ["a", "b"]


@pytest.mark.skipif(not MSMARCO.exists(), reason="the InstructIR MS MARCO seeds are not in ../shared/data")
def test_beir_folder_of_real_msmarco_pairs():
    seeds = read_seeds(MSMARCO, "msmarco")
    assert len(seeds) == 1743
    first = seeds[0]
    assert first.query == "how much is a cost to run disneyland"
    assert first.passage.startswith("Disney's Theme Parks had an operating cost")
    assert first.seed_id == "320792:7067677" and first.origin.endswith("qrels/test.tsv:2")


@pytest.mark.parametrize(
    ("content", "line", "message"),
    [
        ('{"query": "q", "passage": "p"}\n{"query": "q2", "passage": \n', 2, "invalid JSON"),
        ('{"query": "q", "passage": "p"}\n\n{"query": "", "passage": "p"}\n', 3, "'query' must be a non-empty string"),
        ('{"query": "q"}\n', 1, "'passage' must be a non-empty string"),
        ('["q", "p"]\n', 1, "expected a JSON object"),
    ],
)
def test_malformed_jsonl_line_names_file_and_line(tmp_path, content, line, message):
    path = tmp_path / "seeds.jsonl"
    path.write_text(content)
    with pytest.raises(SeedError, match=f"^{path}:{line}: .*{message}"):
        read_seeds(path, "msmarco")


def test_malformed_tsv_and_beir_errors(tmp_path):
    tsv = tmp_path / "s.tsv"
    tsv.write_text("query\tpassage\nq\tp\nonly-one-column\n")
    with pytest.raises(SeedError, match=f"^{tsv}:3: 1 columns"):
        read_seeds(tsv, "x")
    folder = tmp_path / "beir"
    (folder / "qrels").mkdir(parents=True)
    (folder / "corpus.jsonl").write_text('{"_id": "d1", "text": "passage"}\n')
    (folder / "queries.jsonl").write_text('{"_id": "q1", "text": "query"}\n')
    (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\nq1\td9\t1\n")
    with pytest.raises(SeedError, match=r"qrels/test.tsv:3: passage id 'd9' is not in corpus.jsonl"):
        read_seeds(folder, "x")


def test_cli_stops_on_a_malformed_seed_before_any_request(tmp_path):
    seeds = tmp_path / "seeds.jsonl"
    seeds.write_text('{"query": "fine", "passage": "fine"}\n' * 3 + '{"query": "broken"\n')
    with OpenAITestServer() as server:
        with pytest.raises(SystemExit, match=f"infir generate: {seeds}:4: invalid JSON"):
            run_generate("--seeds", str(seeds), "--out", str(tmp_path / "out"), "--base-url", server.base_url)
        assert server.requests == []
    assert not (tmp_path / "out" / "records.jsonl").exists()


@pytest.mark.parametrize("suffix", [".tsv", ".jsonl"])
def test_a_seed_file_not_in_utf8_names_file_and_line(tmp_path, suffix):
    path = tmp_path / f"seeds{suffix}"
    good = "query\tpassage\nq\tp\n" if suffix == ".tsv" else '{"query": "q", "passage": "p"}\n'
    bad = "caf\u00e9\tp\n" if suffix == ".tsv" else '{"query": "caf\u00e9", "passage": "p"}\n'
    path.write_bytes(good.encode() + bad.encode("latin-1"))  # a Latin-1 line among UTF-8 ones
    line = good.count("\n") + 1
    with pytest.raises(SeedError, match=f"^{path}:{line}: not UTF-8 text$"):
        read_seeds(path, "msmarco")
