"""Two processes (torchrun, gloo) compute the same first-step loss and gradients as one process over the same
global batch: the model gathers embeddings across processes and scales the loss for DDP's gradient mean. Also with
the default loss (P + I, multi), whose instruction negatives each process draws from its own rows."""

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

from infembed_model import InfEmbedModel


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


# One SGD step of lr 0.5 with nothing else (no decay, no clipping, no schedule), so the step is -0.5 x gradient.
ONE_SGD_STEP = ["--max_steps", "1", "--logging_steps", "1", "--save_strategy", "no", "--seed", "0"]
ONE_SGD_STEP += ["--optim", "sgd", "--learning_rate", "0.5", "--weight_decay", "0", "--max_grad_norm", "1e9"]
ONE_SGD_STEP += ["--lr_scheduler_type", "constant"]


def _train_two_processes(repo, backbone, out, *flags: str) -> None:
    """`infembed train` under torchrun, 2 CPU processes over gloo."""
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port"]
    argv = ["-m", "infembed_model.cli", "train", "--data", str(repo), "--backbone", str(backbone)]
    argv += ["--output", str(out), "--use_cpu", "--ddp_backend", "gloo", "--report_to", "none"]
    argv += [*flags, "--disable_tqdm", "true"]
    done = subprocess.run([*launcher, str(_free_port()), *argv], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads((out / "training_args.json").read_text())["world_size"] == 2


def _step_record(out) -> tuple[dict, dict[str, torch.Tensor]]:
    record = json.loads((out / "training_args.json").read_text())
    first = next(entry for entry in record["log_history"] if "loss" in entry)
    return first, load_file(out / "model.safetensors")


def test_two_processes_equal_one_process_over_the_global_batch(deterministic_backbone, tmp_path):
    # One global batch of 4 rows: 1 process x 4 rows, or 2 processes x 2 rows. `P,IQ` (uni) is a function of the
    # set of rows in the global batch (l_I's instruction negatives are drawn per process, so it is left out).
    repo = build_dataset_repo(tmp_path / "InF-IR", rows=4)
    common = [*ONE_SGD_STEP, "--loss", "P,IQ", "--loss-mode", "uni"]
    train(repo, deterministic_backbone, tmp_path / "one", *common, "--per_device_train_batch_size", "4")
    _train_two_processes(repo, deterministic_backbone, tmp_path / "two", *common, "--per_device_train_batch_size", "2")

    one_log, one_weights = _step_record(tmp_path / "one")
    two_log, two_weights = _step_record(tmp_path / "two")
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


def _join(batches: list[dict[str, torch.Tensor]], pad_id: int, negatives_per_part: list[int]) -> dict:
    """Collated batches -> one batch, as the processes' gathered batch: sequences padded to a common length, and the
    negative indices of each part shifted past the negatives of the parts before it."""
    joined = {}
    for key in batches[0]:
        parts = [batch[key] for batch in batches]
        if key.endswith(("_input_ids", "_attention_mask")):
            length = max(part.shape[1] for part in parts)
            fill = pad_id if key.endswith("_input_ids") else 0
            parts = [torch.nn.functional.pad(part, (0, length - part.shape[1]), value=fill) for part in parts]
        elif key in ("negative_query_index", "negative_instruction_index"):
            offsets = [sum(negatives_per_part[:n]) for n in range(len(parts))]
            parts = [torch.where(part >= 0, part + offset, part) for part, offset in zip(parts, offsets, strict=True)]
        joined[key] = torch.cat(parts)
    return joined


@pytest.mark.parametrize("combine", ["concat", "attention"])
def test_two_processes_equal_one_process_with_the_default_loss(deterministic_backbone, tmp_path, combine):
    # The default loss, P + I (multi). By design each process draws l_I's instruction negatives from its own rows
    # (the collator runs per process), so the one-process reference collates each process's rows apart, as the
    # processes do, and joins the two batches; P's in-batch negatives are those of the whole global batch.
    repo = build_dataset_repo(tmp_path / "InF-IR", rows=4)
    # Sequential sampling: process 0 trains on rows 0-1 and process 1 on rows 2-3 of the split.
    flags = [*ONE_SGD_STEP, "--combine", combine, "--train_sampling_strategy", "sequential"]
    _train_two_processes(repo, deterministic_backbone, tmp_path / "two", *flags, "--per_device_train_batch_size", "2")
    two_log, two_weights = _step_record(tmp_path / "two")

    from datasets import load_dataset

    rows = list(load_dataset(str(repo), split="msmarco"))
    model = InfEmbedModel.from_backbone(str(deterministic_backbone), combine=combine)
    assert model.config.loss_terms == ["P", "I"] and model.config.loss_mode == "multi"
    model.train()
    assert model.tokenizer.padding_side == "right"  # as `_join` pads
    collator = model.data_collator()
    parts = [collator(rows[:2]), collator(rows[2:])]
    if combine == "concat":  # indices into the part's own (instruction, query) negatives
        negatives = [len(part["negative_query_input_ids"]) for part in parts]
    else:  # indices into the part's own triples
        negatives = [len(part["passage_ids"]) for part in parts]
    batch = _join(parts, model.tokenizer.pad_token_id, negatives)
    loss = model(**batch).loss
    loss.backward()
    grads = {name: param.grad for name, param in model.named_parameters()}
    grad_norm = torch.linalg.vector_norm(torch.stack([g.norm() for g in grads.values()])).item()

    assert two_log["loss"] == pytest.approx(loss.item(), rel=1e-6)
    assert two_log["grad_norm"] == pytest.approx(grad_norm, rel=1e-5)
    initial = {f"encoder.{k}": v for k, v in load_file(deterministic_backbone / "model.safetensors").items()}
    assert set(two_weights) == set(grads)
    for name, grad in grads.items():
        if name.endswith("attention.self.key.bias"):
            continue  # softmax ignores a key bias, so its gradient is zero up to rounding noise (~1e-12)
        step = 0.5 * grad.abs().max().item()
        assert step > 0, name  # every weight gets a gradient
        # Each weight is one SGD step from the same start: equal to 1e-5 of the step, plus float32's rounding of the
        # weights themselves (one unit in the last place each, for the two sides).
        expected = initial[name] - 0.5 * grad
        tolerance = {"rtol": 2 * torch.finfo(torch.float32).eps, "atol": 1e-5 * step}
        assert torch.allclose(two_weights[name], expected, **tolerance), (name, (two_weights[name] - expected).abs())
