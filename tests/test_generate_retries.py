"""Transport faults are retried by the openai client (Retry-After on 429, backoff with jitter on 5xx and timeouts);
answers that do not parse are asked again as new requests, then the seed is rejected with the reason."""

import json

import pytest
from openai_test_server import OpenAITestServer, run_generate, write_seeds

from infir_dataset.pipeline import REQUESTS_PER_SEED


def _run(tmp_path, server, *extra):
    seeds = write_seeds(tmp_path / "s.jsonl", ["how long do cats live"])
    out = tmp_path / "out"
    run_generate("--seeds", str(seeds), "--out", str(out), "--base-url", server.base_url, "--concurrency", "1", *extra)
    return out, json.loads((out / "report.json").read_text())


def _records(out):
    return [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]


def test_429_waits_for_retry_after(tmp_path):
    with OpenAITestServer() as server:
        server.inject("429:1")
        out, report = _run(tmp_path, server)
        first, second = server.chat_requests()[:2]
    assert first["status"] == 429 and second["body"] == first["body"]
    assert second["start"] - first["start"] >= 0.95  # the header's 1 s, not the client's 0.5 s default backoff
    assert report["retries"] == 1 and report["requests_made"] == REQUESTS_PER_SEED and len(_records(out)) == 1


def test_500s_back_off_exponentially(tmp_path):
    with OpenAITestServer() as server:
        server.inject("500", "500")
        out, report = _run(tmp_path, server)
        starts = [r["start"] for r in server.chat_requests()[:3]]
    first_wait, second_wait = starts[1] - starts[0], starts[2] - starts[1]
    assert 0.3 <= first_wait < 0.75 <= second_wait  # 0.5 s then 1 s, each shortened by up to 25 % of jitter
    assert report["retries"] == 2 and len(_records(out)) == 1


def test_timeout_is_retried(tmp_path):
    with OpenAITestServer() as server:
        server.inject("timeout:1.5")
        out, report = _run(tmp_path, server, "--timeout", "0.5")
        statuses = [r["status"] for r in server.chat_requests()]
    assert statuses[0] == "timeout" and statuses.count(200) == REQUESTS_PER_SEED
    assert report["retries"] == 1 and len(_records(out)) == 1


@pytest.mark.parametrize("fault", ["malformed", "truncated"])
def test_an_unparseable_answer_is_asked_again(tmp_path, fault):
    with OpenAITestServer() as server:
        server.inject(fault)
        out, report = _run(tmp_path, server)
        assert len(server.chat_requests()) == REQUESTS_PER_SEED + 1
        first, retry = server.chat_requests()[:2]
    # A new sampling seed, or a deterministic server (llama.cpp, OpenAI with a seed) repeats the same bad answer.
    assert retry["body"] == {**first["body"], "seed": first["body"]["seed"] + 1}
    assert report["parse_retries"] == 1 and report["requests_made"] == REQUESTS_PER_SEED + 1 and len(_records(out)) == 1


@pytest.mark.parametrize(
    ("marker", "why"), [("ALWAYS_MALFORMED", "malformed answer"), ("ALWAYS_TRUNCATED", "truncated")]
)
def test_a_seed_whose_answers_never_parse_is_rejected_with_the_reason(tmp_path, marker, why):
    seeds = write_seeds(tmp_path / "s.jsonl", [f"{marker} question", "a fine question"])
    with OpenAITestServer() as server:
        run_generate("--seeds", str(seeds), "--out", str(tmp_path / "o"), "--base-url", server.base_url)
        asked = [r for r in server.chat_requests() if marker in json.dumps(r["body"])]
    (rejected,) = [json.loads(line) for line in (tmp_path / "o" / "rejected.jsonl").read_text().splitlines()]
    assert rejected["reasons"] == ["unusable_answer:instruction_positive"]
    assert why in rejected["detail"] and "after 3 attempts" in rejected["detail"]
    assert len(asked) == 3  # --parse-attempts (default 3), then the seed is given up
    assert len(_records(tmp_path / "o")) == 1


def test_a_server_that_keeps_failing_stops_the_run_and_loses_nothing(tmp_path):
    queries = ["first question", "second question", "third question", "fourth question"]
    seeds = write_seeds(tmp_path / "s.jsonl", queries)
    argv = ["--seeds", str(seeds), "--out", str(tmp_path / "o"), "--concurrency", "2", "--max-retries", "1"]
    with OpenAITestServer(latency=0.01) as server:
        server.fail_when = "third question"
        with pytest.raises(SystemExit, match=r"stopped \(InternalServerError.*run the same command again to resume"):
            run_generate(*argv, "--base-url", server.base_url)
        report = json.loads((tmp_path / "o" / "report.json").read_text())
        assert report["finished"] is False and "InternalServerError" in report["error"]
        # Every seed the server fully answered before the stop is in the output.
        answered = [
            q
            for q in queries
            if sum(r["status"] == 200 and q in json.dumps(r["body"]) for r in server.chat_requests())
            == REQUESTS_PER_SEED
        ]
        assert sorted(r["query_positive"] for r in _records(tmp_path / "o")) == sorted(answered)
        before = len(server.chat_requests())
        server.fail_when = None
        assert run_generate(*argv, "--base-url", server.base_url) == 0
        again = [r["body"] for r in server.chat_requests()[before:]]
        done_before = [r["body"] for r in server.chat_requests()[:before] if r["status"] == 200]
    assert not [body for body in again if body in done_before]  # nothing answered before is asked again
    assert sorted(r["query_positive"] for r in _records(tmp_path / "o")) == sorted(queries)


def test_a_refused_request_rejects_its_seed_unless_nothing_has_ever_worked(tmp_path):
    seeds = write_seeds(tmp_path / "s.jsonl", ["first question", "second question", "third question"])
    argv = ["--seeds", str(seeds), "--out", str(tmp_path / "o"), "--concurrency", "1"]
    with OpenAITestServer() as server:
        server.inject("400")  # a wrong setting shows on the first request: stop, mark no seed as rejected
        with pytest.raises(SystemExit, match="BadRequestError"):
            run_generate(*argv, "--base-url", server.base_url)
        assert (tmp_path / "o" / "rejected.jsonl").read_text() == ""
        assert run_generate(*argv, "--base-url", server.base_url, "--limit", "1") == 0
        # A resumed run's first request is refused: answers stored by the earlier run show the settings work, so
        # the refusal concerns its seed only (else a seed the server always refuses would stop every rerun).
        server.inject("400")
        assert run_generate(*argv, "--base-url", server.base_url) == 0
    (rejected,) = [json.loads(line) for line in (tmp_path / "o" / "rejected.jsonl").read_text().splitlines()]
    assert rejected["reasons"][0].startswith("unusable_answer:") and "request refused" in rejected["detail"]
    assert len(_records(tmp_path / "o")) == 2


def test_a_request_too_long_for_the_context_rejects_its_seed_even_first(tmp_path):
    seeds = write_seeds(tmp_path / "s.jsonl", ["first question", "second question"])
    with OpenAITestServer() as server:
        server.inject("400:context")
        argv = ["--seeds", str(seeds), "--out", str(tmp_path / "o"), "--base-url", server.base_url]
        assert run_generate(*argv, "--concurrency", "1") == 0
    (rejected,) = [json.loads(line) for line in (tmp_path / "o" / "rejected.jsonl").read_text().splitlines()]
    assert "request refused" in rejected["detail"] and len(_records(tmp_path / "o")) == 1
