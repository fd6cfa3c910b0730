"""The README.md (Hub model card) of a trained InF-Embed folder, and its evaluation results.

The card is rendered from `hub_cards/model_card.md.jinja` with the run record `training_args.json` that
`infembed train` writes; the results live in the card's YAML (`model-index`, huggingface_hub's `EvalResult`s with
the dataset's Hub id, config and split where known) and, for Hub benchmark datasets, in `.eval_results/*.yaml`, so
`update_model_card` (used by `infembed eval --update-card`) can add results and re-render without losing earlier ones.
The licence is the one `infembed train` recorded: the training data's, unless `--license` was given.

library_name is `sentence-transformers`: the folder is a SentenceTransformer folder (modules.json, prompts), which
gives the Hub's "Use this model" snippet and the embedding-model listings, while the card also shows the
transformers path (`AutoModel` + `encode_queries`). A LoRA adapter without merged weights is a `peft` folder, keyed
by the backbone it names as its base (see `export.write_adapter_folder`); its card shows each route that loads it.
"""

import json
import re
from pathlib import Path

import yaml
from huggingface_hub import (
    DatasetCard,
    EvalResult,
    EvalResultEntry,
    ModelCard,
    ModelCardData,
    eval_result_entries_to_yaml,
)

from hub_cards import render
from infir_dataset.redact import redact_record

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
    # a record written before secrets were redacted must not put one in the card either
    return redact_record(json.loads(path.read_text()))


def has_training_record(model_dir: str | Path) -> bool:
    """Whether `model_dir` is a folder written by `infembed train` (so its card can be re-rendered)."""
    return (Path(model_dir) / TRAINING_RECORD).is_file()


# ----------------------------------------------------------------------------------------------------------------------
# Licence
# ----------------------------------------------------------------------------------------------------------------------

LICENSE_FIELDS = ("license", "license_name", "license_link")


def dataset_license(data: str) -> dict[str, str] | None:
    """`license` (and `license_name`, `license_link`) from the card of a dataset folder or Hub id; None when the
    card cannot be read (no README, Hub unreachable) or names no licence."""
    try:
        readme = Path(data) / "README.md"
        card = DatasetCard.load(readme if Path(data).is_dir() else data)
    except Exception:  # missing file, offline, not a dataset repo: the caller says what to do
        return None
    metadata = card.data.to_dict()
    found = {key: str(metadata[key]) for key in LICENSE_FIELDS if metadata.get(key)}
    return found if "license" in found else None


def _license(record: dict) -> dict[str, str]:
    """The recorded licence; records from before it was recorded had only `--license` (default apache-2.0)."""
    if "license" in record:
        return record["license"] or {}
    return {"license": record["infembed_arguments"].get("license") or "apache-2.0"}


# ----------------------------------------------------------------------------------------------------------------------
# Evaluation results (model-index)
# ----------------------------------------------------------------------------------------------------------------------


def eval_results_for(
    name: str,
    metrics: dict[str, float],
    *,
    dataset_id: str | None = None,
    config: str | None = None,
    split: str | None = None,
    revision: str | None = None,
) -> list[EvalResult]:
    """One `EvalResult` per metric of dataset `name`; `dataset_id` is its Hub id when known (a Hub id as `name`
    counts as one)."""
    for metric, value in metrics.items():
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise ValueError(f"result {name}/{metric} must be a number, got {value!r}")
    if dataset_id is None and _is_hub_id(name):
        dataset_id = name
    return [
        EvalResult(
            task_type="text-retrieval",
            dataset_type=dataset_id or name,
            dataset_name=name,
            dataset_config=config,
            dataset_split=split,
            dataset_revision=revision,
            metric_type=metric,
            metric_name=metric,
            metric_value=float(value),
        )
        for metric, value in sorted(metrics.items())
    ]


def _as_eval_results(results: dict[str, dict[str, float]] | list[EvalResult] | None) -> list[EvalResult]:
    if isinstance(results, dict):
        return [r for name, metrics in results.items() for r in eval_results_for(name, metrics)]
    return list(results or [])


def _existing_results(model_dir: Path) -> list[EvalResult]:
    """The card's model-index, if the card exists."""
    readme = model_dir / "README.md"
    if not readme.is_file():
        return []
    return list(ModelCard.load(readme).data.eval_results or [])


def _merge(old: list[EvalResult], new: list[EvalResult]) -> list[EvalResult]:
    """`old` with each result that `new` measures again replaced (same dataset, config, split, metric)."""
    kept = [r for r in old if not any(r.is_equal_except_value(n) for n in new)]
    return sorted(kept + new, key=lambda r: (r.dataset_name, r.dataset_split or "", r.metric_type))


def _results_table(results: list[EvalResult]) -> dict[str, dict]:
    """{row label: {"hub_id", "config", "split", "metrics": {metric: value}}} for the card's table."""
    rows: dict[str, dict] = {}
    for r in results:
        row = rows.setdefault(
            r.dataset_name,
            {
                "hub_id": r.dataset_type if _is_hub_id(r.dataset_type) else None,
                "config": r.dataset_config,
                "split": r.dataset_split,
                "metrics": {},
            },
        )
        row["metrics"][r.metric_type] = r.metric_value
    return rows


def _query_prompt(template: str, instruction: str) -> str:
    """The concat template up to `{query}` with the instruction filled in: a sentence-transformers prompt."""
    return template.split("{query}")[0].format(instruction=instruction)


def _last_eval(log_history: list[dict]) -> dict[str, float]:
    evals = [entry for entry in log_history if "eval_loss" in entry]
    if not evals:
        return {}
    keep = ("eval_loss", "eval_inbatch_top1_accuracy", "eval_instruction_negative_accuracy")
    return {key.removeprefix("eval_"): evals[-1][key] for key in keep if key in evals[-1]}


def build_card_data(record: dict, eval_results: list[EvalResult], is_adapter: bool) -> ModelCardData:
    ours = record["infembed_arguments"]
    # an adapter is keyed by a plain backbone: no custom code, unless its base is itself an InF-Embed model
    custom_code = not is_adapter or record.get("backbone_is_infembed")
    base, dataset = ours.get("base_model_id"), ours.get("dataset_id")
    return ModelCardData(
        language="en",
        **_license(record),
        library_name="peft" if is_adapter else "sentence-transformers",
        pipeline_tag="sentence-similarity",
        tags=[
            "sentence-transformers",
            "sentence-similarity",
            "feature-extraction",
            "retrieval",
            "instruction-following",
            "inf-embed",
            *(["custom_code"] if custom_code else []),
            *(["lora"] if ours.get("lora_r") else []),
        ],
        base_model=base if _is_hub_id(base) else None,
        datasets=[dataset] if _is_hub_id(dataset) else None,
        model_name=record.get("model_name") or Path(record["training_arguments"]["output_dir"]).name,
        eval_results=eval_results or None,
        widget=[WIDGET],
    )


def render_model_card(
    model_dir: str | Path,
    results: dict[str, dict[str, float]] | list[EvalResult] | None = None,
    repo_id: str | None = None,
) -> str:
    """The card text for `model_dir` with its earlier results plus `results` (newer values win)."""
    model_dir = Path(model_dir)
    record = _record(model_dir)
    merged = _merge(_existing_results(model_dir), _as_eval_results(results))
    table = _results_table(merged)
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
        base_is_infembed=bool(record.get("backbone_is_infembed")),
        lora=ours if ours.get("lora_r") else None,
        training=training,
        record=record,
        batch_rows=batch_rows,
        last_eval=_last_eval(record.get("log_history", [])),
        has_loss_curve=(model_dir / LOSS_CURVE).is_file(),
        license={key: _license(record).get(key) for key in LICENSE_FIELDS},
        license_from_data=record.get("license_from") == "data",
        results=table,
        metric_names=sorted({r.metric_type for r in merged}),
        paper=PAPER,
    )


def write_model_card(model_dir: str | Path, repo_id: str | None = None) -> Path:
    """Render and write `model_dir/README.md` (keeping the results already in it)."""
    model_dir = Path(model_dir)
    text = render_model_card(model_dir, repo_id=repo_id)
    (model_dir / "README.md").write_text(text, encoding="utf-8")
    return model_dir / "README.md"


def update_model_card(model_dir: str | Path, results: dict[str, dict[str, float]] | list[EvalResult]) -> Path:
    """Add evaluation results to the card's model-index and re-render it: `EvalResult`s (see `eval_results_for`),
    or `{dataset: {metric: value}}` with mteb's metric names.

    Also writes `.eval_results/<dataset>.yaml` for datasets with a Hub id, the format the Hub's leaderboards read.
    """
    model_dir = Path(model_dir)
    new = _as_eval_results(results)
    text = render_model_card(model_dir, results=new)
    (model_dir / "README.md").write_text(text, encoding="utf-8")
    by_dataset: dict[str, list[EvalResult]] = {}
    for r in new:
        if _is_hub_id(r.dataset_type):
            by_dataset.setdefault(r.dataset_type, []).append(r)
    for dataset_id, measured in by_dataset.items():
        entries = [
            EvalResultEntry(
                dataset_id=dataset_id, task_id=r.metric_type, value=r.metric_value, dataset_revision=r.dataset_revision
            )
            for r in measured
        ]
        folder = model_dir / ".eval_results"
        folder.mkdir(exist_ok=True)
        (folder / f"{dataset_id.replace('/', '__')}.yaml").write_text(
            yaml.safe_dump(eval_result_entries_to_yaml(entries))
        )
    return model_dir / "README.md"
