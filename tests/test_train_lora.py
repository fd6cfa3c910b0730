"""LoRA through peft: targets found per backbone family, the adapter saved for the Hub, merged weights equal it."""

import ast
import json

import pytest
import torch
from peft import PeftModel
from test_train_support import build_dataset_repo, train

from infembed_model import InfEmbedModel
from infembed_model.push import check_folder
from infembed_model.train import InfEmbedTrainArguments, apply_lora, find_lora_targets

QUERIES, INSTRUCTIONS = ["w1 w2 w3", "w7 w8"], ["w10 w11 w12", "w20 w21"]
PASSAGES = ["w1 w2 w30 w31", "w7 w40 w41"]


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    return build_dataset_repo(tmp_path_factory.mktemp("data") / "InF-IR", rows=16)


@pytest.mark.parametrize(
    ("kind", "targets"),
    [
        ("bert", ["query", "key", "value", "dense"]),
        ("modernbert", ["Wqkv", "Wo", "Wi"]),
        ("qwen2", ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]),
    ],
)
def test_lora_targets_are_found_from_the_backbone(backbone_dir, kind, targets):
    model = InfEmbedModel.from_backbone(str(backbone_dir(kind)))
    assert find_lora_targets(model) == targets
    args = InfEmbedTrainArguments(data="d", backbone=str(backbone_dir(kind)), lora_r=2)
    peft_model = apply_lora(model, args)
    adapted = {name.rsplit(".", 2)[-2] for name, _ in peft_model.named_modules() if name.endswith("lora_A")}
    assert adapted == set(targets)
    assert not any("pooler" in name and "lora_" in name for name, _ in peft_model.named_parameters())
    trainable = {name for name, p in peft_model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in name for name in trainable)


def _embeddings(model) -> torch.Tensor:
    model.eval()
    return torch.cat([model.encode_queries(QUERIES, INSTRUCTIONS), model.encode_passages(PASSAGES)])


def test_lora_merge_writes_merged_weights_equal_to_the_adapter(repo, backbone_dir, tmp_path):
    from transformers import AutoModel

    backbone = str(backbone_dir("bert"))
    out = tmp_path / "lora-merged"
    flags = ["--max_steps", "4", "--per_device_train_batch_size", "4", "--learning_rate", "5e-2"]
    flags += ["--save_strategy", "no", "--lora-r", "4", "--merge-lora", "--base-model-id", "org/tiny-bert"]
    record = train(repo, backbone_dir("bert"), out, *flags)
    assert record["infembed_arguments"]["lora_r"] == 4

    adapter_config = json.loads((out / "adapter" / "adapter_config.json").read_text())
    assert adapter_config["base_model_name_or_path"] == "org/tiny-bert"
    assert (out / "adapter" / "adapter_model.safetensors").is_file()
    assert not (out / "adapter_config.json").exists()  # the root is a plain model: AutoModel must not see an adapter

    base = InfEmbedModel.from_backbone(backbone)
    untrained = _embeddings(base)
    with_adapter = _embeddings(PeftModel.from_pretrained(base, out / "adapter").get_base_model())
    merged = _embeddings(AutoModel.from_pretrained(out, trust_remote_code=True))
    assert not torch.allclose(with_adapter, untrained, atol=1e-4)  # the adapter learnt something
    assert torch.allclose(merged, with_adapter, atol=1e-5)
    assert check_folder(out) == []


def test_lora_without_merge_writes_an_adapter_folder(repo, backbone_dir, tmp_path):
    out = tmp_path / "lora"
    flags = ["--max_steps", "2", "--per_device_train_batch_size", "4", "--save_strategy", "no"]
    train(repo, backbone_dir("bert"), out, *flags, "--lora-r", "2", "--lora-targets", "query,value")
    names = {p.name for p in out.iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors", "README.md", "training_args.json"} <= names
    assert "model.safetensors" not in names and "config.json" not in names
    config = json.loads((out / "adapter_config.json").read_text())
    assert sorted(config["target_modules"]) == ["query", "value"]
    # The adapter names a local backbone: not publishable until --base-model-id gives the Hub id.
    assert any("base_model_name_or_path" in problem for problem in check_folder(out))
    card = (out / "README.md").read_text()
    assert "PeftModel.from_pretrained" in card
    assert "only `transformers`" not in card  # the adapter needs peft and infir, not just transformers
    # the snippet rebuilds the base with the trained model's settings, or its vectors would differ
    snippet = card.split("base = InfEmbedModel.from_backbone(")[1].split("\n)\n")[0]
    call = ast.parse(f"f({snippet})").body[0].value
    given = {k.arg: ast.literal_eval(k.value) for k in call.keywords}
    trained = json.loads((out / "training_args.json").read_text())["model_config"]
    for key in ("combine", "pooling", "query_template", "normalize", "query_max_length", "passage_max_length"):
        assert given[key] == trained[key], key


def test_lora_with_gradient_checkpointing_trains_the_adapter(repo, backbone_dir, tmp_path):
    # The adapter still learns when the backbone recomputes its activations in the backward pass.
    out = tmp_path / "lora-checkpointed"
    flags = ["--max_steps", "2", "--per_device_train_batch_size", "4", "--learning_rate", "5e-2"]
    record = train(
        repo,
        backbone_dir("bert"),
        out,
        *flags,
        "--save_strategy",
        "no",
        "--lora-r",
        "2",
        "--gradient_checkpointing",
        "true",
    )
    assert record["training_arguments"]["gradient_checkpointing"] is True
    base = InfEmbedModel.from_backbone(str(backbone_dir("bert")))
    untrained = _embeddings(base)
    adapted = _embeddings(PeftModel.from_pretrained(base, out).get_base_model())
    assert not torch.allclose(adapted, untrained, atol=1e-4)
