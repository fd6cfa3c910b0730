"""A saved InF-Embed folder: reloads in a fresh process without this package, and loads in sentence-transformers."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from safetensors.torch import load_file
from sentence_transformers import SentenceTransformer

from infembed_model import InfEmbedModel

QUERIES = ["w1 w2 w3", "w4 w5", "w6 w7 w8 w9"]
INSTRUCTIONS = ["w10 w11 w12", "", "w13"]
PASSAGES = ["w20 w21 w22 w23", "w24", "w25 w26"]
# (backbone, combine): the decoder case also checks that the bidirectional attention and last pooling survive.
SAVED = [("bert", "concat"), ("bert", "attention"), ("qwen2", "concat")]

CHILD = textwrap.dedent(
    """
    import sys
    sys.modules["infembed_model"] = None  # the package that wrote the folder must not be needed
    sys.modules["infir_dataset"] = None
    import json
    import torch
    from safetensors.torch import save_file
    from transformers import AutoModel

    folders, queries, instructions, passages, out = json.loads(sys.argv[1])
    tensors = {}
    for n, folder in enumerate(folders):
        model = AutoModel.from_pretrained(folder, trust_remote_code=True)
        assert type(model).__module__.startswith("transformers_modules."), type(model).__module__
        tensors[f"{n}.queries"] = model.encode_queries(queries, instructions)
        tensors[f"{n}.passages"] = model.encode_passages(passages)
    save_file(tensors, out)
    """
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def saved(backbone_dir, tmp_path_factory):
    """[(model, folder)] for each SAVED case."""
    out = []
    for kind, combine in SAVED:
        model = InfEmbedModel.from_backbone(str(backbone_dir(kind)), combine=combine).eval()
        folder = tmp_path_factory.mktemp(f"saved-{kind}-{combine}")
        model.save_pretrained(folder)
        out.append((model, folder))
    return out


def test_folder_holds_safetensors_code_config_and_tokenizer(saved):
    for _, folder in saved:
        names = {path.name for path in Path(folder).rglob("*")}
        assert {"model.safetensors", "configuration_infembed.py", "modeling_infembed.py", "tokenizer.json"} <= names
        assert not [name for name in names if name.endswith((".bin", ".pt", ".pth", ".pkl", ".pickle"))]
        config = json.loads((Path(folder) / "config.json").read_text())
        assert config["model_type"] == "infembed"
        assert config["auto_map"] == {
            "AutoConfig": "configuration_infembed.InfEmbedConfig",
            "AutoModel": "modeling_infembed.InfEmbedModel",
        }


def test_is_infembed_tells_a_saved_model_from_its_backbone(saved, backbone_dir, tmp_path):
    from infembed_model import is_infembed

    assert all(is_infembed(str(folder)) for _, folder in saved)
    assert not is_infembed(str(backbone_dir("bert")))
    assert not is_infembed(str(tmp_path))  # no config.json


def test_fresh_process_without_the_package_gives_the_same_embeddings(saved, tmp_path):
    out = tmp_path / "embeddings.safetensors"
    argument = json.dumps([[str(folder) for _, folder in saved], QUERIES, INSTRUCTIONS, PASSAGES, str(out)])
    env = dict(os.environ, HF_MODULES_CACHE=str(tmp_path / "modules"), OMP_NUM_THREADS="1", PYTHONPATH="")
    child = subprocess.run(
        [sys.executable, "-c", CHILD, argument],
        cwd=tmp_path,  # not the repository root, so nothing of it is on sys.path
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = child.stdout + child.stderr
    assert child.returncode == 0, output
    assert "Do you wish to run the custom code" not in output
    reloaded = load_file(out)
    for n, (model, _) in enumerate(saved):
        queries = model.encode_queries(QUERIES, INSTRUCTIONS)
        passages = model.encode_passages(PASSAGES)
        assert (reloaded[f"{n}.queries"] - queries).abs().max() < 1e-5
        assert (reloaded[f"{n}.passages"] - passages).abs().max() < 1e-5


def test_sentence_transformers_loads_the_folder(saved):
    model, folder = saved[0]
    assert model.config.combine == "concat"
    st = SentenceTransformer(str(folder), trust_remote_code=True, device="cpu")
    prefix = model.config.query_template.split("{query}")[0]
    for query, instruction in zip(QUERIES, INSTRUCTIONS, strict=True):
        prompt = prefix.format(instruction=instruction) if instruction else ""
        vector = st.encode_query([query], prompt=prompt, convert_to_tensor=True).cpu()
        assert (vector - model.encode_queries([query], [instruction])).abs().max() < 1e-5
    documents = st.encode_document(PASSAGES, convert_to_tensor=True).cpu()
    assert (documents - model.encode_passages(PASSAGES)).abs().max() < 1e-5


def test_feature_extraction_pipeline_gives_the_model_vectors(saved):
    """`pipeline("feature-extraction")` calls forward(input_ids, attention_mask): one vector per text, as
    encode_passages gives it, and with concat as encode_queries gives a query formatted with the template."""
    import torch
    from transformers import pipeline

    from infembed_model.modeling_infembed import format_query

    for model, folder in saved:
        extract = pipeline("feature-extraction", model=str(folder), trust_remote_code=True, device="cpu")
        vectors = torch.cat([v for v in extract(PASSAGES, return_tensors=True)])
        assert vectors.shape == (len(PASSAGES), model.config.hidden_size)
        assert (vectors - model.encode_passages(PASSAGES)).abs().max() < 1e-5
        if model.config.combine == "concat":
            texts = [
                format_query(model.config.query_template, q, i) for q, i in zip(QUERIES, INSTRUCTIONS, strict=True)
            ]
            vectors = torch.cat([v for v in extract(texts, return_tensors=True)])
            assert (vectors - model.encode_queries(QUERIES, INSTRUCTIONS)).abs().max() < 1e-5


def test_forward_without_inputs_names_the_ways_to_embed(saved):
    model, _ = saved[0]
    with pytest.raises(ValueError, match=r"encode_queries.*sentence-transformers"):
        model()
    tokens = model.tokenizer(["w1 w2"], return_tensors="pt")
    with pytest.raises(ValueError, match="not both"):
        model(input_ids=tokens["input_ids"], passage_input_ids=tokens["input_ids"])
