"""`infir generate` against the OpenAI-compatible test server: schema, rejections, report, resume, concurrency."""

import contextlib
import importlib.util
import json
import random
import shutil
from collections import Counter

import pytest
from openai_test_server import OpenAITestServer, _tag, run_generate, write_seeds

from infir_dataset import answers, generate
from infir_dataset.pipeline import (
    JUDGE_CHECKS,
    PLAUSIBILITY_CHECKS,
    PROMPT_VERSION,
    REQUESTS_PER_SEED,
    JsonlAppender,
    Prompts,
    precheck_instruction,
)
from infir_dataset.report import DEFAULT_PRICES, price_of
from infir_dataset.schema import PROVENANCE_FEATURES, RECORD_FEATURES, RECORD_FIELDS, record_id

# Seed queries and the rejection each must get (markers tell the test server how to misbehave).
MARKED = {
    "what is COPY_QUERY here": ["instruction_copies_query"],
    "SAME_NEG_INSTRUCTION for flights": ["instruction_negative_equals_positive"],
    "HN_IS_POSITIVE for trains": ["hard_negative_1_equals_positive"],
    "JUDGE_SAYS_NO about boats": [
        "judge:positive_relevant",
        "judge:hard_negative_1_relevant",
        "judge:hard_negative_2_relevant",
    ],
    "REWRITTEN_NEGATIVES about buses": ["instruction_negative_not_minimal_edit", "query_negative_not_minimal_edit"],
    "LONG_HARD_NEGATIVES about ferries": ["hard_negative_1_length_mismatch", "hard_negative_2_length_mismatch"],
    "IMPLAUSIBLE about planes": ["judge:instruction_negative_plausible", "judge:query_negative_plausible"],
}
# Seeds stopped by a deterministic check before any judge call.
PRECHECKED = [
    "what is COPY_QUERY here",
    "SAME_NEG_INSTRUCTION for flights",
    "HN_IS_POSITIVE for trains",
    "REWRITTEN_NEGATIVES about buses",
    "LONG_HARD_NEGATIVES about ferries",
]
GOOD = ["how long do cats live", "what is the boiling point of water", "who wrote hamlet"]
CHECK_NAMES = [c[0] for c in JUDGE_CHECKS] + [c[0] for c in PLAUSIBILITY_CHECKS]


def _lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def _judge_requests(server, text, schema=("relevance_verdict", "plausibility_verdict")):
    return [
        r
        for r in server.chat_requests()
        if r["body"]["response_format"]["json_schema"]["name"] in schema and text in json.dumps(r["body"])
    ]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One run over good and marked seeds, shared by the tests that read its output."""
    tmp = tmp_path_factory.mktemp("gen")
    seeds = write_seeds(tmp / "seeds.jsonl", GOOD + list(MARKED))
    prices = tmp / "prices.json"
    prices.write_text(json.dumps({"gen-model": {"input": 1.0, "output": 2.0}}))
    with OpenAITestServer() as server:
        argv = ["--seeds", str(seeds), "--out", str(tmp / "out"), "--base-url", server.base_url]
        argv += ["--generator-model", "gen-model", "--judge-model", "judge-model", "--prices", str(prices)]
        assert run_generate(*argv) == 0
        yield {"out": tmp / "out", "server": server, "argv": argv, "seeds": seeds}


def test_records_follow_the_schema(run):
    records = _lines(run["out"] / "records.jsonl")
    assert sorted(r["query_positive"] for r in records) == sorted(GOOD)
    for rec in records:
        assert set(rec) == {"id", "source", *RECORD_FIELDS, "provenance"}
        RECORD_FEATURES.encode_example({k: rec[k] for k in RECORD_FEATURES})  # types match the dataset schema
        provenance = {"id": rec["id"], "source": rec["source"], **rec["provenance"]}
        assert set(provenance) == set(PROVENANCE_FEATURES)
        PROVENANCE_FEATURES.encode_example(provenance)
        assert rec["id"] == record_id("msmarco", rec["query_positive"], rec["document_positive"])
        assert rec["provenance"]["prompt_version"] == PROMPT_VERSION
        assert rec["provenance"]["generator_model"] == "gen-model"
        assert rec["provenance"]["judge_model"] == "judge-model"
        assert [v["check"] for v in rec["provenance"]["verdicts"]] == CHECK_NAMES
        assert all(v["passed"] and v["reason"] for v in rec["provenance"]["verdicts"])
        # The relations the server was asked to build: I- / HN1 and Q- / HN2.
        assert rec["instruction_positive"].startswith("[I+]") and rec["instruction_negative"].startswith("[I-]")
        assert rec["hard_negative_document_1"].startswith("[HN1]")
        assert rec["query_negative"].startswith("[Q-]") and rec["hard_negative_document_2"].startswith("[HN2]")


def test_rejections_name_their_reasons_and_prechecks_spend_no_judge_call(run):
    rejected = {r["query"]: r for r in _lines(run["out"] / "rejected.jsonl")}
    assert {q: r["reasons"] for q, r in rejected.items()} == MARKED
    for query in PRECHECKED:
        assert _judge_requests(run["server"], query) == []
    for query in ("REWRITTEN_NEGATIVES about buses", "LONG_HARD_NEGATIVES about ferries"):
        assert rejected[query]["stage"] == "validate" and "at most" in rejected[query]["detail"]
    judged = rejected["JUDGE_SAYS_NO about boats"]
    assert judged["stage"] == "judge" and len(judged["provenance"]["verdicts"]) == len(CHECK_NAMES)
    copy = rejected["what is COPY_QUERY here"]
    assert copy["generated"] == {"instruction_positive": "what is COPY_QUERY here"} and copy["seed_id"] == "s3"


def test_plausibility_is_asked_of_each_poisoned_request_without_a_passage(run):
    asked = []
    for request in _judge_requests(run["server"], "", schema=("plausibility_verdict",)):
        user = request["body"]["messages"][-1]["content"]
        assert "<passage>" not in user  # a request is plausible or not whatever passage answers it
        asked.append((_tag(user, "instruction"), _tag(user, "query")))
    for rec in _lines(run["out"] / "records.jsonl"):
        mine = [(i, q) for i, q in asked if i in (rec["instruction_positive"], rec["instruction_negative"])]
        assert sorted(mine) == sorted(
            [
                (rec["instruction_negative"], rec["query_positive"]),
                (rec["instruction_positive"], rec["query_negative"]),
            ]
        )


def test_report_counts_what_the_server_saw(run):
    report = json.loads((run["out"] / "report.json").read_text())
    chats = run["server"].chat_requests()
    assert report["finished"] is True and report["error"] is None
    assert report["seeds_read"] == len(GOOD) + len(MARKED) and report["seeds_already_done"] == 0
    assert report["records_kept"] == report["records_total"] == len(GOOD)
    assert report["seeds_rejected"] == len(MARKED)
    assert report["rejections_by_reason"] == dict(Counter(r for reasons in MARKED.values() for r in reasons))
    assert report["requests_made"] == len(chats) and report["cache_hits"] == 0 and report["retries"] == 0
    # Every request of a good seed and of the two judged markers; COPY_QUERY stops after I+, the others after I-/Q-.
    assert len(chats) == REQUESTS_PER_SEED * (len(GOOD) + 2) + 1 + 3 * (len(PRECHECKED) - 1)
    sent = Counter()
    for r in chats:
        # The test server counts the words of the prompt as its prompt tokens.
        sent[r["body"]["model"]] += len(" ".join(m["content"] for m in r["body"]["messages"]).split())
    assert {m: t["prompt_tokens"] for m, t in report["tokens_per_model"].items()} == dict(sent)
    gen = report["tokens_per_model"]["gen-model"]
    cost = report["estimated_cost_usd"]
    assert cost["per_model"]["gen-model"] == pytest.approx((gen["prompt_tokens"] + 2 * gen["completion_tokens"]) / 1e6)
    assert cost["per_model"]["judge-model"] is None and cost["models_without_price"] == ["judge-model"]
    assert report["wall_time_s"] > 0


def test_rerun_sends_no_request_and_repairs_a_cut_last_line(run, tmp_path):
    out = shutil.copytree(run["out"], tmp_path / "out")  # the shared run stays as the other tests expect it
    records_path = out / "records.jsonl"
    before = records_path.read_bytes()
    cut = before[: -len(before.splitlines(keepends=True)[-1]) // 2]  # a kill in the middle of the last line
    records_path.write_bytes(cut)
    with OpenAITestServer() as server:
        new = {str(run["out"]): str(out), run["argv"][run["argv"].index("--base-url") + 1]: server.base_url}
        argv = [new.get(a, a) for a in run["argv"]]
        assert run_generate(*argv) == 0
        assert server.requests == []  # the redone seed's answers all come from the cache
    records = _lines(records_path)
    assert sorted(r["id"] for r in records) == sorted({r["id"] for r in records}) and len(records) == len(GOOD)
    report = json.loads((out / "report.json").read_text())
    assert report["seeds_already_done"] == len(GOOD) + len(MARKED) - 1
    assert report["records_kept"] == 1 and report["cache_hits"] == REQUESTS_PER_SEED and report["requests_made"] == 0


def test_requests_in_flight_never_exceed_concurrency(tmp_path):
    seeds = write_seeds(tmp_path / "s.jsonl", [f"question number {i}" for i in range(8)])
    with OpenAITestServer(latency=0.05) as server:
        run_generate(
            "--seeds", str(seeds), "--out", str(tmp_path / "o"), "--base-url", server.base_url, "--concurrency", "3"
        )
        assert server.max_in_flight == 3
        assert len(server.chat_requests()) == 8 * REQUESTS_PER_SEED


def test_bad_prices_file_and_missing_key_are_one_line_errors(tmp_path, monkeypatch):
    seeds = write_seeds(tmp_path / "s.jsonl", ["q"])
    prices = tmp_path / "prices.json"
    prices.write_text('{"gpt-4o-mini": {"input": "cheap"}}')
    with pytest.raises(SystemExit, match=f"{prices}: model 'gpt-4o-mini' needs numeric"):
        run_generate(
            "--seeds",
            str(seeds),
            "--out",
            str(tmp_path / "o"),
            "--base-url",
            "http://127.0.0.1:9",
            "--prices",
            str(prices),
        )
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(SystemExit, match="no API key"):
        run_generate("--seeds", str(seeds), "--out", str(tmp_path / "o"))


def test_a_copied_worked_example_is_caught_before_any_judge_call():
    # What SmolLM2-135M wrote for an MS MARCO seed about Disneyland: the example's instruction, slightly changed.
    row = {
        "query_positive": "how much is a cost to run disneyland",
        "document_positive": "Disney's Theme Parks had an operating cost of 571 million dollars.",
        "instruction_positive": "I am deciding whether to keep my cat indoors, so I want sources that compare costs.",
    }
    prompts = Prompts()
    assert precheck_instruction(row, prompts) == ["copies_prompt_example:instruction_positive"]
    row["instruction_positive"] = "Only sources giving the daily operating cost of the parks, in US dollars."
    assert precheck_instruction(row, prompts) == []
    # Phrasing the prompts' rules suggest ("I want sources that compare ...") is no copy of the example.
    row["instruction_positive"] = "I want sources that compare how much the parks cost to run over ten years."
    assert precheck_instruction(row, prompts) == []
    # Words of the seed itself may repeat the template's (the seed is about cats too).
    assert not prompts.copies_template("how long do cats live", "how long do cats live indoors")


@pytest.mark.skipif(importlib.util.find_spec("xllamacpp") is None, reason="xllamacpp is not installed")
def test_a_file_that_is_not_a_gguf_model_is_a_one_line_error(tmp_path):
    seeds = write_seeds(tmp_path / "s.jsonl", ["q"])
    fake = tmp_path / "model.gguf"
    fake.write_bytes(random.Random(0).randbytes(4096))
    with pytest.raises(SystemExit, match=f"infir generate: {fake}: llama.cpp cannot load it"):
        run_generate("--seeds", str(seeds), "--out", str(tmp_path / "o"), "--local-gguf", str(fake))


def test_a_complete_last_line_without_newline_is_kept(tmp_path):
    path = tmp_path / "records.jsonl"
    path.write_text('{"id": "a"}\n{"id": "b"}')  # killed between the line and its newline, or edited by hand
    appender = JsonlAppender(path)
    appender.append({"id": "c"})
    appender.close()
    assert appender.ids == {"a", "b", "c"}
    assert [json.loads(line)["id"] for line in path.read_text().splitlines()] == ["a", "b", "c"]


def test_a_crash_is_reported_as_unfinished(tmp_path):
    seeds = write_seeds(tmp_path / "s.jsonl", ["q"])
    with pytest.raises(SystemExit, match="no such GGUF file"):
        run_generate("--seeds", str(seeds), "--out", str(tmp_path / "o"), "--local-gguf", str(tmp_path / "no.gguf"))
    report = json.loads((tmp_path / "o" / "report.json").read_text())
    assert report["finished"] is False and report["error"].startswith("LocalServerError:")


def test_local_mode_sends_no_more_requests_than_llama_cpp_has_slots(tmp_path, monkeypatch):
    slots = []

    @contextlib.contextmanager
    def fake_local_server(gguf, parallel):
        slots.append(parallel)
        yield server.base_url

    monkeypatch.setattr(generate, "local_llama_server", fake_local_server)
    seeds = write_seeds(tmp_path / "s.jsonl", [f"question number {i}" for i in range(4)])
    with OpenAITestServer(latency=0.05) as server:
        argv = ["--seeds", str(seeds), "--out", str(tmp_path / "o"), "--concurrency", "16"]
        assert run_generate(*argv, "--local-gguf", str(tmp_path / "m.gguf")) == 0
    assert slots == [4] and server.max_in_flight == 4


def test_the_schema_sent_carries_no_docstring():
    # Class docstrings are developer notes; in the schema they would change the prompt outside the templates.
    for answer_type in (answers.PositiveInstruction, answers.InstructionNegative, answers.RelevanceVerdict):
        schema = answers.response_format(answer_type)["json_schema"]["schema"]
        assert "description" not in schema and set(schema["properties"]) == set(answer_type.model_fields)


def test_prices_match_a_dated_snapshot_but_not_another_model():
    assert price_of("gpt-4o-mini-2024-07-18", DEFAULT_PRICES) == DEFAULT_PRICES["gpt-4o-mini"]
    assert price_of("o3", DEFAULT_PRICES) == DEFAULT_PRICES["o3"]
    assert price_of("o3-pro", DEFAULT_PRICES) is None and price_of("gpt-4o-mini-tts", DEFAULT_PRICES) is None
