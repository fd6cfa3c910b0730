"""`make demo`'s path on a tiny size: the OpenAI-compatible test server writes the records, a tiny backbone trains."""

import json
import os
import subprocess
import sys

import pytest
from openai_test_server import OpenAITestServer


@pytest.fixture(scope="module")
def demo(tmp_path_factory, backbone_dir):
    out = tmp_path_factory.mktemp("demo") / "demo_output"
    with OpenAITestServer() as server:
        env = {
            **os.environ,
            "INFIR_BASE_URL": server.base_url,
            "INFIR_GENERATOR_MODEL": "gen-model",
            "INFIR_JUDGE_MODEL": "judge-model",
            "DEMO_SIZE": "16",
            "DEMO_EPOCHS": "2",
            "DEMO_BACKBONE": str(backbone_dir("bert")),
            "DEMO_OUTPUT": str(out),
        }
        env.pop("OPENAI_API_KEY", None)
        result = subprocess.run(
            [sys.executable, "-m", "infembed_model.demo"], env=env, capture_output=True, text=True, timeout=600
        )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return out, result.stdout


def test_demo_prints_backend_steps_and_summary(demo):
    _, stdout = demo
    assert "OpenAI-compatible server at http://127.0.0.1:" in stdout
    for step in range(1, 5):
        assert f"== Step {step} done" in stdout
    assert "infir push-repo" in stdout and "infembed push" in stdout
    assert "| model | nDCG@10 |" in stdout


def test_demo_artifacts_load_as_users_load_them(demo):
    out, _ = demo
    from datasets import load_dataset
    from sentence_transformers import SentenceTransformer
    from transformers import AutoModel

    repo = load_dataset(str(out / "InF-IR"))
    assert set(repo) == {"msmarco", "msmarco_holdout"} and len(repo["msmarco_holdout"]) > 0
    model = AutoModel.from_pretrained(str(out / "InF-Embed-MiniLM"), trust_remote_code=True)
    query = model.encode_queries(["a query"], instructions=["an instruction"])
    st = SentenceTransformer(str(out / "InF-Embed-MiniLM"), trust_remote_code=True)
    assert st.encode_query(["a query"], prompt="Instruct: an instruction\nQuery: ").shape == tuple(query.shape)


def test_demo_report_and_card(demo):
    out, _ = demo
    metrics = json.loads((out / "report" / "metrics.json").read_text())
    assert {"InF-Embed-MiniLM", "bm25"} <= set(metrics)
    assert any(name.endswith("(no instructions)") for name in metrics)
    assert (out / "report" / "report.md").exists() and list((out / "report").glob("*.png"))
    accuracy = json.loads((out / "report" / "instruction_negative_accuracy.json").read_text())
    assert all(0.0 <= a["instruction_negative_accuracy"] <= 1.0 for a in accuracy.values())
    from huggingface_hub import ModelCard

    card = ModelCard.load(out / "InF-Embed-MiniLM" / "README.md")
    ndcg = {m.metric_type: m.metric_value for m in card.data.eval_results}["ndcg_at_10"]
    assert ndcg == pytest.approx(metrics["InF-Embed-MiniLM"]["eval_data"]["ndcg_at_10"])
