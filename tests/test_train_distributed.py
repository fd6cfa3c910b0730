"""Two processes (torchrun, gloo) compute the same first-step loss and gradients as one process over the same
global batch: the model gathers embeddings across processes and scales the loss for DDP's gradient mean."""

import json
import socket
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file
from test_train_support import build_dataset_repo, train
from tiny_models import backbone_config, make_tokenizer
from transformers import AutoModel


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def deterministic_backbone(tmp_path_factory):
    """A tiny BERT without dropout, so the two runs see the same forward."""
    folder = tmp_path_factory.mktemp("bert-no-dropout")
    tokenizer = make_tokenizer()
    config = backbone_config("bert", len(tokenizer))
    config.hidden_dropout_prob = config.attention_probs_dropout_prob = 0.0
    torch.manual_seed(0)
    AutoModel.from_config(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def _step_record(out) -> tuple[dict, dict[str, torch.Tensor]]:
    record = json.loads((out / "training_args.json").read_text())
    first = next(entry for entry in record["log_history"] if "loss" in entry)
    return first, load_file(out / "model.safetensors")


def test_two_processes_equal_one_process_over_the_global_batch(deterministic_backbone, tmp_path):
    # One global batch of 4 rows: 1 process x 4 rows, or 2 processes x 2 rows. `P,IQ` (uni) is a function of the
    # set of rows in the global batch (l_I's instruction negatives are drawn per process, so it is left out).
    repo = build_dataset_repo(tmp_path / "InF-IR", rows=4)
    common = ["--max_steps", "1", "--logging_steps", "1", "--save_strategy", "no", "--seed", "0"]
    common += ["--optim", "sgd", "--learning_rate", "0.5", "--weight_decay", "0", "--max_grad_norm", "1e9"]
    common += ["--loss", "P,IQ", "--loss-mode", "uni", "--lr_scheduler_type", "constant"]

    train(repo, deterministic_backbone, tmp_path / "one", *common, "--per_device_train_batch_size", "4")
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port"]
    argv = ["-m", "infembed_model.cli", "train", "--data", str(repo), "--backbone", str(deterministic_backbone)]
    argv += ["--output", str(tmp_path / "two"), "--use_cpu", "--ddp_backend", "gloo", "--report_to", "none"]
    argv += [*common, "--per_device_train_batch_size", "2", "--disable_tqdm", "true"]
    done = subprocess.run([*launcher, str(_free_port()), *argv], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]

    one_log, one_weights = _step_record(tmp_path / "one")
    two_log, two_weights = _step_record(tmp_path / "two")
    assert json.loads((tmp_path / "two" / "training_args.json").read_text())["world_size"] == 2
    assert two_log["loss"] == pytest.approx(one_log["loss"], rel=1e-5)
    assert two_log["grad_norm"] == pytest.approx(one_log["grad_norm"], rel=1e-4)

    initial = {f"encoder.{k}": v for k, v in load_file(deterministic_backbone / "model.safetensors").items()}
    for name in (
        "encoder.embeddings.word_embeddings.weight",
        "encoder.encoder.layer.0.attention.self.query.weight",
        "encoder.encoder.layer.1.output.dense.weight",
    ):
        one_step, two_step = one_weights[name] - initial[name], two_weights[name] - initial[name]
        scale = one_step.abs().max().item()
        assert scale > 1e-6, name  # the SGD step moved this weight (by -lr x gradient)
        # A wrong gather or loss scaling changes the step by a factor (e.g. x2); float rounding is far below 1e-3.
        assert torch.allclose(two_step, one_step, rtol=0, atol=1e-3 * scale), name
