"""`infir build-repo`: the repo folder loads with `load_dataset` offline, is byte-for-byte reproducible, keeps every
left-out record in rejects.jsonl, and counts it in the card."""

import json
import random
import subprocess
import sys
from pathlib import Path

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from infir_rows import public_row

from infir_dataset.build_repo import BuildError, build_repo, is_holdout
from infir_dataset.cli import main as infir_main
from infir_dataset.records import InputError
from infir_dataset.schema import PROVENANCE_FEATURES, RECORD_FEATURES, TRIPLET_FEATURES, record_id

EVAL_PASSAGE = " ".join(f"eval{i}" for i in range(30))


def generator_line(seed: int, source: str = "msmarco") -> dict:
    row = public_row(seed)
    verdicts = [{"check": c, "passed": True, "reason": "fine"} for c in ("positive", "instruction_negative")]
    return {
        "id": record_id(source, row["query_positive"], row["document_positive"]),
        "source": source,
        **row,
        "provenance": {
            "generator_model": "gpt-4o-mini",
            "judge_model": "o3-mini",
            "prompt_version": "v1",
            "verdicts": verdicts,
        },
    }


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture
def generated(tmp_path) -> Path:
    """A generator output: 40 good lines, one invalid, an exact and a near duplicate, one contaminated line."""
    lines = [generator_line(i) for i in range(40)]
    invalid = {**generator_line(100), "query_negative": generator_line(100)["query_positive"]}
    exact = {**lines[3], "id": "msmarco-exactcopy"}
    near = {
        **lines[4],
        "id": "msmarco-nearcopy",
        "instruction_positive": lines[4]["instruction_positive"].upper() + "!",
    }
    dirty = generator_line(101)  # HN1 keeps its length (no other rule applies), with the evaluation passage in it
    dirty["hard_negative_document_1"] = " ".join(dirty["hard_negative_document_1"].split()[:40] + [EVAL_PASSAGE])
    return write_jsonl(tmp_path / "records.jsonl", [*lines[:10], invalid, *lines[10:], exact, near, dirty])


@pytest.fixture
def eval_file(tmp_path) -> Path:
    return write_jsonl(tmp_path / "eval_queries.jsonl", [{"_id": "1", "text": EVAL_PASSAGE}])


def load(path: Path, *args, **kwargs):
    return datasets.load_dataset(str(path), *args, cache_dir=str(path.parent / "hf-cache"), **kwargs)


def test_repo_loads_offline_with_declared_features(generated, eval_file, tmp_path):
    out = tmp_path / "repo"
    stats = build_repo([generated], out, decontaminate=[eval_file], holdout_fraction=0.2)

    default = load(out)
    assert set(default) == {"msmarco", "msmarco_holdout"}
    assert default["msmarco"].features == RECORD_FEATURES
    assert len(default["msmarco"]) + len(default["msmarco_holdout"]) == stats.kept == 40
    ids = default["msmarco"]["id"]
    assert ids == sorted(ids)
    assert all(is_holdout(i, 0.2) for i in default["msmarco_holdout"]["id"])
    assert not any(is_holdout(i, 0.2) for i in ids)
    assert "hold about 20.0% of the records" in (out / "README.md").read_text()

    triplets = load(out, "triplets")
    assert set(triplets) == {"positive", "hard_negative"}
    assert triplets["positive"].features == TRIPLET_FEATURES
    assert len(triplets["positive"]) == len(default["msmarco"])
    assert len(triplets["hard_negative"]) == 2 * len(default["msmarco"])
    assert set(triplets["positive"]["kind"]) == {"positive"}
    first = default["msmarco"][0]
    negatives = triplets["hard_negative"].select(range(2)).to_list()
    assert [n["kind"] for n in negatives] == ["instruction_negative", "query_negative"]
    assert negatives[0] == {
        "id": first["id"],
        "instruction": first["instruction_negative"],
        "query": first["query_positive"],
        "passage": first["hard_negative_document_1"],
        "kind": "instruction_negative",
    }
    assert negatives[1]["instruction"] == first["instruction_positive"]
    assert negatives[1]["query"] == first["query_negative"]
    assert negatives[1]["passage"] == first["hard_negative_document_2"]

    provenance = load(out, "provenance")
    assert provenance["msmarco"].features == PROVENANCE_FEATURES
    assert provenance["msmarco"]["id"] == ids
    assert provenance["msmarco"][0]["verdicts"][0] == {"check": "positive", "passed": True, "reason": "fine"}


def test_every_left_out_record_is_in_rejects_and_counted_in_the_card(generated, eval_file, tmp_path):
    out = tmp_path / "repo"
    stats = build_repo([generated], out, decontaminate=[eval_file])
    rejects = [json.loads(line) for line in (out / "rejects.jsonl").read_text().splitlines()]
    by_stage = {r["stage"]: r for r in rejects}
    assert len(rejects) == 4 and stats.input_rows == 44
    assert by_stage["validate"]["line"] == 11 and by_stage["validate"]["file"] == str(generated)
    assert by_stage["validate"]["reasons"] == ["same_query: query_negative equals query_positive"]
    assert by_stage["validate"]["record"]["id"] == generator_line(100)["id"]
    dedup = sorted((r["id"], r["reasons"][0]) for r in rejects if r["stage"] == "dedup")
    assert [d[0] for d in dedup] == ["msmarco-exactcopy", "msmarco-nearcopy"]
    assert dedup[0][1].startswith("exact_duplicate: of ") and dedup[1][1].startswith("near_duplicate: of ")
    assert by_stage["decontaminate"]["line"] == 44
    assert "hard_negative_document_1" in by_stage["decontaminate"]["reasons"][0]

    assert stats.rejection_reasons == {"same_query": 1}
    assert stats.duplicates == {"duplicate_id": 0, "exact_duplicate": 1, "near_duplicate": 1}
    assert (stats.contaminated, stats.contaminated_fields) == (1, {"hard_negative_document_1": 1})

    card = (out / "README.md").read_text()
    meta = yaml.safe_load(card.split("---")[1])
    assert meta["task_categories"] == ["text-retrieval"] and meta["size_categories"] == ["n<1K"]
    assert {c["config_name"] for c in meta["configs"]} == {"default", "triplets", "provenance"}
    assert "| step | rows |" in card and "| input rows read | 44 |" in card
    assert "| removed as invalid (validation) | 1 |" in card
    assert "reason `same_query` | 1 |" in card
    assert "| removed as exact duplicates | 1 |" in card and "| removed as near duplicates | 1 |" in card
    assert "| removed as contaminated (shared 13-gram with evaluation data) | 1 |" in card
    assert "(1 text from eval_queries.jsonl)" in card
    assert "instructions 3-256 words and at most 4,000 characters" in card
    assert "passages 3-2,048 words and at most 30,000 characters" in card
    assert "| default | msmarco | 40 |" in card
    assert "arXiv:2505.21439" in card and "@article" in card
    assert "gpt-4o-mini" in card and "o3-mini" in card


def test_minimal_edit_length_and_instruction_checks_are_counted_in_the_card(eval_file, tmp_path):
    lines = [generator_line(i) for i in range(6)]
    lines[0]["instruction_negative"] = "Something else entirely, about the weather in another city."
    lines[1]["query_negative"] = "an unrelated question about cooking pasta"
    lines[2]["hard_negative_document_1"] = lines[2]["hard_negative_document_1"] + " " + lines[2]["document_positive"]
    lines[3]["hard_negative_document_2"] = " ".join(lines[3]["hard_negative_document_2"].split()[:20])
    lines[4]["instruction_positive"] = f"Only documents about {EVAL_PASSAGE}"  # a copied evaluation instruction
    lines[4]["instruction_negative"] = f"No documents about {EVAL_PASSAGE}"
    out = tmp_path / "repo"
    stats = build_repo([write_jsonl(tmp_path / "records.jsonl", lines)], out, decontaminate=[eval_file])
    assert stats.rejection_reasons == {
        "hard_negative_1_length_mismatch": 1,
        "hard_negative_2_length_mismatch": 1,
        "instruction_negative_not_minimal_edit": 1,
        "query_negative_not_minimal_edit": 1,
    }
    assert stats.contaminated_fields == {"instruction_negative": 1, "instruction_positive": 1}
    assert stats.kept == 1 and stats.judge_verdicts == {"instruction_negative": 1, "positive": 1}
    card = (out / "README.md").read_text()
    for code in stats.rejection_reasons:
        assert f"reason `{code}` | 1 |" in card
    assert "overlap in `instruction_positive` | 1 |" in card
    assert "at most 60% of the distinct\n   words of either" in card and "within 25% of P+'s length" in card
    assert "Rows whose instructions, queries or passages share a 13-token" in card
    assert "| `instruction_negative` | 1 |" in card and "| `positive` | 1 |" in card


def _repo_files(folder: Path) -> list[str]:
    """Files that depend on the records only (rejects.jsonl names input lines, which a reordering changes)."""
    return sorted(
        p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file() and p.name != "rejects.jsonl"
    )


def test_same_input_gives_same_bytes_whatever_the_line_order(generated, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    build_repo([generated], a, holdout_fraction=0.1, shard_rows=7)
    lines = generated.read_text().splitlines()
    shuffled = write_jsonl(tmp_path / "shuffled.jsonl", [json.loads(x) for x in reversed(lines)])
    build_repo([shuffled], b, holdout_fraction=0.1, shard_rows=7)
    files = sorted(p.relative_to(a).as_posix() for p in a.rglob("*") if p.is_file() and p.name != "rejects.jsonl")
    assert "data/msmarco-00000-of-00006.parquet" in files  # sharded at 7 rows
    assert files == sorted(
        p.relative_to(b).as_posix() for p in b.rglob("*") if p.is_file() and p.name != "rejects.jsonl"
    )
    for name in files:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    # Shards of odd size cut through a record's pair of poisoned triplets; the pairs still alternate in order.
    triplets = load(a, "triplets")
    kinds, ids = triplets["hard_negative"]["kind"], triplets["hard_negative"]["id"]
    assert kinds == ["instruction_negative", "query_negative"] * len(triplets["positive"])
    assert ids[0::2] == ids[1::2] == triplets["positive"]["id"] == load(a)["msmarco"]["id"]
    c = tmp_path / "c"
    build_repo([generated], c, holdout_fraction=0.1, shard_rows=7)
    assert all((a / n).read_bytes() == (c / n).read_bytes() for n in [*files, "rejects.jsonl"])


def test_same_record_with_and_without_provenance_keeps_the_provenance_whatever_the_input_order(tmp_path):
    """The same id and fields from a generator output and from a public copy: the row with provenance wins."""
    lines = [generator_line(i) for i in range(5)]
    generated = write_jsonl(tmp_path / "gen.jsonl", lines)
    public = tmp_path / "public.parquet"
    pq.write_table(pa.Table.from_pylist([public_row(i) for i in range(5)]), public)
    rejudged = write_jsonl(  # the same generation judged again, with another verdict
        tmp_path / "rejudged.jsonl",
        [{**lines[0], "provenance": {**lines[0]["provenance"], "verdicts": [{"check": "p", "passed": True}]}}],
    )
    a, b = tmp_path / "a", tmp_path / "b"
    stats_a = build_repo([generated, rejudged, public], a)
    stats_b = build_repo([public, rejudged, generated], b)
    assert stats_a.duplicates["duplicate_id"] == stats_b.duplicates["duplicate_id"] == 6
    assert stats_a.provenance_rows == stats_b.provenance_rows == 5
    for name in _repo_files(a):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name


def test_public_rows_from_parquet_and_jsonl(tmp_path):
    parquet = tmp_path / "public.parquet"
    pq.write_table(pa.Table.from_pylist([public_row(i) for i in range(6)]), parquet)
    jsonl = write_jsonl(tmp_path / "more.jsonl", [public_row(i) for i in range(6, 9)])
    out = tmp_path / "repo"
    stats = build_repo([parquet, jsonl], out, source="metamath")
    assert stats.rows_per_split == {"metamath": 9} and "provenance" not in {c for c in _configs(out)}
    rows = load(out)["metamath"]
    expected = record_id("metamath", public_row(0)["query_positive"], public_row(0)["document_positive"])
    assert expected in rows["id"] and set(rows["source"]) == {"metamath"}


def _configs(out: Path) -> list[str]:
    return [c["config_name"] for c in yaml.safe_load((out / "README.md").read_text().split("---")[1])["configs"]]


def hub_like_copy(tmp_path: Path) -> Path:
    """A local copy laid out like the public InF-IR/InF-IR repo: data/<split>-*.parquet, seven fields, no card."""
    copy = tmp_path / "InF-IR-copy"
    (copy / "data").mkdir(parents=True)
    for split, seeds in {"msmarco": range(5), "leetcode": range(5, 8)}.items():
        table = pa.Table.from_pylist([public_row(i) for i in seeds])
        pq.write_table(table, copy / "data" / f"{split}-00000-of-00001.parquet")
    return copy


def test_local_dataset_folder_splits_become_sources(tmp_path):
    out = tmp_path / "repo"
    stats = build_repo([hub_like_copy(tmp_path)], out)
    assert stats.rows_per_split == {"leetcode": 3, "msmarco": 5}
    # A built repo is itself a valid input: rebuilding gives the same rows and keeps provenance.
    again = tmp_path / "again"
    assert build_repo([out], again).rows_per_split == stats.rows_per_split
    assert (out / "data/msmarco-00000-of-00001.parquet").read_bytes() == (
        again / "data/msmarco-00000-of-00001.parquet"
    ).read_bytes()


def test_hub_id_is_read_with_load_dataset(tmp_path, monkeypatch):
    copy = hub_like_copy(tmp_path)
    calls = []
    real_load, real_configs = datasets.load_dataset, datasets.get_dataset_config_names

    def fake_load(name, *args, **kwargs):
        calls.append(name)
        return real_load(str(copy) if name == "InF-IR/InF-IR" else name, *args, **kwargs)

    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    monkeypatch.setattr(datasets, "get_dataset_config_names", lambda name, **kw: real_configs(str(copy), **kw))
    stats = build_repo(["InF-IR/InF-IR"], tmp_path / "repo")
    assert calls == ["InF-IR/InF-IR"]
    assert stats.rows_per_split == {"leetcode": 3, "msmarco": 5}


def test_unreachable_hub_id_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="^no-such-org/no-such-dataset: cannot load dataset"):
        build_repo(["no-such-org/no-such-dataset"], tmp_path / "repo")


def test_failed_build_leaves_existing_repo_untouched(generated, tmp_path):
    out = tmp_path / "repo"
    build_repo([generated], out)
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    broken = tmp_path / "broken.jsonl"
    broken.write_text(json.dumps(generator_line(1)) + "\nnot json\n")
    with pytest.raises(InputError, match="broken.jsonl:2:"):
        build_repo([broken], out)
    invalid = write_jsonl(tmp_path / "invalid.jsonl", [{"query_positive": "x"}])
    with pytest.raises(BuildError, match="missing_field 1"):
        build_repo([invalid], out)
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".repo-build-")) == []


def test_rebuild_replaces_old_shards_but_keeps_other_files(generated, tmp_path):
    out = tmp_path / "repo"
    build_repo([generated], out, shard_rows=10)
    (out / ".gitattributes").write_text("*.parquet filter=lfs\n")
    build_repo([generated], out)
    assert sorted(p.name for p in (out / "data").iterdir()) == ["msmarco-00000-of-00001.parquet"]
    assert (out / ".gitattributes").exists()


def test_cli_builds_and_reports(generated, tmp_path, capsys):
    out = tmp_path / "repo"
    code = infir_main(["build-repo", "--input", str(generated), "--out", str(out), "--holdout-fraction", "0.25"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "41 records of 44" in printed and "1 invalid, 2 duplicates, 0 contaminated" in printed
    assert (out / "README.md").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--holdout-fraction", "1.5"], "--holdout-fraction must be in [0, 1)"),
        (["--source", "ms-marco"], "is not a valid split name"),
        (["--shard-rows", "0"], "--shard-rows must be >= 1"),
        (["--shard-rows", "-2"], "--shard-rows must be >= 1"),
    ],
)
def test_cli_rejects_bad_options(generated, tmp_path, capsys, args, message):
    assert infir_main(["build-repo", "--input", str(generated), "--out", str(tmp_path / "r"), *args]) == 1
    assert message in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_all_records_invalid_names_the_first_reject(tmp_path, capsys):
    lines = [{**generator_line(i), "query_negative": generator_line(i)["query_positive"]} for i in range(3)]
    invalid = write_jsonl(tmp_path / "invalid.jsonl", lines)
    assert infir_main(["build-repo", "--input", str(invalid), "--out", str(tmp_path / "r")]) == 1
    err = capsys.readouterr().err.strip()
    assert err == (
        "infir: error: no record left to write out of 3 input rows (same_query 3); "
        f"first: {invalid}:1: same_query: query_negative equals query_positive"
    )


def test_a_source_named_like_a_holdout_split(tmp_path):
    """A source ending in `_holdout` is not mistaken for held-out rows, and may not share a held-out split."""
    records = write_jsonl(tmp_path / "r.jsonl", [generator_line(i, "msmarco_holdout") for i in range(8)])
    stats = build_repo([records], tmp_path / "repo")
    assert stats.rows_per_split == {"msmarco_holdout": 8} and stats.holdout_splits == []
    assert stats.triplet_rows == {"positive": 8, "hard_negative": 16}
    lines = [generator_line(i, "a") for i in range(20)] + [generator_line(i, "a_holdout") for i in range(20, 40)]
    both = write_jsonl(tmp_path / "both.jsonl", lines)
    with pytest.raises(BuildError, match="source 'a_holdout' would share its split with held-out rows"):
        build_repo([both], tmp_path / "repo2", holdout_fraction=0.3)


def test_console_script_prints_one_line_for_a_bad_file(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(generator_line(0)) + "\n{broken\n")
    infir = Path(sys.executable).parent / "infir"
    result = subprocess.run(
        [str(infir), "build-repo", "--input", str(bad), "--out", str(tmp_path / "repo")], capture_output=True, text=True
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert result.stderr.startswith(f"infir: error: {bad}:2: invalid JSON")
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "repo").exists()


def test_given_holdout_rows_form_the_holdout_split_and_training_is_decontaminated_against_them(tmp_path):
    train = [generator_line(i) for i in range(12)]
    held = [generator_line(i) for i in range(100, 104)]
    # A training row that copies a held-out passage (a 13-gram and more) must go; the held-out row itself stays.
    leaking = {**generator_line(50), "hard_negative_document_2": held[0]["document_positive"]}
    out = tmp_path / "repo"
    stats = build_repo(
        [write_jsonl(tmp_path / "train.jsonl", [*train, leaking])],
        out,
        holdout=[write_jsonl(tmp_path / "held.jsonl", held)],
    )
    assert stats.rows_per_split == {"msmarco": 12, "msmarco_holdout": 4}
    assert stats.holdout_splits == ["msmarco_holdout"] and stats.contaminated == 1
    loaded = datasets.load_dataset(str(out))
    assert sorted(loaded["msmarco_holdout"]["id"]) == sorted(r["id"] for r in held)
    assert leaking["id"] not in loaded["msmarco"]["id"]
    rejects = [json.loads(line) for line in (out / "rejects.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rejects if r["stage"] == "decontaminate"] == [leaking["id"]]
    # Held-out rows are evaluation data: they never enter the training triplets.
    triplets = datasets.load_dataset(str(out), "triplets")
    assert not set(triplets["positive"]["id"]) & {r["id"] for r in held}


def test_a_training_row_repeating_a_given_holdout_row_never_displaces_it(tmp_path):
    held = [generator_line(i) for i in range(100, 104)]
    copy = {**held[0], "provenance": {**held[0]["provenance"], "judge_model": "a-judge"}}  # sorts first by content
    stats = build_repo(
        [write_jsonl(tmp_path / "train.jsonl", [*[generator_line(i) for i in range(8)], copy])],
        tmp_path / "repo",
        holdout=[write_jsonl(tmp_path / "held.jsonl", held)],
    )
    assert stats.rows_per_split == {"msmarco": 8, "msmarco_holdout": 4}
    assert stats.duplicates["duplicate_id"] == 1


def test_streamed_build_writes_the_bytes_of_a_build_held_in_memory(tmp_path, monkeypatch):
    """Read in batches of 5, spilled in runs of 15 rows read back 3 at a time and written in windows of 7: the same
    repo and rejects, byte for byte, as one batch and one run (the whole input in memory, as the builder was before it
    streamed). The input has what makes ordering hard: ids repeated across runs with other content or provenance,
    exact and near copies under other ids, invalid and contaminated rows, several sources, given and drawn held-out
    rows."""
    import infir_dataset.build_repo as build_module
    import infir_dataset.sorted_runs as runs_module

    lines = [generator_line(i, source="nq" if i % 4 == 0 else "msmarco") for i in range(60)]
    lines += [{**lines[i], "provenance": {**lines[i]["provenance"], "judge_model": "another"}} for i in (3, 9, 30)]
    lines += [{key: value for key, value in lines[i].items() if key != "provenance"} for i in (5, 40)]
    lines += [{**lines[7], "document_positive": lines[7]["document_positive"] + " more"}]  # same id, other passage
    lines += [{**lines[11], "id": "msmarco-exactcopy"}, {**lines[12], "id": "msmarco-nearcopy"}]
    lines[-1]["query_positive"] = lines[-1]["query_positive"].upper() + "?"
    lines += [{**generator_line(70), "query_negative": generator_line(70)["query_positive"]}]  # invalid
    lines += [
        {**generator_line(71), "hard_negative_document_2": lines[20]["document_positive"]}
    ]  # leaks a held-out row
    order = list(range(len(lines)))
    random.Random(0).shuffle(order)
    records = write_jsonl(tmp_path / "records.jsonl", [lines[i] for i in order if i != 20])
    held = write_jsonl(tmp_path / "held.jsonl", [lines[20], generator_line(80)])
    options = dict(decontaminate=[], holdout=[held], holdout_fraction=0.2, shard_rows=4)

    whole = build_repo([records], tmp_path / "whole", **options)
    monkeypatch.setattr(build_module, "READ_BATCH_ROWS", 5)
    monkeypatch.setattr(build_module, "ROW_GROUP_ROWS", 7)
    monkeypatch.setattr(runs_module, "RUN_ROWS", 11)
    monkeypatch.setattr(runs_module, "RUN_BATCH_ROWS", 3)
    written = []
    close = runs_module.RunWriter.close
    monkeypatch.setattr(runs_module.RunWriter, "close", lambda self: written.extend(close(self)) or self.runs)
    streamed = build_repo([records], tmp_path / "streamed", **options)

    assert len(written) == 5  # 70 valid rows in runs of 15 (batches of 5 until a run holds 11 or more)
    assert {**streamed.__dict__, "out_dir": ""} == {**whole.__dict__, "out_dir": ""}
    assert (whole.duplicates, whole.contaminated) == (
        {"duplicate_id": 6, "exact_duplicate": 1, "near_duplicate": 1},
        1,
    )
    # Of rows sharing an id, the first by content, then provenance (none last) is kept, as before streaming.
    rows = {row["id"]: row for row in pq.read_table(tmp_path / "streamed" / "data").to_pylist()}
    provenance = {row["id"]: row for row in pq.read_table(tmp_path / "streamed" / "provenance").to_pylist()}
    assert rows[lines[7]["id"]]["document_positive"] == lines[7]["document_positive"]
    assert provenance[lines[3]["id"]]["judge_model"] == "another" and lines[5]["id"] in provenance
    files = [*_repo_files(tmp_path / "whole"), "rejects.jsonl"]
    assert files == [*_repo_files(tmp_path / "streamed"), "rejects.jsonl"]
    for name in files:
        assert (tmp_path / "whole" / name).read_bytes() == (tmp_path / "streamed" / name).read_bytes(), name


def test_a_repo_rebuilt_in_place_is_read_afresh(tmp_path):
    """datasets keys its cache of a local folder on the card, which a rebuild with rows of the same sizes leaves as it
    was: `infembed train` and build-repo's dataset input must still see the new rows (`local_cache.cache_dir_for`)."""
    from infembed_model.train import InfEmbedTrainArguments, load_training_data
    from infir_dataset.records import iter_rows

    lines = [generator_line(i) for i in range(6)]
    repo = tmp_path / "repo"
    build_repo([write_jsonl(tmp_path / "a.jsonl", lines)], repo)
    args = InfEmbedTrainArguments(data=str(repo), backbone="unused")
    before = load_training_data(args)[0]["hard_negative_document_1"]
    card = (repo / "README.md").read_text()
    edited = [{**line, "hard_negative_document_1": "Z" + line["hard_negative_document_1"][1:]} for line in lines]
    build_repo([write_jsonl(tmp_path / "b.jsonl", edited)], repo)
    assert (repo / "README.md").read_text() == card  # same counts and sizes: the card cannot tell the rows apart
    after = load_training_data(args)[0]["hard_negative_document_1"]
    assert after != before and all(text.startswith("Z") for text in after)
    assert all(row.data["hard_negative_document_1"].startswith("Z") for row in iter_rows(repo))
