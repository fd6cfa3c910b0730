"""`infembed train` end to end on a tiny backbone: the loss falls, the folder is Hub-ready and reloads everywhere."""

import json
import shutil
import subprocess
import sys
import textwrap

import pytest
import torch
from huggingface_hub import ModelCard
from test_train_support import build_dataset_repo, losses, train

from infembed_model import InfEmbedModel
from infembed_model.cli import main
from infembed_model.model_card import eval_results_for, update_model_card
from infembed_model.push import ALLOW_PATTERNS, check_folder, files_to_upload
from infir_dataset.build_repo import MSMARCO_LICENSE_LINK, MSMARCO_LICENSE_NAME

# Shaped like real secrets, so that the scan before an upload recognises them.
FAKE_HUB_TOKEN = "hf_FakeTokenWrittenForTheTests0123456789"
FAKE_OPENAI_KEY = "sk-FakeKeyWrittenForTheTests0123456789abcdefghij"
QUERIES = ["w1 w2 w3", "w7 w8"]
INSTRUCTIONS = ["w10 w11 w12 w13", "w20 w21"]
PASSAGES = ["w1 w2 w30 w31 w32", "w7 w40 w41"]


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    return build_dataset_repo(tmp_path_factory.mktemp("data") / "InF-IR", rows=48, holdout_fraction=0.2)


@pytest.fixture(scope="module")
def trained(repo, backbone_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "InF-Embed-tiny"
    flags = ["--max_steps", "30", "--per_device_train_batch_size", "4", "--learning_rate", "5e-3"]
    flags += ["--logging_steps", "5", "--save_strategy", "no", "--eval_steps", "15", "--seed", "0"]
    record = train(repo, backbone_dir("bert"), out, *flags, "--base-model-id", "org/tiny-bert")
    return out, record


def test_training_lowers_the_loss_and_logs_the_eval_metrics(trained):
    _, record = trained
    curve = losses(record)
    assert sorted(curve) == [5, 10, 15, 20, 25, 30]
    assert curve[30] < curve[5] - 0.3, curve
    evals = [entry for entry in record["log_history"] if "eval_loss" in entry]
    assert [entry["step"] for entry in evals] == [15, 30]  # the held-out split was found and used
    for entry in evals:
        assert 0 <= entry["eval_inbatch_top1_accuracy"] <= 1
        assert 0 <= entry["eval_instruction_negative_accuracy"] <= entry["eval_p_over_hn1"] <= 1
    assert record["eval_rows"] > 0 and record["train_rows"] + record["eval_rows"] == 48


def test_logged_eval_metrics_are_those_of_every_held_out_row(trained, repo):
    from datasets import load_dataset

    from infembed_model.training_eval import instruction_metrics

    out, record = trained
    rows = load_dataset(str(repo), split="msmarco_holdout")
    model = InfEmbedModel.from_pretrained(out).eval()
    fields = (
        ("instruction_positive", "query_positive", "document_positive"),
        ("instruction_negative", "query_positive", "hard_negative_document_1"),
        ("instruction_positive", "query_negative", "hard_negative_document_2"),
    )
    triples = [(row[i], row[q], row[p]) for row in rows for i, q, p in fields]
    queries = model.encode_queries([q for _, q, _ in triples], [i for i, _, _ in triples])
    passages = model.encode_passages([p for _, _, p in triples])
    ids = torch.tensor([hash(p) for _, _, p in triples])
    expected = instruction_metrics(queries, passages, ids, batch_rows=4)
    logged = next(entry for entry in record["log_history"] if entry.get("step") == 30 and "eval_loss" in entry)
    assert {name: logged[f"eval_{name}"] for name in expected} == pytest.approx(expected, abs=1e-6)


def test_instruction_metrics_on_hand_made_embeddings():
    from infembed_model.training_eval import instruction_metrics

    # Two rows; unit vectors make every score readable. Row 0 passes every check; row 1 fails p_over_hn2 only.
    e = torch.eye(4)
    queries = torch.stack([e[0], e[1], e[2], e[0], e[1], e[2]])
    passages = torch.stack([e[0], e[3], e[3], 0.9 * e[0], e[3], e[0]])
    ids = torch.arange(6)
    metrics = instruction_metrics(queries, passages, ids, batch_rows=1)
    assert metrics["p_over_hn1"] == 1.0 and metrics["p_over_hn2"] == 0.5
    assert metrics["i_over_i_negative"] == 1.0 and metrics["i_over_q_negative"] == 1.0
    assert metrics["instruction_negative_accuracy"] == 0.5
    # batch_rows=1: only row 0's first triple ranks its own passage first (ties go to the first column; row 1's
    # first triple prefers HN2 = e0 over 0.9 e0).
    assert metrics["inbatch_top1_accuracy"] == pytest.approx(1 / 6)


def test_output_folder_is_hub_ready(trained):
    out, record = trained
    names = {p.name for p in out.iterdir()}
    expected = {"model.safetensors", "config.json", "configuration_infembed.py", "modeling_infembed.py"}
    expected |= {"tokenizer.json", "tokenizer_config.json", "modules.json", "sentence_bert_config.json"}
    expected |= {"config_sentence_transformers.json", "training_args.json", "loss_curve.png", "README.md"}
    assert expected <= names
    assert not any(name.endswith((".bin", ".pt", ".pth")) for name in names)
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "infembed" and config["auto_map"]["AutoModel"].endswith("InfEmbedModel")
    assert record["training_arguments"]["max_steps"] == 30
    assert record["training_arguments"]["remove_unused_columns"] is False
    assert record["infembed_arguments"]["split"] == "msmarco"
    assert (out / "loss_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    card = ModelCard.load(out / "README.md")
    assert card.data.pipeline_tag == "sentence-similarity"
    assert card.data.library_name == "sentence-transformers"
    assert card.data.base_model == "org/tiny-bert"
    assert card.data.widget and "Query:" in card.data.widget[0]["source_sentence"]
    assert "encode_queries" in card.text and "encode_query" in card.text and "2505.21439" in card.text
    assert check_folder(out) == []


def test_output_reloads_in_a_fresh_process_without_the_package(trained, tmp_path):
    out, _ = trained
    model = InfEmbedModel.from_pretrained(out).eval()
    expected_q = model.encode_queries(QUERIES, INSTRUCTIONS)
    expected_p = model.encode_passages(PASSAGES)
    result = tmp_path / "embeddings.safetensors"
    script = textwrap.dedent(
        f"""
        import sys
        sys.modules["infembed_model"] = None  # only the folder's own code may be used
        from safetensors.torch import save_file
        from transformers import AutoModel
        model = AutoModel.from_pretrained({str(out)!r}, trust_remote_code=True)
        assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
        save_file({{"q": model.encode_queries({QUERIES!r}, {INSTRUCTIONS!r}),
                   "p": model.encode_passages({PASSAGES!r})}}, {str(result)!r})
        """
    )
    subprocess.run([sys.executable, "-c", script], check=True, capture_output=True, cwd=tmp_path)
    from safetensors.torch import load_file

    reloaded = load_file(result)
    assert torch.allclose(reloaded["q"], expected_q, atol=1e-5)
    assert torch.allclose(reloaded["p"], expected_p, atol=1e-5)


def test_output_loads_with_sentence_transformers(trained):
    from sentence_transformers import SentenceTransformer

    out, _ = trained
    model = InfEmbedModel.from_pretrained(out).eval()
    st = SentenceTransformer(str(out), trust_remote_code=True, device="cpu")
    prompt = model.config.query_template.split("{query}")[0].format(instruction=INSTRUCTIONS[0])
    q = st.encode_query([QUERIES[0]], prompt=prompt, convert_to_tensor=True)
    p = st.encode_document(PASSAGES, convert_to_tensor=True)
    assert torch.allclose(q, model.encode_queries(QUERIES[:1], INSTRUCTIONS[0]), atol=1e-5)
    assert torch.allclose(p, model.encode_passages(PASSAGES), atol=1e-5)


def test_update_model_card_adds_results_and_keeps_earlier_ones(trained, tmp_path):
    out = tmp_path / "model"
    shutil.copytree(trained[0], out)
    update_model_card(out, {"mteb/Robust04InstructionRetrieval": {"p-MRR": 0.0312, "ndcg_at_10": 0.25}})
    update_model_card(out, {"heldout": {"ndcg_at_10": 0.5}})
    update_model_card(
        out,
        eval_results_for(
            "News21InstructionRetrieval",
            {"p-MRR": 0.01},
            dataset_id="mteb/News21InstructionRetrieval",
            config="default",
            split="test",
        ),
    )
    update_model_card(out, {"heldout": {"ndcg_at_10": 0.625}})  # measured again: replaces, not duplicates
    card = ModelCard.load(out / "README.md")
    found = {(r.dataset_name, r.dataset_split, r.metric_type): r.metric_value for r in card.data.eval_results}
    assert found == {
        ("mteb/Robust04InstructionRetrieval", None, "p-MRR"): 0.0312,
        ("mteb/Robust04InstructionRetrieval", None, "ndcg_at_10"): 0.25,
        ("heldout", None, "ndcg_at_10"): 0.625,
        ("News21InstructionRetrieval", "test", "p-MRR"): 0.01,
    }
    assert "| heldout | 0.6250 |" in card.text and "0.0312" in card.text
    leaderboard = (out / ".eval_results" / "mteb__Robust04InstructionRetrieval.yaml").read_text()
    assert "id: mteb/Robust04InstructionRetrieval" in leaderboard and "task_id: p-MRR" in leaderboard
    assert not (out / ".eval_results" / "heldout.yaml").exists()  # not a Hub dataset


def test_push_dry_run_sends_the_model_files_only_and_names_the_rest(trained, tmp_path, capsys):
    out = tmp_path / "model"
    shutil.copytree(trained[0], out)
    strays = ["checkpoint-10/model.safetensors", "training_args.bin", "index.pickle", "bm25.joblib", "notes.txt"]
    for stray in strays:
        (out / stray).parent.mkdir(exist_ok=True)
        (out / stray).write_bytes(b"x")
    uploaded = {p.as_posix() for p in files_to_upload(out)}
    assert uploaded == {p.name for p in trained[0].iterdir()}  # what `infembed train` wrote, nothing else
    assert main(["push", str(out), "--repo-id", "org/InF-Embed-tiny", "--dry-run"]) == 0
    printed = capsys.readouterr().out
    listed, left_out = printed.split("left out (not part of an InF-Embed folder): ")
    assert "would upload" in listed and not any(stray.split("/")[0] in listed for stray in strays)
    assert left_out.strip().split(", ") == [
        "bm25.joblib",
        "checkpoint-10/ (1 file)",
        "index.pickle",
        "notes.txt",
        "training_args.bin",
    ]

    (out / "model.safetensors").unlink()
    assert main(["push", str(out), "--repo-id", "org/InF-Embed-tiny", "--dry-run"]) == 1
    assert "no model.safetensors" in capsys.readouterr().err
    assert main(["push", str(out), "--repo-id", "not a repo id", "--dry-run"]) == 1


def test_push_uploads_with_the_ignore_rules_and_names_the_repo_in_the_card(trained, tmp_path, monkeypatch, capsys):
    from huggingface_hub import CommitInfo, HfApi

    out = tmp_path / "model"
    shutil.copytree(trained[0], out)
    calls = {}
    monkeypatch.setattr(HfApi, "create_repo", lambda self, repo_id, **kw: calls.setdefault("create", (repo_id, kw)))

    def upload_folder(self, **kw):
        calls["upload"] = kw
        return CommitInfo(
            commit_url=f"https://huggingface.co/{kw['repo_id']}/commit/0",
            commit_message="",
            commit_description="",
            oid="0",
        )

    monkeypatch.setattr(HfApi, "upload_folder", upload_folder)
    monkeypatch.setenv("HF_TOKEN", "hf_secret_token_value")
    assert main(["push", str(out), "--repo-id", "org/InF-Embed-tiny", "--private"]) == 0
    assert calls["create"] == ("org/InF-Embed-tiny", {"private": True, "exist_ok": True, "repo_type": "model"})
    assert calls["upload"]["allow_patterns"] == ALLOW_PATTERNS and calls["upload"]["folder_path"] == out
    assert "ignore_patterns" not in calls["upload"]
    assert 'AutoModel.from_pretrained("org/InF-Embed-tiny"' in (out / "README.md").read_text()
    assert "hf_secret_token_value" not in capsys.readouterr().out


def _quick_train(repo, backbone, out, *flags: str) -> dict:
    return train(
        repo,
        backbone,
        out,
        "--max_steps",
        "1",
        "--per_device_train_batch_size",
        "4",
        "--save_strategy",
        "no",
        "--base-model-id",
        "org/tiny-bert",
        *flags,
    )


def test_secrets_given_to_train_are_never_written_and_push_refuses_a_file_holding_one(
    repo, backbone_dir, tmp_path, monkeypatch, capsys
):
    """A Hub token on the command line and a secret environment value that ended up in an argument reach neither
    training_args.json nor the card; a token-shaped string that does reach a file stops `infembed push`."""
    plain_secret = "PlainSecretValueOfAnApiKey"  # not shaped like a token: found because it is INFIR_API_KEY's value
    monkeypatch.setenv("HF_TOKEN", FAKE_HUB_TOKEN)
    monkeypatch.setenv("INFIR_API_KEY", plain_secret)
    out = tmp_path / "model"
    record = _quick_train(
        repo, backbone_dir("bert"), out, "--hub_token", FAKE_HUB_TOKEN, "--run_name", f"run-{plain_secret}"
    )
    for path in out.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert FAKE_HUB_TOKEN.encode() not in data and plain_secret.encode() not in data, path
    assert "--hub_token '<redacted>'" in record["command"] and "--run_name 'run-<redacted>'" in record["command"]
    assert record["training_arguments"]["hub_token"] == "<redacted>"
    assert "--hub_token '<redacted>'" in (out / "README.md").read_text()  # the card shows the redacted command

    assert main(["push", str(out), "--repo-id", "org/InF-Embed-tiny", "--dry-run"]) == 0
    capsys.readouterr()
    # A token written into any file that would be uploaded, by hand or by an older version, stops the push.
    for name, secret, kind in (
        ("README.md", FAKE_HUB_TOKEN, "a Hugging Face token"),
        ("training_args.json", FAKE_OPENAI_KEY, "an OpenAI API key"),
    ):
        path = out / name
        before = path.read_text()
        path.write_text(before.replace("<redacted>", secret, 1))
        for dry_run in (["--dry-run"], []):
            assert main(["push", str(out), "--repo-id", "org/InF-Embed-tiny", *dry_run]) == 1
            err = capsys.readouterr().err
            assert f"{path}: contains a string shaped like {kind}" in err
            assert secret not in err and len(err.strip().splitlines()) == 1
        path.write_text(before)


def test_the_model_card_carries_the_training_data_licence(trained, repo):
    data_card = ModelCard.load(repo / "README.md").data  # `infir build-repo`'s default: other, MS MARCO's terms
    assert (data_card.license, data_card.license_name) == ("other", MSMARCO_LICENSE_NAME)
    card = ModelCard.load(trained[0] / "README.md")
    assert card.data.license == "other"
    assert (card.data.license_name, card.data.license_link) == (MSMARCO_LICENSE_NAME, MSMARCO_LICENSE_LINK)
    assert f"`other` ([{MSMARCO_LICENSE_NAME}]({MSMARCO_LICENSE_LINK})), the licence of the training data" in card.text


def test_license_flag_sets_the_model_card_licence(repo, backbone_dir, tmp_path, capsys):
    out = tmp_path / "model"
    _quick_train(repo, backbone_dir("bert"), out, "--license", "mit")
    card = ModelCard.load(out / "README.md")
    assert card.data.license == "mit" and card.data.license_name is None
    assert "the licence of the training data" not in card.text

    # `other` must say which terms; a card without them is refused before any upload
    readme = out / "README.md"
    readme.write_text(readme.read_text().replace("license: mit", "license: other", 1))
    assert main(["push", str(out), "--repo-id", "org/InF-Embed-tiny", "--dry-run"]) == 1
    assert "license: other without license_name and license_link" in capsys.readouterr().err


def test_eval_update_card_writes_the_model_index_with_the_dataset_hub_id_config_and_split(trained, repo, tmp_path):
    from infembed_model.mteb_adapter import task_source

    model = tmp_path / "model"
    shutil.copytree(trained[0], model)
    assert "No benchmark results yet" in (model / "README.md").read_text()
    assert "--update-card" in (model / "README.md").read_text()  # the card tells how, and the option exists
    data = tmp_path / "heldout"
    assert main(["make-eval", "--from-infir", str(repo), "--split", "msmarco_holdout", "--output", str(data)]) == 0
    # a local folder (known by its name) and the FollowIR task read from a local snapshot (known by its Hub id)
    specs = [str(data), f"Robust04InstructionRetrieval={data}"]
    out = tmp_path / "eval"
    assert main(["eval", "--model", str(model), "--data", *specs, "--output", str(out), "--update-card"]) == 0

    measured = json.loads((out / model.name / "metrics.json").read_text())
    card = ModelCard.load(model / "README.md")
    found = {(r.dataset_type, r.dataset_config, r.dataset_split, r.metric_type): r for r in card.data.eval_results}
    source = task_source("Robust04InstructionRetrieval")
    task = found[("mteb/Robust04InstructionRetrieval", "default", "test", "p-MRR")]
    assert source["dataset_id"] == "mteb/Robust04InstructionRetrieval"
    assert task.metric_value == measured["Robust04InstructionRetrieval"]["p-MRR"]
    assert task.dataset_revision == source["revision"] and task.dataset_name == "Robust04InstructionRetrieval"
    local = found[("heldout", None, None, "ndcg_at_10")]
    assert local.metric_value == measured["heldout"]["ndcg_at_10"]
    assert {key[3] for key in found} == {"ndcg_at_10", "p-MRR", "map_at_1000", "recall_at_100", "mrr_at_10"}
    assert "No benchmark results yet" not in card.text
    assert (
        "[Robust04InstructionRetrieval](https://huggingface.co/datasets/mteb/Robust04InstructionRetrieval) (test)"
        in card.text
    )
    assert (model / ".eval_results" / "mteb__Robust04InstructionRetrieval.yaml").is_file()
    assert check_folder(model) == []  # still publishable, results included
    assert ".eval_results/mteb__Robust04InstructionRetrieval.yaml" in {p.as_posix() for p in files_to_upload(model)}


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--model", "bm25"], "no --model is a folder written by `infembed train`"),
        (["--model", "TRAINED", "--no-instructions"], "drop --no-instructions"),
    ],
)
def test_eval_update_card_refuses_what_it_cannot_do(trained, repo, tmp_path, capsys, argv, message):
    argv = [str(trained[0]) if a == "TRAINED" else a for a in argv]
    before = (trained[0] / "README.md").read_text()
    assert (
        main(["eval", *argv, "--data", "Robust04InstructionRetrieval", "--output", str(tmp_path), "--update-card"]) == 2
    )
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert (trained[0] / "README.md").read_text() == before


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--split", "wiki"], "no split 'wiki'"),
        (["--eval-split", "msmarco_holdout", "--eval-fraction", "0.1"], "not both"),
        (["--loss", "P,X"], "--loss must be"),
        (["--merge-lora"], "--merge-lora needs --lora-r"),
    ],
)
def test_bad_input_is_one_clear_line(repo, backbone_dir, tmp_path, capsys, flags, message):
    argv = ["train", "--data", str(repo), "--backbone", str(backbone_dir("bert")), "--output", str(tmp_path / "o")]
    assert main([*argv, "--max_steps", "1", "--use_cpu", *flags]) == 1
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_missing_fields_are_named(tmp_path, backbone_dir, capsys):
    from datasets import Dataset

    data = tmp_path / "bad"
    (data / "data").mkdir(parents=True)
    Dataset.from_dict({"query_positive": ["w1"], "instruction_positive": ["w2"]}).to_parquet(
        data / "data" / "msmarco-00000-of-00001.parquet"
    )
    argv = ["train", "--data", str(data), "--backbone", str(backbone_dir("bert")), "--output", str(tmp_path / "o")]
    assert main([*argv, "--max_steps", "1", "--use_cpu"]) == 1
    err = capsys.readouterr().err
    assert "missing field(s) document_positive" in err and "hard_negative_document_2" in err


@pytest.mark.parametrize("flags", [["--fsdp"], ["--fsdp", "full_shard"], ["--deepspeed", "ds_config.json"]])
def test_sharding_that_cannot_run_here_is_one_clear_line(tmp_path, capsys, flags):
    # accelerate runs FSDP and DeepSpeed only on GPUs (and other accelerators): on CPU processes it would train with
    # plain DDP without a word, so the command refuses before reading data or weights.
    (tmp_path / "ds_config.json").write_text('{"zero_optimization": {"stage": 2}}')
    flags = [str(tmp_path / flag) if flag.endswith(".json") else flag for flag in flags]
    argv = ["train", "--data", str(tmp_path / "data"), "--backbone", str(tmp_path / "bert"), "--output", str(tmp_path)]
    assert main([*argv, "--use_cpu", *flags]) == 1
    err = capsys.readouterr().err
    assert f"{flags[0]} " in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err


@pytest.mark.skipif(torch.cuda.is_available(), reason="on a GPU --bf16 needs no --use_cpu")
def test_bf16_on_a_machine_without_a_gpu_trains_on_the_cpu(tmp_path):
    # transformers refuses --bf16 without a GPU unless --use_cpu is given; CPUs with bf16 units gain from it.
    from infembed_model.train import parse_arguments

    _, training = parse_arguments(
        ["--data", str(tmp_path), "--backbone", str(tmp_path), "--output", str(tmp_path), "--bf16"]
    )
    assert training.bf16 and training.use_cpu and training.device.type == "cpu"
