"""Per-record rules, input reading, deduplication and decontamination of `infir build-repo`, on small fixtures."""

import json
import random
import unicodedata

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from infir_rows import public_row, words

from infir_dataset.decontaminate import NgramIndex, contaminated_fields, load_eval_texts
from infir_dataset.dedup import deduplicate
from infir_dataset.normalise import normalise, normalise_array
from infir_dataset.records import InputError, iter_rows, to_record
from infir_dataset.schema import RECORD_FIELDS, record_id
from infir_dataset.validate import EDIT_ALLOWANCE_WORDS, LENGTH_TOLERANCE, MAX_EDIT_SHARE, reason_code, validate

# ---------------------------------------------------------------- validation


def test_valid_public_row_has_no_reasons():
    assert validate(public_row(0)) == []


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"query_negative": None}, "missing_field"),
        ({"document_positive": 3}, "not_a_string"),
        ({"instruction_negative": "   "}, "empty_field"),
        ({"instruction_positive": "two words"}, "too_short"),
        ({"document_positive": " ".join(["w"] * 3000)}, "too_long"),
        ({"query_positive": "x" * 2500}, "too_long"),
        ({"id": ""}, "bad_id"),
        ({"source": "ms-marco"}, "bad_source"),
        ({"provenance": {"generator_model": "g", "judge_model": "j"}}, "bad_provenance"),
        (
            {"provenance": {"generator_model": "g", "judge_model": "j", "prompt_version": "v", "verdicts": [{}]}},
            "bad_provenance",
        ),
    ],
)
def test_each_field_rule_rejects_with_its_code(change, code):
    row = {**public_row(1), **change}
    if change.get("query_negative", 1) is None:
        del row["query_negative"]
    assert code in {reason_code(r) for r in validate(row)}


def test_poisoned_parts_must_differ_from_positive_ignoring_case_and_spacing():
    row = public_row(2)
    row["instruction_negative"] = "  " + row["instruction_positive"].upper().replace(" ", "   ")
    row["query_negative"] = row["query_positive"]
    row["hard_negative_document_2"] = row["document_positive"] + "\n"
    codes = [reason_code(r) for r in validate(row)]
    assert codes.count("same_instruction") == 1
    assert codes.count("same_query") == 1
    assert codes.count("same_passage") == 1
    assert "same_passage: hard_negative_document_2 equals document_positive" not in validate(row)  # pair named once
    assert any("document_positive equals hard_negative_document_2" in r for r in validate(row))


def test_punctuation_only_edits_do_not_make_a_poisoned_part_different():
    row = public_row(6)
    row["instruction_negative"] = row["instruction_positive"].replace(" ", ", ", 3) + "."
    row["query_negative"] = row["query_positive"] + "?"
    row["hard_negative_document_1"] = '"' + row["document_positive"].replace(" ", " - ", 1) + '"'
    assert sorted(reason_code(r) for r in validate(row)) == ["same_instruction", "same_passage", "same_query"]


def test_differs_rules_use_the_shared_normaliser():
    """The prefix shortcut never hides an equality that `normalise` sees, and a word edit is still a difference."""
    row = public_row(7)
    row["query_negative"] = "x" * 62 + " ΣΑ rest"
    row["query_positive"] = "X" * 62 + "  σα... rest"
    assert normalise(row["query_negative"]) == normalise(row["query_positive"])
    assert [reason_code(r) for r in validate(row)] == ["same_query"]
    row["query_positive"] = "x" * 62 + " σα rest more"
    assert validate(row) == []


def test_all_three_passages_pairwise_different():
    row = public_row(3)
    row["hard_negative_document_1"] = row["hard_negative_document_2"]
    assert [reason_code(r) for r in validate(row)] == ["same_passage"]


def _codes(row: dict) -> list[str]:
    return [reason_code(r) for r in validate(row)]


def test_poisoned_instruction_and_query_must_be_minimal_edits():
    assert MAX_EDIT_SHARE == 0.6 and EDIT_ALLOWANCE_WORDS == 2
    positive = [f"a{i}" for i in range(20)]  # 20 distinct words: at most 12 dropped, at most 60% of I- new
    new = [f"n{i}" for i in range(31)]
    row = {**public_row(8), "instruction_positive": " ".join(positive)}
    for negative, codes in [
        (positive[:8] + new[:12], []),  # 12 of 20 words changed
        (positive[:7] + new[:13], ["instruction_negative_not_minimal_edit"]),  # 13
        (positive[:8], []),  # 12 words dropped
        (positive[:7], ["instruction_negative_not_minimal_edit"]),
        # Both ways: 30 words added are 60% of I-; 31 are more (although no word of I+ is dropped).
        (positive + new[:30], []),
        (positive + new[:31], ["instruction_negative_not_minimal_edit"]),
    ]:
        assert _codes({**row, "instruction_negative": " ".join(negative)}) == codes, negative
    # Words are compared normalised: case and punctuation change no word.
    assert _codes({**row, "instruction_negative": " ".join([f"{w.upper()}," for w in positive[:8]] + new[:12])}) == []
    # A short query may still swap an entity of two words; a rewrite of it is refused.
    row = {**public_row(8), "query_positive": "new york weather", "query_negative": "los angeles weather"}
    assert _codes(row) == []
    row["query_negative"] = "best pizza in town"
    assert _codes(row) == ["query_negative_not_minimal_edit"]
    assert validate(row)[0].startswith(
        "query_negative_not_minimal_edit: query_negative drops 3 of the 3 distinct words of query_positive and adds 4"
    )


def test_hard_negatives_must_be_within_a_quarter_of_the_positive_length_in_characters_or_words():
    assert LENGTH_TOLERANCE == 0.25
    row = {**public_row(9), "document_positive": " ".join(["pp"] * 100)}  # 100 words, 299 characters
    row["hard_negative_document_2"] = " ".join(["qq"] * 100)
    for negative, codes in [
        (["hh"] * 125, []),  # 25% more words (and 25.1% more characters)
        (["hh"] * 75, []),  # 25% fewer words
        (["hhhh"] * 100, []),  # as many words, longer ones: 67% more characters
        (["hhhhh"] * 50, []),  # half the words, longer ones: as many characters
        (["hh"] * 126, ["hard_negative_1_length_mismatch"]),  # 26% more of both
        (["hh"] * 74, ["hard_negative_1_length_mismatch"]),  # 26% fewer of both
    ]:
        assert _codes({**row, "hard_negative_document_1": " ".join(negative)}) == codes, len(negative)
    row["hard_negative_document_2"] = " ".join(["qq"] * 200)
    assert _codes({**row, "hard_negative_document_1": " ".join(["hh"] * 100)}) == ["hard_negative_2_length_mismatch"]


# ---------------------------------------------------------------- reading


def test_jsonl_bad_line_names_file_and_line(tmp_path):
    path = tmp_path / "records.jsonl"
    path.write_text(json.dumps(public_row(0)) + "\n\n" + '{"query_positive": "x",\n')
    rows = iter_rows(path)
    assert next(rows).origin.line == 1
    with pytest.raises(InputError) as err:
        next(rows)
    assert str(err.value).startswith(f"{path}:3: invalid JSON")


def test_jsonl_line_that_is_not_an_object(tmp_path):
    path = tmp_path / "records.jsonl"
    path.write_text("[1, 2]\n")
    with pytest.raises(InputError, match=r"records.jsonl:1: expected a JSON object"):
        list(iter_rows(path))


def test_mistyped_file_path_is_not_taken_for_a_hub_id(tmp_path, monkeypatch):
    import datasets

    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: pytest.fail("looked up on the Hub"))
    monkeypatch.chdir(tmp_path)
    for path in ("gen/records.jsonl", "out/public.parquet", "gen/records.ndjson", "x/data.json"):
        with pytest.raises(InputError, match=f"^{path}: no such file$"):
            iter_rows(path)


def test_unreadable_inputs(tmp_path):
    bad = tmp_path / "broken.parquet"
    bad.write_bytes(b"not parquet at all")
    with pytest.raises(InputError, match="broken.parquet: cannot read Parquet"):
        list(iter_rows(bad))
    (tmp_path / "x.csv").write_text("a,b\n")
    with pytest.raises(InputError, match="unknown file type"):
        iter_rows(tmp_path / "x.csv")
    with pytest.raises(InputError, match="no such file"):
        iter_rows(tmp_path / "missing.jsonl")


def test_parquet_rows_keep_row_numbers_and_public_rows_get_derived_ids(tmp_path):
    path = tmp_path / "public.parquet"
    pq.write_table(pa.Table.from_pylist([public_row(i) for i in range(3)]), path)
    raws = list(iter_rows(path))
    assert [r.origin.row for r in raws] == [0, 1, 2]
    record, provenance = to_record(raws[1], "metamath")
    assert provenance is None
    assert record["source"] == "metamath"
    assert record["id"] == record_id("metamath", raws[1].data["query_positive"], raws[1].data["document_positive"])
    assert set(record) == {"id", "source", *RECORD_FIELDS}


def test_generator_line_keeps_its_id_source_and_provenance(tmp_path):
    verdicts = [{"check": "positive_relevant", "passed": True, "reason": None}]
    prov = {"generator_model": "gpt-4o-mini", "judge_model": "o3-mini", "prompt_version": "v1", "verdicts": verdicts}
    line = {"id": "msmarco-abc", "source": "msmarco", **public_row(4), "provenance": prov}
    path = tmp_path / "records.jsonl"
    path.write_text(json.dumps(line) + "\n")
    (raw,) = iter_rows(path)
    record, provenance = to_record(raw, "other")
    assert (record["id"], record["source"]) == ("msmarco-abc", "msmarco")
    assert provenance["verdicts"] == [{"check": "positive_relevant", "passed": True, "reason": ""}]
    assert provenance["id"] == "msmarco-abc"


# ---------------------------------------------------------------- dedup


def _table(rows: list[dict]) -> pa.Table:
    return pa.Table.from_pylist(rows)


def test_normalise_of_one_text_and_of_an_arrow_array_agree():
    texts = [
        "  Hello,   World!\n It's\tOK ",
        "a\u00a0b\u3000\u3000c\u2028d",
        "x--y...z",
        "ÜNÏCÖDÉ  Straße!",
        "tab\tand\x0bvertical\x1cseparator",
        "",
        " ... ",
        "e_mail|pipe~tilde{brace}",
    ]
    assert normalise(texts[0]) == "hello world it s ok"
    assert normalise_array(pa.array(texts)).to_pylist() == [normalise(t) for t in texts]


def test_dedup_exact_near_and_repeated_ids_keep_first():
    base = {"instruction_positive": "Find recent work.", "query_positive": "what is x", "document_positive": "X is y."}
    rows = [
        {"id": "a", **base},
        {"id": "a", **base, "instruction_positive": "other"},  # repeated id
        {"id": "b", **base},  # exact duplicate of a
        {"id": "c", **base, "instruction_positive": "find RECENT work"},  # near duplicate of a
        {"id": "d", **base, "query_positive": "what is z"},  # distinct
        {"id": "e", **base, "instruction_positive": "other"},  # same text as removed row 1: kept
    ]
    result = deduplicate(_table(rows))
    assert result.keep.tolist() == [True, False, False, False, True, True]
    assert result.counts() == {"duplicate_id": 1, "exact_duplicate": 1, "near_duplicate": 1}
    assert result.removed == [(1, "duplicate_id", "a"), (2, "exact_duplicate", "a"), (3, "near_duplicate", "a")]


def test_dedup_follows_the_given_order():
    rows = [{"id": i, "instruction_positive": "i", "query_positive": "q", "document_positive": "p"} for i in "xy"]
    result = deduplicate(_table(rows), np.array([1, 0]))
    assert result.removed == [(1, "exact_duplicate", "y")]


# ---------------------------------------------------------------- decontamination

EVAL_PASSAGE = "the quick brown fox jumps over the lazy dog and then runs far away into the dark forest"


def test_ngram_overlap_is_case_and_punctuation_insensitive():
    index = NgramIndex.from_texts([EVAL_PASSAGE, "What is X?"])
    texts = [
        "Intro words. " + EVAL_PASSAGE.upper().replace(" ", "  ") + "!",  # shares a 13-gram
        " ".join(EVAL_PASSAGE.split()[:12]) + " cat",  # only 12 shared tokens
        "what is x",  # short text equal to a short eval text
        "what is x exactly",  # short, not equal
        "",
    ]
    assert index.contains(texts).tolist() == [True, False, True, False, False]


def test_ngram_match_depends_on_token_order():
    tokens = [f"t{i}" for i in range(13)]
    index = NgramIndex.from_texts([" ".join(tokens)])
    permuted = []
    for i, j in [(1, 2), (3, 4), (9, 10), (0, 5), (11, 12)]:
        swapped = list(tokens)
        swapped[i], swapped[j] = swapped[j], swapped[i]
        permuted.append(" ".join(swapped))
    assert index.contains([" ".join(tokens), *permuted]).tolist() == [True] + [False] * len(permuted)


def test_contaminated_fields_names_fields():
    index = NgramIndex.from_texts([EVAL_PASSAGE])
    row = public_row(5)
    clean = pa.Table.from_pylist([row, {**row, "hard_negative_document_2": EVAL_PASSAGE}])
    assert contaminated_fields(clean, index) == [[], ["hard_negative_document_2"]]


def test_instructions_are_decontaminated_too():
    # FollowIR-style evaluation sets ship long instructions; a generated one that repeats them is contaminated.
    instruction = "Relevant documents describe the " + EVAL_PASSAGE + "; documents about cats are not relevant."
    index = NgramIndex.from_texts([instruction])
    row = public_row(5)
    rows = pa.Table.from_pylist(
        [{**row, "instruction_positive": instruction, "instruction_negative": "Only " + EVAL_PASSAGE}]
    )
    assert contaminated_fields(rows, index) == [["instruction_positive", "instruction_negative"]]


def test_large_random_texts_do_not_collide():
    rng = random.Random(0)
    index = NgramIndex.from_texts([words(rng, 80) for _ in range(2000)])
    assert not index.contains([words(rng, 80) for _ in range(2000)]).any()


def test_eval_texts_from_jsonl_mteb_and_beir_folders(tmp_path):
    jsonl = tmp_path / "eval.jsonl"
    jsonl.write_text(json.dumps({"query": "q one", "passage": "p one"}) + "\n" + json.dumps({"text": "t"}) + "\n")
    assert list(load_eval_texts([jsonl])) == ["q one", "p one", "t"]

    mteb = tmp_path / "Robust04InstructionRetrieval"
    for config, rows in {
        "corpus": [{"_id": "d1", "title": "", "text": "doc text"}],
        "queries": [{"_id": "q1", "text": "query text"}],
        "instruction": [{"query-id": "q1", "instruction": "only news"}],
        "default": [{"query-id": "q1", "corpus-id": "d1", "score": 1}],
    }.items():
        (mteb / config).mkdir(parents=True)
        pq.write_table(pa.Table.from_pylist(rows), mteb / config / "test-00000-of-00001.parquet")
    assert sorted(load_eval_texts([mteb])) == ["doc text", "only news", "query text"]

    beir = tmp_path / "beir"
    (beir / "qrels").mkdir(parents=True)
    (beir / "corpus.jsonl").write_text(json.dumps({"_id": "1", "title": "t", "text": "beir doc"}) + "\n")
    (beir / "queries.jsonl").write_text(json.dumps({"_id": "1", "text": "beir query"}) + "\n")
    (beir / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n1\t1\t1\n")
    assert sorted(load_eval_texts([beir])) == ["beir doc", "beir query"]


def test_eval_inputs_errors(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match="no corpus/queries"):
        list(load_eval_texts([empty]))
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "ok"}\n{oops\n')
    with pytest.raises(InputError, match=r"bad.jsonl:2: invalid JSON"):
        list(load_eval_texts([bad]))
    no_text = tmp_path / "ids.jsonl"
    no_text.write_text('{"_id": "1"}\n')
    with pytest.raises(InputError, match="no evaluation texts"):
        list(load_eval_texts([no_text]))


def test_normalise_and_its_arrow_form_agree_on_every_character():
    """Dedup's Arrow path and the Python normaliser of validation and the pipeline must agree on every character
    (of the Unicode version Python knows; unassigned and private-use characters left aside)."""
    chars = [chr(c) for c in range(0x110000) if unicodedata.category(chr(c)) not in ("Cn", "Co", "Cs")]
    texts = [f"Ab{c}cD {c}{c} x{c}" for c in chars]
    arrow = normalise_array(pa.array(texts)).to_pylist()
    assert [(hex(ord(c)), a) for c, t, a in zip(chars, texts, arrow, strict=True) if a != normalise(t)] == []


# Texts that the five normalisers of old told apart or not, each in its own way.
FORMERLY_DISAGREEING = [
    ("e_mail", "e mail"),  # `\w` kept "_" in a word; the others made it a space
    ("“remote” work", '"remote" work'),  # Unicode quotes: only ASCII punctuation was removed by dedup and validate
    ("30°C", "30 C"),  # a symbol (So)
    ("c++ — or c#", "c or c"),  # ASCII symbols and an em dash
    ("ΟΔΟΣ", "οδοσ"),  # final sigma: `str.lower` gives ς, Arrow σ
    ("İstanbul", "istanbul"),  # `str.lower` gives two characters
]


@pytest.mark.parametrize(("a", "b"), FORMERLY_DISAGREEING)
def test_formerly_disagreeing_texts_are_the_same_words_everywhere(a, b):
    from infir_dataset.pipeline import Prompts, precheck_negatives

    assert normalise(a) == normalise(b) and normalise_array(pa.array([a, b])).to_pylist() == [normalise(a)] * 2
    # The generator's precheck and validation reject the same poisoned instruction...
    row = public_row(10)
    row["instruction_positive"] = f"Only sources on {a} written after 2020."
    row["instruction_negative"] = f"Only sources on {b} written after 2020."
    assert precheck_negatives(row, Prompts()) == ["instruction_negative_equals_positive"]
    assert _codes(row) == ["same_instruction"]
    # ... dedup finds the near duplicate ...
    rows = [{"id": i, **row, "instruction_positive": text} for i, text in enumerate([a, b])]
    assert deduplicate(_table(rows)).counts()["near_duplicate"] == 1
    # ... and decontamination matches one with the other.
    assert NgramIndex.from_texts([a]).contains([b]).tolist() == [True]
