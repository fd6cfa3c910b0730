"""Plain formats of an InF-Embed model, which load with no custom code.

    infembed export DIR --to sentence-transformers OUT [--repo-id ORG/NAME]

`export_sentence_transformers` writes a sentence-transformers folder of a `concat` model: the backbone's own weights
and config (a `BertModel`, `Qwen2Model`, ...: no `trust_remote_code`), its tokenizer, a Pooling module with the
model's pooling, Normalize when the model normalises, and the prompts. `SentenceTransformer(OUT)` gives the vectors of
`encode_queries` / `encode_passages` (the export checks it on probe texts before it writes OUT), and Text Embeddings
Inference and Inference Endpoints can serve it. How each text reaches the model there:
- a passage is embedded as it is; a query is one text, `query_template` filled with its instruction (the query alone
  without one), given either whole or as the query with the template's head as the prompt;
- the whole text is cut from its end at `passage_max_length` tokens, where `encode_queries` cuts instruction + query
  at `query_max_length` from the end of the instruction: the vectors agree while instruction + query fit;
- decoders pool the end-of-sequence token that the tokenizer's post-processor appends (saved in `tokenizer.json`),
  with sentence-transformers' `lasttoken` pooling, and keep `is_causal` in the backbone's config.
An `attention` model (instruction tokens attending over query tokens) has no such one-text form and is refused.

`write_adapter_folder` gives a LoRA adapter trained on InF-Embed the same plain form: its weights keyed by the
backbone's own module names, `base_model_name_or_path` the backbone, so `PeftModel` / `AutoPeftModel` / `AutoModel`
load it onto the backbone it declares, and `SentenceTransformer(adapter_dir)` gives the model's vectors.
"""

import argparse
import inspect
import json
import os
import shutil
import sys
from pathlib import Path

import torch

from .configuration_infembed import InfEmbedConfig

TARGETS = ("sentence-transformers",)
# InF-Embed pooling -> sentence-transformers Pooling mode.
ST_POOLING = {"mean": "mean", "cls": "cls", "last": "lasttoken"}
ADAPTER_WEIGHTS = "adapter_model.safetensors"
# peft saves the adapter of a PeftModel around InfEmbedModel under this prefix; the backbone is `InfEmbedModel.encoder`.
WRAPPED_PREFIX = "base_model.model.encoder."
BACKBONE_PREFIX = "base_model.model."
# Texts the export embeds both ways before it writes the folder.
PROBE_QUERIES = ["what is a wine cabinet", "electric cars", "why does my head hurt"]
PROBE_INSTRUCTIONS = ["I want the climate-control features", "", "Find passages that explain the cause"]
PROBE_PASSAGES = [
    "A wine cabinet keeps bottles at 12-14 C and at a steady humidity.",
    "The first electric carriages were built in the 1830s, decades before petrol engines.",
    "Dehydration reduces blood volume, which can bring on a headache.",
]
TOLERANCE = 1e-5


class ExportError(Exception):
    """The model cannot be exported as asked; the CLI prints the message as one line."""


# ----------------------------------------------------------------------------------------------------------------------
# The sentence-transformers description (shared by the export and LoRA adapter folders)
# ----------------------------------------------------------------------------------------------------------------------


QUERY_TEMPLATE_KEY = "infembed_query_template"  # in config_sentence_transformers.json of the folders written here


def query_prompt(template: str, instruction: str) -> str:
    """The template up to `{query}` with the instruction filled in: a sentence-transformers prompt, prepended to the
    query. Exact only when `{query}` ends the template (else format the whole text with `format_query`)."""
    return template.split("{query}")[0].format(instruction=instruction) if instruction else ""


def query_is_last(template: str) -> bool:
    return template.endswith("{query}")


def write_st_files(folder: Path, config: InfEmbedConfig, model_kwargs: dict | None = None) -> None:
    """modules.json (Transformer at the root, Pooling, Normalize), the modules' configs, the prompts and the template.

    The Transformer module loads the backbone from the folder itself (its weights, or a LoRA adapter and the base it
    names), cut at `passage_max_length` tokens. The prompts are empty: an instruction is per query, so it goes into
    the query text (see `query_prompt`).
    """
    modules = [
        ("", "sentence_transformers.base.modules.transformer.Transformer"),
        ("1_Pooling", "sentence_transformers.sentence_transformer.modules.pooling.Pooling"),
    ]
    if config.normalize:
        modules.append(("2_Normalize", "sentence_transformers.base.modules.normalize.Normalize"))
    transformer = {
        "transformer_task": "feature-extraction",
        "modality_config": {"text": {"method": "forward", "method_output_name": "last_hidden_state"}},
        "module_output_name": "token_embeddings",
        "max_seq_length": config.passage_max_length,
    }
    if model_kwargs:
        transformer["model_kwargs"] = model_kwargs
    files = {
        "modules.json": [
            {"idx": n, "name": str(n), "path": path, "type": kind} for n, (path, kind) in enumerate(modules)
        ],
        "sentence_bert_config.json": transformer,
        "1_Pooling/config.json": {
            "embedding_dimension": config.hidden_size,
            "pooling_mode": ST_POOLING[config.pooling],
            "include_prompt": True,
        },
        "config_sentence_transformers.json": {
            "model_type": "SentenceTransformer",
            "prompts": {"query": "", "document": ""},
            "default_prompt_name": None,
            "similarity_fn_name": "cosine" if config.normalize else "dot",
            # Not read by sentence-transformers: `infembed eval` fills it as the trained model did (an ST prompt
            # cannot hold a per-query instruction).
            QUERY_TEMPLATE_KEY: config.query_template,
        },
    }
    if config.normalize:
        files["2_Normalize/config.json"] = {
            "module_input_name": "sentence_embedding",
            "module_output_name": "sentence_embedding",
        }
    for name, content in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(content, indent=2) + "\n")


# ----------------------------------------------------------------------------------------------------------------------
# LoRA adapters keyed by the backbone
# ----------------------------------------------------------------------------------------------------------------------


def write_adapter_folder(
    adapter_dir: Path, base: str, config: InfEmbedConfig, backbone_has_pooler: bool, base_is_infembed: bool = False
) -> None:
    """Turn the adapter peft saved for a PeftModel around InfEmbedModel into an adapter of the backbone itself.

    peft keys the weights by the wrapper's module names (`encoder.encoder.layer.0...`), which no loader that starts
    from the declared base (`AutoModel.from_pretrained(base)`, the Hub's PEFT snippet, `AutoPeftModel`,
    sentence-transformers) has: they would load the base and leave every LoRA weight out. Keyed by the backbone's
    names, with `base_model_name_or_path` the backbone, all of them load the trained backbone. `auto_mapping` makes
    `AutoPeftModel` build the base with `transformers.AutoModel`; a backbone class with a pooler (BERT) keeps LoRA off
    it, as training did (InF-Embed drops the pooler). Adds the sentence-transformers files, so
    `SentenceTransformer(adapter_dir)` (with peft installed) gives the model's vectors.

    With `base_is_infembed` (LoRA on a trained InF-Embed model) the keys already are the declared base's: they stay,
    and the sentence-transformers files are those of an InF-Embed folder (`trust_remote_code=True`).
    """
    from safetensors.torch import load_file, save_file

    config_path = adapter_dir / "adapter_config.json"
    adapter = json.loads(config_path.read_text())
    adapter["base_model_name_or_path"] = base
    adapter["auto_mapping"] = {"base_model_class": "AutoModel", "parent_library": "transformers"}
    if base_is_infembed:
        from .modeling_infembed import _write_sentence_transformers_files

        config_path.write_text(json.dumps(adapter, indent=2, sort_keys=True) + "\n")
        _write_sentence_transformers_files(adapter_dir, config)
        return

    if config.bidirectional:
        raise ValueError(
            "a LoRA adapter of a bidirectional decoder cannot be keyed by its backbone: every loader that starts from "
            "the backbone builds it causal (is_causal is no loading argument); merge the adapter (--merge-lora)"
        )
    weights_path = adapter_dir / ADAPTER_WEIGHTS
    weights = load_file(weights_path)
    outside = sorted(key for key in weights if not key.startswith(WRAPPED_PREFIX))
    if outside:
        raise ValueError(f"{weights_path}: LoRA weights outside the backbone: {', '.join(outside[:3])}")
    weights = {BACKBONE_PREFIX + key.removeprefix(WRAPPED_PREFIX): value for key, value in weights.items()}
    save_file(weights, weights_path, metadata={"format": "pt"})

    targets = adapter.get("target_modules")
    if backbone_has_pooler and isinstance(targets, list):
        # a full-match regex over module names: the targets anywhere but in `pooler.`
        names = "|".join(sorted(targets))
        adapter["target_modules"] = rf"(?!pooler\.)(?:.*\.)?(?:{names})"
    config_path.write_text(json.dumps(adapter, indent=2, sort_keys=True) + "\n")
    write_st_files(adapter_dir, config)


# ----------------------------------------------------------------------------------------------------------------------
# Export
# ----------------------------------------------------------------------------------------------------------------------


def _load(source: str):
    from . import InfEmbedModel, is_infembed

    path = Path(source)
    if (path / "adapter_config.json").is_file() and not (path / "config.json").is_file():
        raise ExportError(
            f"{source} is a LoRA adapter, already in the plain format: SentenceTransformer({source!r}) loads it "
            "(with peft installed); for full weights, train with --merge-lora and export that folder"
        )
    try:
        if not is_infembed(source):
            raise ExportError(f"{source} is not an InF-Embed model (its config.json has no model_type 'infembed')")
    except (OSError, ValueError) as e:
        raise ExportError(f"cannot read {source}: {' '.join(str(e).split())}") from None
    if InfEmbedConfig.from_pretrained(source).combine != "concat":
        raise ExportError(
            f"{source} combines instruction and query with cross-attention (combine='attention'), which no "
            "sentence-transformers folder can express: only combine='concat' models export; use the InF-Embed folder "
            "(AutoModel with trust_remote_code=True, encode_queries) for this one"
        )
    return InfEmbedModel.from_pretrained(source, dtype="auto").eval()


def _backbone_model_kwargs(encoder: torch.nn.Module) -> dict:
    """Loading arguments the backbone class needs to match the saved weights: InF-Embed drops BERT's pooler."""
    if "add_pooling_layer" in inspect.signature(type(encoder).__init__).parameters:
        return {"add_pooling_layer": False}
    return {}


def _source_card(source: str) -> dict:
    from huggingface_hub import ModelCard

    readme = Path(source) / "README.md"
    try:
        card = ModelCard.load(readme if Path(source).is_dir() else source)
    except Exception:  # no card, or the Hub cannot be reached: the exported card then names fewer things
        return {}
    return card.data.to_dict()


def _appends_eos(tokenizer) -> bool:
    eos = tokenizer.eos_token_id
    return eos is not None and tokenizer("a")["input_ids"][-1] == eos


def render_card(model, source: str, repo_id: str, model_name: str) -> str:
    from huggingface_hub import ModelCardData

    from hub_cards import render

    from .modeling_infembed import format_query

    config, tokenizer = model.config, model.tokenizer
    metadata = _source_card(source)
    instruction = "Find passages about the history of the topic, not recent news"
    widget = {
        "source_sentence": format_query(config.query_template, "electric cars", instruction),
        "sentences": [
            "The first electric carriages were built in the 1830s, decades before petrol engines.",
            "Electric car sales rose again this quarter, led by new budget models.",
            "Petrol engines became dominant in the early twentieth century.",
        ],
        "example_title": "instruction narrows the query",
    }
    licence = {key: metadata[key] for key in ("license", "license_name", "license_link") if metadata.get(key)}
    card_data = ModelCardData(
        language=metadata.get("language", "en"),
        **licence,
        library_name="sentence-transformers",
        pipeline_tag="sentence-similarity",
        tags=[
            "sentence-transformers",
            "sentence-similarity",
            "feature-extraction",
            "text-embeddings-inference",
            "retrieval",
            "instruction-following",
            "inf-embed",
        ],
        base_model=metadata.get("base_model"),
        datasets=metadata.get("datasets"),
        model_name=model_name,
        widget=[widget],
    )
    return render(
        "exported_card.md.jinja",
        card_yaml=card_data.to_yaml(),
        model_name=model_name,
        repo_id=repo_id,
        source=source,
        backbone_type=config.encoder_config.model_type,
        config=config,
        st_pooling=ST_POOLING[config.pooling],
        instruction=instruction,
        example_text=widget["source_sentence"],
        prompt=query_prompt(config.query_template, instruction),
        query_is_last=query_is_last(config.query_template),
        eos=tokenizer.eos_token if _appends_eos(tokenizer) else None,
        license={key: licence.get(key) for key in ("license", "license_name", "license_link")},
    )


def _check(model, folder: Path) -> float:
    """Largest difference between the folder's sentence-transformers vectors and the model's on the probe texts."""
    from sentence_transformers import SentenceTransformer

    from .modeling_infembed import format_query

    st = SentenceTransformer(str(folder), device=str(model.device))
    template = model.config.query_template
    texts = [format_query(template, q, i) for q, i in zip(PROBE_QUERIES, PROBE_INSTRUCTIONS, strict=True)]
    queries = st.encode_query(texts, prompt="", convert_to_tensor=True).float().cpu()
    passages = st.encode_document(PROBE_PASSAGES, convert_to_tensor=True).float().cpu()
    return max(
        (queries - model.encode_queries(PROBE_QUERIES, PROBE_INSTRUCTIONS)).abs().max().item(),
        (passages - model.encode_passages(PROBE_PASSAGES)).abs().max().item(),
    )


def export_sentence_transformers(source: str, out: str | Path, repo_id: str | None = None) -> Path:
    """Write the plain sentence-transformers folder of the InF-Embed model `source` (folder or Hub id) to `out`."""
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ExportError(f"{out} exists and is not an empty folder")
    model = _load(source)
    tmp = out.parent / f".{out.name}.export-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        model.encoder.save_pretrained(tmp)  # the backbone alone: its own class, config and weights
        tokenizer = model.tokenizer
        tokenizer.model_max_length = model.config.passage_max_length  # what sentence-transformers and TEI cut at
        tokenizer.save_pretrained(tmp)
        write_st_files(tmp, model.config, _backbone_model_kwargs(model.encoder))
        name = out.name
        (tmp / "README.md").write_text(
            render_card(model, source, repo_id or f"your-org/{name}", name), encoding="utf-8"
        )
        difference = _check(model, tmp)
        if not difference <= TOLERANCE:
            raise ExportError(
                f"the exported folder's vectors differ from the model's by {difference:.2e} (> {TOLERANCE}); "
                "nothing was written"
            )
        if out.exists():
            out.rmdir()
        tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


# ----------------------------------------------------------------------------------------------------------------------
# CLI
# ----------------------------------------------------------------------------------------------------------------------


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "export",
        help="write an InF-Embed model in a plain format (a sentence-transformers folder with no custom code)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("dir", metavar="DIR", help="InF-Embed folder or Hub id (combine='concat')")
    parser.add_argument("--to", required=True, choices=TARGETS, help="the format")
    parser.add_argument("out", metavar="OUT", help="new (or empty) folder to write")
    parser.add_argument("--repo-id", metavar="ORG/NAME", help="Hub id the card's snippets name (default your-org/OUT)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace, extra: list[str]) -> int:
    if extra:
        print(f"infembed export: error: unrecognised arguments: {' '.join(extra)}", file=sys.stderr)
        return 2
    try:
        out = export_sentence_transformers(args.dir, args.out, repo_id=args.repo_id)
    except ExportError as e:
        print(f"infembed export: error: {e}", file=sys.stderr)
        return 1
    print(f"infembed export: sentence-transformers folder written to {out} (SentenceTransformer({str(out)!r}))")
    return 0
