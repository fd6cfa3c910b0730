"""The README.md (Hub model card) of a trained InF-Embed folder, and its evaluation results.

The card is rendered from `hub_cards/model_card.md.jinja` with the run record `training_args.json` that
`infembed train` writes; the results live in the card's YAML (`model-index`) and, for Hub benchmark datasets, in
`.eval_results/*.yaml`, so `update_model_card` can add results and re-render without losing earlier ones.

library_name is `sentence-transformers`: the folder is a SentenceTransformer folder (modules.json, prompts), which
gives the Hub's "Use this model" snippet and the embedding-model listings, while the card also shows the
transformers path (`AutoModel` + `encode_queries`). A LoRA adapter without merged weights is a `peft` folder.
"""

import json
import re
from pathlib import Path

import yaml
from huggingface_hub import EvalResult, EvalResultEntry, ModelCard, ModelCardData, eval_result_entries_to_yaml

from hub_cards import render

TRAINING_RECORD = "training_args.json"
LOSS_CURVE = "loss_curve.png"
PAPER = "https://arxiv.org/abs/2505.21439"
HUB_ID = re.compile(r"^[\w.-]+/[\w.-]+$")
WIDGET = {
    "source_sentence": "Instruct: Find passages about the history of the topic, not recent news\nQuery: electric cars",
    "sentences": [
        "The first electric carriages were built in the 1830s, decades before petrol engines.",
        "Electric car sales rose again this quarter, led by new budget models.",
        "Petrol engines became dominant in the early twentieth century.",
    ],
    "example_title": "instruction narrows the query",
}


def _is_hub_id(name: str | None) -> bool:
    return bool(name) and bool(HUB_ID.match(name)) and not Path(name).exists()


def _record(model_dir: Path) -> dict:
    path = model_dir / TRAINING_RECORD
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no training record (is this a folder written by `infembed train`?)")
    return json.loads(path.read_text())


def _existing_results(model_dir: Path) -> dict[str, dict[str, float]]:
    """{dataset: {metric: value}} from the card's model-index, if the card exists."""
    readme = model_dir / "README.md"
    if not readme.is_file():
        return {}
    results: dict[str, dict[str, float]] = {}
    for result in ModelCard.load(readme).data.eval_results or []:
        results.setdefault(result.dataset_name, {})[result.metric_type] = result.metric_value
    return results


def _query_prompt(template: str, instruction: str) -> str:
    """The concat template up to `{query}` with the instruction filled in: a sentence-transformers prompt."""
    return template.split("{query}")[0].format(instruction=instruction)


def _last_eval(log_history: list[dict]) -> dict[str, float]:
    evals = [entry for entry in log_history if "eval_loss" in entry]
    if not evals:
        return {}
    keep = ("eval_loss", "eval_inbatch_top1_accuracy", "eval_instruction_negative_accuracy")
    return {key.removeprefix("eval_"): evals[-1][key] for key in keep if key in evals[-1]}


def build_card_data(record: dict, results: dict[str, dict[str, float]], is_adapter: bool) -> ModelCardData:
    ours = record["infembed_arguments"]
    base, dataset = ours.get("base_model_id"), ours.get("dataset_id")
    eval_results = [
        EvalResult(
            task_type="text-retrieval",
            dataset_type=name,
            dataset_name=name,
            metric_type=metric,
            metric_name=metric,
            metric_value=float(value),
        )
        for name, metrics in sorted(results.items())
        for metric, value in sorted(metrics.items())
    ]
    return ModelCardData(
        language="en",
        license=ours.get("license", "apache-2.0"),
        library_name="peft" if is_adapter else "sentence-transformers",
        pipeline_tag="sentence-similarity",
        tags=[
            "sentence-transformers",
            "sentence-similarity",
            "feature-extraction",
            "retrieval",
            "instruction-following",
            "inf-embed",
            "custom_code",
            *(["lora"] if ours.get("lora_r") else []),
        ],
        base_model=base if _is_hub_id(base) else None,
        datasets=[dataset] if _is_hub_id(dataset) else None,
        model_name=record.get("model_name") or Path(record["training_arguments"]["output_dir"]).name,
        eval_results=eval_results or None,
        widget=[WIDGET],
    )


def render_model_card(
    model_dir: str | Path, results: dict[str, dict[str, float]] | None = None, repo_id: str | None = None
) -> str:
    """The card text for `model_dir` with its earlier results plus `results` (newer values win)."""
    model_dir = Path(model_dir)
    record = _record(model_dir)
    merged = _existing_results(model_dir)
    for name, metrics in (results or {}).items():
        merged.setdefault(name, {}).update(metrics)
    ours, training, config = record["infembed_arguments"], record["training_arguments"], record["model_config"]
    is_adapter = (model_dir / "adapter_config.json").is_file() and not (model_dir / "config.json").is_file()
    card_data = build_card_data(record, merged, is_adapter)
    instruction = "Find passages that explain the cause, not the symptoms"
    world_size = record.get("world_size", 1)
    batch_rows = training["per_device_train_batch_size"] * training["gradient_accumulation_steps"] * world_size
    return render(
        "model_card.md.jinja",
        card_yaml=card_data.to_yaml(),
        model_name=card_data.model_name,
        repo_id=repo_id or training.get("hub_model_id") or f"your-org/{card_data.model_name}",
        base_model=ours.get("base_model_id") or ours["backbone"],
        base_is_hub=_is_hub_id(ours.get("base_model_id")),
        dataset=ours.get("dataset_id") or ours["data"],
        dataset_is_hub=_is_hub_id(ours.get("dataset_id")),
        backbone_type=record.get("backbone_model_type", "unknown"),
        config=config,
        query_prompt=_query_prompt(config["query_template"], instruction),
        instruction=instruction,
        is_adapter=is_adapter,
        has_adapter_folder=(model_dir / "adapter" / "adapter_config.json").is_file(),
        lora=ours if ours.get("lora_r") else None,
        training=training,
        record=record,
        batch_rows=batch_rows,
        last_eval=_last_eval(record.get("log_history", [])),
        has_loss_curve=(model_dir / LOSS_CURVE).is_file(),
        results=merged,
        metric_names=sorted({metric for metrics in merged.values() for metric in metrics}),
        paper=PAPER,
    )


def write_model_card(model_dir: str | Path, repo_id: str | None = None) -> Path:
    """Render and write `model_dir/README.md` (keeping the results already in it)."""
    model_dir = Path(model_dir)
    text = render_model_card(model_dir, repo_id=repo_id)
    (model_dir / "README.md").write_text(text, encoding="utf-8")
    return model_dir / "README.md"


def update_model_card(model_dir: str | Path, results: dict[str, dict[str, float]]) -> Path:
    """Add evaluation results (`{dataset: {metric: value}}`, mteb's metric names) to the card and re-render it.

    Also writes `.eval_results/<dataset>.yaml` for datasets named by a Hub id, the format the Hub's leaderboards read.
    """
    model_dir = Path(model_dir)
    for name, metrics in results.items():
        for metric, value in metrics.items():
            if not isinstance(value, int | float):
                raise ValueError(f"result {name}/{metric} must be a number, got {value!r}")
    text = render_model_card(model_dir, results=results)
    (model_dir / "README.md").write_text(text, encoding="utf-8")
    for name, metrics in results.items():
        if _is_hub_id(name):
            entries = [
                EvalResultEntry(dataset_id=name, task_id=metric, value=float(v)) for metric, v in metrics.items()
            ]
            folder = model_dir / ".eval_results"
            folder.mkdir(exist_ok=True)
            (folder / f"{name.replace('/', '__')}.yaml").write_text(
                yaml.safe_dump(eval_result_entries_to_yaml(entries))
            )
    return model_dir / "README.md"
