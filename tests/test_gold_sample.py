"""The gold sample (infir_dataset/gold/): its size, split, provenance and diversity, and that it builds into a repo."""

import json
from importlib.resources import files

import datasets
import pytest

from infir_dataset import gold_sample
from infir_dataset.build_repo import build_repo
from infir_dataset.pipeline import JUDGE_CHECKS
from infir_dataset.schema import HAND_REVIEWED, HAND_WRITTEN
from infir_dataset.validate import validate

TRAIN, HELDOUT = gold_sample.read_gold("train"), gold_sample.read_gold("heldout")


def test_sample_size_and_split():
    assert len(TRAIN) + len(HELDOUT) >= 500 and len(HELDOUT) >= 100
    assert all(not gold_sample.is_gold_holdout(row["id"]) for row in TRAIN)
    assert all(gold_sample.is_gold_holdout(row["id"]) for row in HELDOUT)
    for field in ("query_positive", "document_positive"):
        train = {row[field].lower() for row in TRAIN}
        held = {row[field].lower() for row in HELDOUT}
        assert len(train) == len(TRAIN) and len(held) == len(HELDOUT), f"a repeated {field}"
        assert not train & held, f"train and held-out share a {field}"


def test_every_row_is_valid_and_says_who_wrote_and_checked_it():
    checks = [name for name, *_ in JUDGE_CHECKS]
    for row in TRAIN + HELDOUT:
        assert validate(row) == [], row["id"]
        provenance = row["provenance"]
        assert (provenance["generator_model"], provenance["judge_model"]) == (HAND_WRITTEN, HAND_REVIEWED)
        assert provenance["prompt_version"] == "v1"
        assert [v["check"] for v in provenance["verdicts"]] == checks, row["id"]
        assert all(v["passed"] and len(v["reason"].split()) >= 3 for v in provenance["verdicts"]), row["id"]


def test_demo_seed_pairs_are_copied_unchanged():
    seeds_file = files("infir_dataset") / "demo_seeds" / "msmarco_dev_sample.jsonl"
    seeds = {seed["id"]: seed for seed in map(json.loads, seeds_file.read_text().splitlines())}
    rows = [row for row in TRAIN + HELDOUT if row["id"] in seeds]
    assert len(rows) >= 150  # most of the 200 demo seeds; the rest were skipped or dropped
    for row in rows:
        assert row["query_positive"] == seeds[row["id"]]["query"]
        assert row["document_positive"] == seeds[row["id"]]["passage"]


def test_diversity_targets_hold_and_the_check_can_fail(capsys):
    assert gold_sample.main([]) == 0
    assert "top_opening_share" in capsys.readouterr().out
    figures = gold_sample.diversity(TRAIN + HELDOUT)
    assert figures["top_opening_share"] <= 0.05 and figures["long_instruction_share"] >= 0.2
    assert figures["hard_negative_edit_share_max"] < 0.5
    monotone = [dict(row, instruction_positive="I want passages that " + row["instruction_positive"]) for row in TRAIN]
    rewritten = [dict(row, hard_negative_document_1=row["hard_negative_document_2"][::-1]) for row in TRAIN[:5]]
    assert gold_sample.problems(gold_sample.diversity(monotone))
    assert gold_sample.problems(gold_sample.diversity(TRAIN[5:] + rewritten))


def test_edit_share_counts_the_words_outside_the_alignment():
    assert gold_sample.edit_share("a b c d", "a b c d") == 0
    assert gold_sample.edit_share("a b c d", "a x c d") == pytest.approx(0.25)
    assert gold_sample.edit_share("a b", "c d e f") == 1


def test_sample_builds_into_a_repo_with_nothing_left_out(tmp_path):
    stats = build_repo([gold_sample.gold_path("train")], tmp_path / "repo", holdout=[gold_sample.gold_path("heldout")])
    assert stats.rows_per_split == {"msmarco": len(TRAIN), "msmarco_holdout": len(HELDOUT)}
    assert stats.rejected == 0 and sum(stats.duplicates.values()) == 0 and stats.contaminated == 0
    loaded = datasets.load_dataset(str(tmp_path / "repo"), "provenance")
    assert set(loaded["msmarco"]["generator_model"]) == {HAND_WRITTEN}
    card = (tmp_path / "repo" / "README.md").read_text()
    assert "written by a few maintainers and checked by a" in card
    assert "written by an LLM" not in card
