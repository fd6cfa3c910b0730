"""`--batch`: the OpenAI Batch API end to end against the test server (files, batches, polling, output files)."""

import json

import pytest
from openai_test_server import OpenAITestServer, run_generate, write_seeds

from infir_dataset import batch_mode

QUERIES = ["how long do cats live", "who wrote hamlet", "what is COPY_QUERY here", "ALWAYS_MALFORMED question"]


def _lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def _argv(tmp_path, server, out, *extra):
    seeds = write_seeds(tmp_path / "s.jsonl", QUERIES)
    return ["--seeds", str(seeds), "--out", str(out), "--base-url", server.base_url, *extra]


def test_batch_mode_end_to_end_matches_the_online_run(tmp_path):
    with OpenAITestServer() as server:
        assert (
            run_generate(*_argv(tmp_path, server, tmp_path / "batch", "--batch", "--batch-poll-interval", "0.01")) == 0
        )
        assert server.chat_requests() == []  # everything went through batches
        n_batches = len(server.batches)
        assert run_generate(*_argv(tmp_path, server, tmp_path / "online")) == 0
        online_requests = [r["body"] for r in server.chat_requests()]

    # Stages run as successive batches: I+, then I-/Q-, then the judge; the malformed seed's retries ride along.
    assert n_batches == 3
    request_files = sorted((tmp_path / "batch" / "batches").glob("*.jsonl"))
    assert [p.stem for p in request_files] == ["batch_0", "batch_1", "batch_2"]
    lines = [item for p in request_files for item in _lines(p)]
    assert all(i["method"] == "POST" and i["url"] == "/v1/chat/completions" for i in lines)
    assert all(i["body"]["response_format"]["type"] == "json_schema" for i in lines)
    assert sorted(json.dumps(i["body"], sort_keys=True) for i in lines) == sorted(
        json.dumps(b, sort_keys=True) for b in online_requests
    )  # the very requests the online mode sends

    def without_timing(path):
        return sorted(json.dumps(r, sort_keys=True) for r in _lines(path))

    assert without_timing(tmp_path / "batch" / "records.jsonl") == without_timing(tmp_path / "online" / "records.jsonl")
    rejected = {r["query"]: r["reasons"] for r in _lines(tmp_path / "batch" / "rejected.jsonl")}
    assert rejected == {
        "what is COPY_QUERY here": ["instruction_copies_query"],
        "ALWAYS_MALFORMED question": ["unusable_answer:instruction_positive"],
    }
    report = json.loads((tmp_path / "batch" / "report.json").read_text())
    assert report["batch_requests"] == report["requests_made"] == len(lines)
    assert report["estimated_cost_usd"]["batch_discount_applied"] is True
    online = json.loads((tmp_path / "online" / "report.json").read_text())
    assert report["estimated_cost_usd"]["total"] == pytest.approx(online["estimated_cost_usd"]["total"] / 2, rel=1e-3)


def test_a_batch_submitted_before_a_kill_is_collected_not_resubmitted(tmp_path, monkeypatch):
    out = tmp_path / "out"
    real_collect = batch_mode._collect

    async def killed(*args, **kwargs):
        raise KeyboardInterrupt  # the process dies right after submitting its first batch

    with OpenAITestServer() as server:
        argv = _argv(tmp_path, server, out, "--batch", "--batch-poll-interval", "0.01")
        monkeypatch.setattr(batch_mode, "_collect", killed)
        with pytest.raises(SystemExit, match="interrupted"):
            run_generate(*argv)
        assert len(server.batches) == 1
        monkeypatch.setattr(batch_mode, "_collect", real_collect)
        assert run_generate(*argv) == 0
        assert len(server.batches) == 3  # batch_0 was collected, not paid for twice
    assert len(_lines(out / "records.jsonl")) == 2


def test_a_stage_larger_than_one_batch_is_submitted_whole_before_any_is_awaited(tmp_path, monkeypatch):
    monkeypatch.setattr(batch_mode, "MAX_REQUESTS_PER_BATCH", 3)  # the first stage's 4 requests need 2 batches
    submitted_before_first_wait = []

    async def first_wait(*args, **kwargs):
        submitted_before_first_wait.append(len(server.batches))
        raise KeyboardInterrupt  # enough seen: stop the run here

    monkeypatch.setattr(batch_mode, "_collect", first_wait)
    with OpenAITestServer() as server, pytest.raises(SystemExit, match="interrupted"):
        run_generate(*_argv(tmp_path, server, tmp_path / "out", "--batch"))
    assert submitted_before_first_wait == [2]  # batches of one stage run side by side, not one after another
