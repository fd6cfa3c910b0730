"""LoRA through peft: targets found per backbone family, the adapter saved for the Hub, merged weights equal it."""

import ast
import json

import pytest
import torch
from peft import PeftModel
from test_train_support import build_dataset_repo, train

from infembed_model import InfEmbedModel
from infembed_model.push import check_folder, files_to_upload
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


def _with_adapter(backbone: str, adapter) -> InfEmbedModel:
    """InF-Embed around the backbone with the adapter merged into its encoder, as the adapter's card does it."""
    model = InfEmbedModel.from_backbone(backbone)
    model.encoder = PeftModel.from_pretrained(model.encoder, adapter).merge_and_unload()
    return model.eval()


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

    untrained = _embeddings(InfEmbedModel.from_backbone(backbone))
    with_adapter = _embeddings(_with_adapter(backbone, out / "adapter"))
    merged = _embeddings(AutoModel.from_pretrained(out, trust_remote_code=True))
    assert not torch.allclose(with_adapter, untrained, atol=1e-4)  # the adapter learnt something
    assert torch.allclose(merged, with_adapter, atol=1e-5)
    assert check_folder(out) == []


LORA_FLAGS = ["--max_steps", "4", "--per_device_train_batch_size", "4", "--learning_rate", "5e-2"]
LORA_FLAGS += ["--save_strategy", "no", "--lora-r", "2", "--lora-targets", "query,value"]


@pytest.fixture(scope="module")
def lora_runs(repo, backbone_dir, tmp_path_factory):
    """The same LoRA training twice: merged (root = merged weights, `adapter/`) and as an adapter folder alone."""
    merged = tmp_path_factory.mktemp("lora-runs") / "merged"
    adapter = merged.parent / "adapter-only"
    train(repo, backbone_dir("bert"), merged, *LORA_FLAGS, "--merge-lora")
    train(repo, backbone_dir("bert"), adapter, *LORA_FLAGS)
    return merged, adapter


def test_lora_without_merge_writes_an_adapter_folder(lora_runs, backbone_dir):
    from safetensors.torch import load_file

    merged, out = lora_runs
    names = {p.name for p in out.iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors", "README.md", "training_args.json"} <= names
    assert "model.safetensors" not in names and "config.json" not in names
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == str(backbone_dir("bert").resolve())  # the backbone it keys
    assert config["auto_mapping"] == {"base_model_class": "AutoModel", "parent_library": "transformers"}
    assert config["target_modules"] == r"(?!pooler\.)(?:.*\.)?(?:query|value)"  # BERT's pooler stays untouched
    weights = load_file(out / "adapter_model.safetensors")
    assert all(key.startswith("base_model.model.encoder.layer.") for key in weights)  # BertModel's own names
    same_run = load_file(merged / "adapter" / "adapter_model.safetensors")
    assert same_run.keys() == weights.keys() and all(torch.equal(weights[k], same_run[k]) for k in weights)
    # The adapter names a local backbone: not publishable until --base-model-id gives the Hub id.
    assert any("base_model_name_or_path" in problem for problem in check_folder(out))
    sent = {p.as_posix() for p in files_to_upload(out)}
    assert {"modules.json", "sentence_bert_config.json", "1_Pooling/config.json", "2_Normalize/config.json"} <= sent
    card = (out / "README.md").read_text()
    assert "PeftModel.from_pretrained" in card and "AutoPeftModel.from_pretrained" in card
    assert "only `transformers`" not in card  # the adapter needs peft, not just transformers
    assert "custom_code" not in card.split("---")[1]  # keyed by a plain backbone: no remote code
    # the snippet rebuilds the base with the trained model's settings, or its vectors would differ
    snippet = card.split("model = InfEmbedModel.from_backbone(")[1].split("\n)\n")[0]
    call = ast.parse(f"f({snippet})").body[0].value
    given = {k.arg: ast.literal_eval(k.value) for k in call.keywords}
    trained = json.loads((out / "training_args.json").read_text())["model_config"]
    for key in ("combine", "pooling", "query_template", "normalize", "query_max_length", "passage_max_length"):
        assert given[key] == trained[key], key


def _python_blocks(card: str) -> list[str]:
    return [block.split("\n", 1)[1] for block in card.split("```")[1::2] if block.startswith("python")]


def test_adapter_folder_loads_as_the_trained_model_in_every_route(lora_runs, backbone_dir, tmp_path):
    """The card's snippet and SentenceTransformer give the merged model's vectors; PeftModel on the declared base,
    AutoPeftModel and AutoModel give its trained backbone (before: plain BERT, every LoRA weight left out)."""
    from peft import AutoPeftModel
    from sentence_transformers import SentenceTransformer
    from transformers import AutoModel, AutoTokenizer

    from infembed_model.export import query_prompt

    merged_dir, adapter = lora_runs
    merged = AutoModel.from_pretrained(merged_dir, trust_remote_code=True).eval()
    queries, passages = merged.encode_queries(QUERIES, INSTRUCTIONS), merged.encode_passages(PASSAGES)
    untrained = InfEmbedModel.from_backbone(str(backbone_dir("bert"))).eval()
    assert not torch.allclose(untrained.encode_passages(PASSAGES), passages, atol=1e-4)  # the adapter learnt something

    # the card's own snippet, run as written (the repo id made the local folder)
    card = (adapter / "README.md").read_text()
    (snippet,) = [block for block in _python_blocks(card) if "InfEmbedModel.from_backbone" in block]
    scope = {}
    exec(snippet.replace("your-org/adapter-only", str(adapter)), scope)  # noqa: S102
    model = scope["model"]
    assert (model.encode_queries(QUERIES, INSTRUCTIONS) - queries).abs().max() < 1e-5
    assert (model.encode_passages(PASSAGES) - passages).abs().max() < 1e-5

    st = SentenceTransformer(str(adapter), device="cpu")
    template = merged.config.query_template
    for n, (query, instruction) in enumerate(zip(QUERIES, INSTRUCTIONS, strict=True)):
        vector = st.encode_query([query], prompt=query_prompt(template, instruction), convert_to_tensor=True)
        assert (vector.cpu() - queries[n]).abs().max() < 1e-5
    assert (st.encode_document(PASSAGES, convert_to_tensor=True).cpu() - passages).abs().max() < 1e-5

    tokens = AutoTokenizer.from_pretrained(adapter)(PASSAGES, padding=True, return_tensors="pt")
    with torch.no_grad():
        expected = merged.encoder(**tokens).last_hidden_state
    base = json.loads((adapter / "adapter_config.json").read_text())["base_model_name_or_path"]
    routes = {
        "PeftModel on the declared base": lambda: PeftModel.from_pretrained(AutoModel.from_pretrained(base), adapter),
        "AutoPeftModel": lambda: AutoPeftModel.from_pretrained(str(adapter)),
        "AutoModel": lambda: AutoModel.from_pretrained(str(adapter), trust_remote_code=True),
    }
    for route, load in routes.items():
        with torch.no_grad():
            hidden = load().eval()(**tokens).last_hidden_state
        assert (hidden - expected).abs().max() < 1e-5, route


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
    untrained = _embeddings(InfEmbedModel.from_backbone(str(backbone_dir("bert"))))
    adapted = _embeddings(_with_adapter(str(backbone_dir("bert")), out))
    assert not torch.allclose(adapted, untrained, atol=1e-4)


def test_decoder_adapter_loads_with_its_eos_pooling(backbone_dir, tmp_path):
    """A Qwen2 adapter: sentence-transformers pools the EOS its tokenizer appends, PeftModel on the declared base gives
    the trained backbone. A bidirectional decoder's adapter is refused: every loader builds the backbone causal."""
    from sentence_transformers import SentenceTransformer
    from transformers import AutoModel

    from infembed_model.export import query_prompt, write_adapter_folder

    backbone = str(backbone_dir("qwen2"))
    model = InfEmbedModel.from_backbone(backbone)
    peft_model = apply_lora(model, InfEmbedTrainArguments(data="d", backbone=backbone, lora_r=2))
    torch.manual_seed(0)
    with torch.no_grad():  # a trained-looking adapter: LoRA's B starts at zero
        for name, parameter in peft_model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0, 0.2)
    peft_model.save_pretrained(tmp_path)
    model.tokenizer.save_pretrained(tmp_path)
    write_adapter_folder(tmp_path, backbone, model.config, backbone_has_pooler=hasattr(model.encoder, "pooler"))
    merged = peft_model.merge_and_unload().eval()
    queries, passages = merged.encode_queries(QUERIES, INSTRUCTIONS), merged.encode_passages(PASSAGES)

    st = SentenceTransformer(str(tmp_path), device="cpu")
    template = merged.config.query_template
    for n, (query, instruction) in enumerate(zip(QUERIES, INSTRUCTIONS, strict=True)):
        vector = st.encode_query([query], prompt=query_prompt(template, instruction), convert_to_tensor=True)
        assert (vector.cpu() - queries[n]).abs().max() < 1e-5
    assert (st.encode_document(PASSAGES, convert_to_tensor=True).cpu() - passages).abs().max() < 1e-5

    tokens = merged.tokenizer(PASSAGES, padding=True, return_tensors="pt")
    with torch.no_grad():
        expected = merged.encoder(**tokens).last_hidden_state
        hidden = PeftModel.from_pretrained(AutoModel.from_pretrained(backbone), tmp_path).eval()(**tokens)
    mask = tokens["attention_mask"].bool()  # padded positions differ freely
    assert (hidden.last_hidden_state[mask] - expected[mask]).abs().max() < 1e-5

    bidirectional = InfEmbedModel.from_backbone(backbone, bidirectional=True).config
    with pytest.raises(ValueError, match="--merge-lora"):
        write_adapter_folder(tmp_path, backbone, bidirectional, backbone_has_pooler=False)


def test_adapter_of_an_infembed_model_loads_through_that_model(repo, backbone_dir, tmp_path):
    """LoRA on a trained InF-Embed folder: the adapter keeps that model's keys and names it as its base, and the card's
    snippet (AutoModel with trust_remote_code) gives the merged vectors."""
    source = tmp_path / "infembed"
    InfEmbedModel.from_backbone(str(backbone_dir("bert"))).save_pretrained(source)
    out = tmp_path / "lora-on-infembed"
    assert train(repo, source, out, *LORA_FLAGS)["backbone_is_infembed"]
    assert json.loads((out / "adapter_config.json").read_text())["base_model_name_or_path"] == str(source.resolve())
    merged = PeftModel.from_pretrained(InfEmbedModel.from_pretrained(source), out).merge_and_unload()
    expected = _embeddings(merged)
    assert not torch.allclose(_embeddings(InfEmbedModel.from_pretrained(source)), expected, atol=1e-4)

    card = (out / "README.md").read_text()
    (snippet,) = [block for block in _python_blocks(card) if "trust_remote_code=True" in block]
    scope = {}
    exec(snippet.replace("your-org/lora-on-infembed", str(out)), scope)  # noqa: S102
    assert (_embeddings(scope["model"]) - expected).abs().max() < 1e-5


def test_infembed_eval_of_an_adapter_folder_fills_the_query_template(lora_runs):
    """`infembed eval --model ADAPTER` loads the folder with sentence-transformers, and gives each query the trained
    template with its instruction, so its query vectors are the trained model's (not "{instruction} {query}")."""
    from transformers import AutoModel

    from infembed_model.retrievers import load_retriever

    merged_dir, adapter = lora_runs
    merged = AutoModel.from_pretrained(merged_dir, trust_remote_code=True).eval()
    retriever = load_retriever(str(adapter), device="cpu")
    assert repr(merged.config.query_template) in retriever.instruction_format
    queries = torch.from_numpy(retriever.encode_queries(QUERIES, INSTRUCTIONS))
    assert (queries - merged.encode_queries(QUERIES, INSTRUCTIONS)).abs().max() < 1e-5
    assert (torch.from_numpy(retriever.encode_passages(PASSAGES)) - merged.encode_passages(PASSAGES)).abs().max() < 1e-5
