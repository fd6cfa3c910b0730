"""`make demo`'s paths on a tiny backbone: with no LLM (the gold sample), with an LLM (generated + gold rows, the
OpenAI-compatible test server writing them), and with an LLM whose rows are all rejected (carries on with gold)."""

import json
import os
import subprocess
import sys

import pytest
from openai_test_server import OpenAITestServer

from infir_dataset.gold_sample import read_gold

GOLD_TRAIN, GOLD_HELDOUT = len(read_gold("train")), len(read_gold("heldout"))


def run_demo(out, backbone, **env) -> str:
    env = {
        **{k: v for k, v in os.environ.items() if k not in ("OPENAI_API_KEY", "INFIR_BASE_URL", "INFIR_GGUF")},
        "DEMO_BACKBONE": str(backbone),
        "DEMO_OUTPUT": str(out),
        **env,
    }
    result = subprocess.run(
        [sys.executable, "-m", "infembed_model.demo"], env=env, capture_output=True, text=True, timeout=900
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


@pytest.fixture(scope="module")
def gold_demo(tmp_path_factory, backbone_dir):
    out = tmp_path_factory.mktemp("gold") / "demo_output"
    return out, run_demo(out, backbone_dir("bert"))


@pytest.fixture(scope="module")
def llm_demo(tmp_path_factory, backbone_dir):
    out = tmp_path_factory.mktemp("llm") / "demo_output"
    with OpenAITestServer() as server:
        stdout = run_demo(
            out,
            backbone_dir("bert"),
            INFIR_BASE_URL=server.base_url,
            INFIR_GENERATOR_MODEL="gen-model",
            INFIR_JUDGE_MODEL="judge-model",
            DEMO_SIZE="16",
        )
    return out, stdout


def test_without_an_llm_the_demo_trains_on_the_gold_sample(gold_demo):
    out, stdout = gold_demo
    assert "no LLM is configured, so nothing is generated" in stdout and "INFIR_BASE_URL" in stdout
    assert "infir generate" not in stdout
    for step in range(1, 4):
        assert f"== Step {step} done" in stdout
    assert "Trained on:   the gold sample's train part" in stdout
    from datasets import load_dataset

    repo = load_dataset(str(out / "InF-IR"))
    assert {name: len(split) for name, split in repo.items()} == {
        "msmarco": GOLD_TRAIN,
        "msmarco_holdout": GOLD_HELDOUT,
    }


def test_with_an_llm_the_demo_trains_on_generated_and_gold_rows(llm_demo):
    out, stdout = llm_demo
    assert "OpenAI-compatible server at http://127.0.0.1:" in stdout
    for step in range(1, 5):
        assert f"== Step {step} done" in stdout
    assert "Trained on:   rows generated with the OpenAI-compatible server" in stdout
    assert "and the gold sample's train part" in stdout
    from datasets import load_dataset

    report = json.loads((out / "generation" / "report.json").read_text())
    repo = load_dataset(str(out / "InF-IR"))
    held_out_ids = {row["id"] for row in read_gold("heldout")}
    # The held-out split is the gold one, whatever was generated: a generated row of a held-out seed never trains.
    assert set(repo["msmarco_holdout"]["id"]) == held_out_ids
    assert not set(repo["msmarco"]["id"]) & held_out_ids
    assert GOLD_TRAIN < len(repo["msmarco"]) <= GOLD_TRAIN + report["records_total"]


def test_demo_artifacts_load_as_users_load_them(llm_demo):
    out, _ = llm_demo
    from sentence_transformers import SentenceTransformer
    from transformers import AutoModel

    model = AutoModel.from_pretrained(str(out / "InF-Embed-MiniLM"), trust_remote_code=True)
    query = model.encode_queries(["a query"], instructions=["an instruction"])
    st = SentenceTransformer(str(out / "InF-Embed-MiniLM"), trust_remote_code=True)
    assert st.encode_query(["a query"], prompt="Instruct: an instruction\nQuery: ").shape == tuple(query.shape)


@pytest.mark.parametrize("demo", ["gold_demo", "llm_demo"])
def test_demo_report_table_and_card(demo, request):
    out, stdout = request.getfixturevalue(demo)
    metrics = json.loads((out / "report" / "metrics.json").read_text())
    assert {"InF-Embed-MiniLM", "bm25", "InF-Embed-MiniLM (no instructions)"} <= set(metrics)
    assert (out / "report" / "report.md").exists() and list((out / "report").glob("*.png"))
    accuracy = json.loads((out / "report" / "instruction_negative_accuracy.json").read_text())
    table = (out / "report" / "summary.md").read_text()
    assert table in stdout
    for name, scores in accuracy.items():  # the table shows each model's accuracy as measured
        assert f"{scores['instruction_negative_accuracy']:.3f}" in table.split(os.path.basename(name), 1)[1]
    from huggingface_hub import ModelCard

    card = ModelCard.load(out / "InF-Embed-MiniLM" / "README.md")
    ndcg = {m.metric_type: m.metric_value for m in card.data.eval_results}["ndcg_at_10"]
    assert ndcg == pytest.approx(metrics["InF-Embed-MiniLM"]["eval_data"]["ndcg_at_10"])


def test_a_generation_that_keeps_too_few_rows_carries_on_with_the_gold_rows(tmp_path, backbone_dir):
    seeds = tmp_path / "seeds.jsonl"
    lines = [
        {"id": f"s{n}", "query": f"JUDGE_SAYS_NO query {n}", "passage": f"passage number {n} here"} for n in range(4)
    ]
    seeds.write_text("".join(json.dumps(line) + "\n" for line in lines))
    with OpenAITestServer() as server:
        stdout = run_demo(tmp_path / "out", backbone_dir("bert"), INFIR_BASE_URL=server.base_url, SEEDS=str(seeds))
    assert "Only 0 generated records were kept" in stdout and "Carrying on with the gold rows" in stdout
    assert "Trained on:   the gold sample's train part" in stdout
