"""`infembed export DIR --to sentence-transformers OUT`: a plain folder, loaded in a fresh process without this
project's packages and without trust_remote_code, gives the vectors of encode_queries / encode_passages."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from huggingface_hub import ModelCard
from safetensors.torch import load_file

from infembed_model import InfEmbedModel
from infembed_model.cli import main
from infembed_model.export import query_prompt

QUERIES = ["w1 w2 w3", "w4 w5", "w6 w7 w8 w9", "w30"]
INSTRUCTIONS = ["w10 w11 w12", "", "w13", "w40 w41 w42 w43 w44"]
PASSAGES = ["w20 w21 w22 w23", "w24", "w25 w26 w27 w28 w29 w31 w32"]
# (name, backbone, InF-Embed settings): an encoder with mean and with cls pooling (unnormalised: no Normalize module),
# ModernBERT, and a decoder both causal (last token = the appended EOS) and bidirectional.
CASES = [
    ("bert-mean", "bert", {}),
    ("bert-cls-dot", "bert", {"pooling": "cls", "normalize": False}),
    ("modernbert", "modernbert", {}),
    ("qwen2-causal", "qwen2", {}),
    ("qwen2-bidirectional", "qwen2", {"bidirectional": True}),
]

CHILD = textwrap.dedent(
    """
    import sys
    for package in ("infembed_model", "infir_dataset", "hub_cards"):
        sys.modules[package] = None  # the project that wrote the folder must not be needed
    import json
    import torch
    from safetensors.torch import save_file
    from sentence_transformers import SentenceTransformer

    folders, texts, queries, prompts, passages, out = json.loads(sys.argv[1])
    tensors = {}
    for n, folder in enumerate(folders):
        model = SentenceTransformer(folder, device="cpu")  # no trust_remote_code
        backbone = model[0].auto_model
        assert type(backbone).__module__.startswith("transformers.models."), type(backbone).__module__
        tensors[f"{n}.texts"] = model.encode_query(texts[n], prompt="", convert_to_tensor=True)
        tensors[f"{n}.prompted"] = torch.cat(
            [model.encode_query([q], prompt=p, convert_to_tensor=True) for q, p in zip(queries, prompts[n])]
        )
        tensors[f"{n}.passages"] = model.encode_document(passages, convert_to_tensor=True)
    save_file({k: v.float().contiguous() for k, v in tensors.items()}, out)
    """
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def exported(backbone_dir, tmp_path_factory):
    """[(name, model, exported folder)] for each case, exported with the CLI."""
    out = []
    for name, kind, settings in CASES:
        model = InfEmbedModel.from_backbone(str(backbone_dir(kind)), **settings).eval()
        source = tmp_path_factory.mktemp(f"infembed-{name}")
        model.save_pretrained(source)
        folder = tmp_path_factory.mktemp("exports") / name
        assert main(["export", str(source), "--to", "sentence-transformers", str(folder)]) == 0
        out.append((name, model, folder))
    return out


def test_exported_folder_is_plain(exported):
    for name, model, folder in exported:
        files = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}
        assert not [f for f in files if f.endswith(".py")], name
        assert {"model.safetensors", "config.json", "tokenizer.json", "modules.json", "1_Pooling/config.json"} <= files
        assert ("2_Normalize/config.json" in files) == model.config.normalize
        config = json.loads((folder / "config.json").read_text())
        assert config["model_type"] == model.config.encoder_config.model_type and "auto_map" not in config
        assert config.get("is_causal", True) is not model.config.bidirectional
        pooling = json.loads((folder / "1_Pooling" / "config.json").read_text())["pooling_mode"]
        assert pooling == {"mean": "mean", "cls": "cls", "last": "lasttoken"}[model.config.pooling]


def test_fresh_process_without_the_project_gives_the_same_vectors(exported, tmp_path):
    from infembed_model.modeling_infembed import format_query

    out = tmp_path / "vectors.safetensors"
    templates = [model.config.query_template for _, model, _ in exported]
    texts = [[format_query(t, q, i) for q, i in zip(QUERIES, INSTRUCTIONS, strict=True)] for t in templates]
    prompts = [[query_prompt(t, i) for i in INSTRUCTIONS] for t in templates]
    argument = json.dumps([[str(f) for _, _, f in exported], texts, QUERIES, prompts, PASSAGES, str(out)])
    env = dict(os.environ, HF_MODULES_CACHE=str(tmp_path / "modules"), OMP_NUM_THREADS="1", PYTHONPATH="")
    child = subprocess.run(
        [sys.executable, "-c", CHILD, argument],
        cwd=tmp_path,  # not the repository root, so nothing of the project is importable
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert child.returncode == 0, child.stdout + child.stderr
    assert "trust_remote_code" not in child.stderr
    vectors = load_file(out)
    for n, (name, model, _) in enumerate(exported):
        queries = model.encode_queries(QUERIES, INSTRUCTIONS)
        assert (vectors[f"{n}.texts"] - queries).abs().max() < 1e-5, name
        assert (vectors[f"{n}.prompted"] - queries).abs().max() < 1e-5, name
        assert (vectors[f"{n}.passages"] - model.encode_passages(PASSAGES)).abs().max() < 1e-5, name


def test_exported_card_says_how_instructions_are_passed(exported):
    for name, model, folder in exported:
        card = ModelCard.load(folder / "README.md")
        assert card.data.library_name == "sentence-transformers" and "custom_code" not in card.data.tags
        text = card.text
        assert "## How instructions are passed" in text and model.config.query_template in text
        assert "trust_remote_code=True" not in text
        assert f"cut from its end at {model.config.passage_max_length} tokens" in text  # truncation differs
        assert ("appends `[SEP]`" in text) == (model.config.pooling == "last"), name  # the decoder's EOS
        assert ("is_causal: false" in text) == model.config.bidirectional, name
        assert "mteb_model(DIR)" in text
        widget = card.data.widget[0]["source_sentence"]
        assert widget.startswith("Instruct: ") and widget.endswith("\nQuery: electric cars")


def test_attention_models_adapters_and_used_folders_are_refused(backbone_dir, exported, tmp_path, capsys):
    source = tmp_path / "attention"
    InfEmbedModel.from_backbone(str(backbone_dir("bert")), combine="attention").save_pretrained(source)
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}")
    _, _, used = exported[0]
    cases = [
        (source, tmp_path / "out", "combine='attention'"),
        (adapter, tmp_path / "out", "is a LoRA adapter"),
        (backbone_dir("bert"), tmp_path / "out", "not an InF-Embed model"),
        (exported[0][2], used, "is not an empty folder"),
    ]
    for src, out, expected in cases:
        capsys.readouterr()
        assert main(["export", str(src), "--to", "sentence-transformers", str(out)]) == 1
        err = capsys.readouterr().err  # may also hold a progress bar
        assert err.count("infembed export: error: ") == 1 and "Traceback" not in err
        last = err.strip().splitlines()[-1]
        assert last.startswith("infembed export: error: ") and expected in last, err
        assert not (tmp_path / "out").exists()
    assert not [p for p in tmp_path.iterdir() if ".export-" in p.name]  # no half-written folder left
    assert Path(used, "model.safetensors").is_file()


def test_push_sends_every_file_of_an_exported_folder(exported):
    from infembed_model.push import check_folder, files_to_upload, folder_kind

    _, _, folder = exported[0]
    assert folder_kind(folder) == "export"
    sent = {p.as_posix() for p in files_to_upload(folder)}
    assert sent == {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}
    # the source folder had no card, so neither has the export a licence; everything else is ready
    assert check_folder(folder) == [f"{folder / 'README.md'}: card metadata has no 'license'"]
