"""SIGKILL `infir generate` in the middle of a run, start it again: no finished request is sent twice, no record is
lost or duplicated."""

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

from openai_test_server import OpenAITestServer, write_seeds

from infir_dataset.pipeline import REQUESTS_PER_SEED

SEEDS = 12
CONCURRENCY = 4


def _canonical(body: dict) -> str:
    return json.dumps(body, sort_keys=True)


def _start(seeds, out, server):
    argv = ["--seeds", str(seeds), "--out", str(out), "--base-url", server.base_url, "--concurrency", str(CONCURRENCY)]
    return subprocess.Popen(
        [sys.executable, "-m", "infir_dataset.cli", "generate", *argv],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={**os.environ, "OPENAI_API_KEY": ""},
    )


def test_sigkill_then_resume(tmp_path):
    seeds = write_seeds(tmp_path / "s.jsonl", [f"question number {i} about topic {i}" for i in range(SEEDS)])
    out = tmp_path / "out"
    with OpenAITestServer(latency=0.03) as server:
        proc = _start(seeds, out, server)
        deadline = time.monotonic() + 60
        while server.answered() < 40 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        assert proc.poll() is None, "the run ended before it could be killed: " + proc.stderr.read().decode()[-500:]
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        first_run = server.chat_requests()
        n_first = len(first_run)
        assert n_first < REQUESTS_PER_SEED * SEEDS  # killed mid-run

        with sqlite3.connect(out / "requests.sqlite") as db:
            cached = {_canonical(json.loads(r[0])) for r in db.execute("SELECT request FROM answers")}
        assert len(cached) >= 35  # answers committed as they arrived

        proc = _start(seeds, out, server)
        assert proc.wait(timeout=60) == 0, proc.stderr.read().decode()[-2000:]
        second_run = [_canonical(r["body"]) for r in server.chat_requests()[n_first:]]

    answered_first = {_canonical(r["body"]) for r in first_run if r["status"] == 200}
    repeated = [body for body in second_run if body in answered_first]
    assert not [body for body in repeated if body in cached]  # no cached answer is asked for again
    assert len(repeated) <= CONCURRENCY  # at most the answers that were on the wire at the kill

    records = [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]
    rejected = [json.loads(line) for line in (out / "rejected.jsonl").read_text().splitlines()]
    ids = [r["id"] for r in records + rejected]
    assert len(ids) == len(set(ids)) == SEEDS  # each seed exactly once
    assert len(records) == SEEDS
    report = json.loads((out / "report.json").read_text())
    assert report["finished"] and report["requests_made"] == len(second_run)
    # Seeds finished before the kill are skipped; the others get their earlier answers from the cache.
    assert report["cache_hits"] + report["requests_made"] == REQUESTS_PER_SEED * (SEEDS - report["seeds_already_done"])
