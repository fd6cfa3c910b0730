"""Turn evaluation folders into report.md, metrics.json and PNG plots.

A model folder (written by `evaluate.evaluate`) holds `model.json` (name, how it sees instructions),
`metrics.json` and/or `metrics_no_instructions.json` (each `{dataset_name: {metric_name: value}}`, mteb's names)
and `runs/*.trec`. A report collects any number of model folders: one table row per dataset and model, with the
same model's numbers without instructions and the instruction gain (with minus without).
"""

import json
import math
from pathlib import Path

COLUMNS = [
    ("ndcg_at_1", "nDCG@1"),
    ("ndcg_at_5", "nDCG@5"),
    ("ndcg_at_10", "nDCG@10"),
    ("map_at_1000", "MAP@1000"),
    ("recall_at_100", "R@100"),
    ("mrr_at_10", "MRR@10"),
    ("p-MRR", "p-MRR"),
    ("robustness_at_10", "Rob@10"),
]
GAIN_METRICS = ["ndcg_at_10", "p-MRR"]
WITH, WITHOUT = "metrics.json", "metrics_no_instructions.json"


def _read(path: Path) -> dict:
    return json.loads(path.read_text()) if path.exists() else {}


def load_model_results(folder: Path) -> dict:
    """{"name", "instruction_format", "with": {...}, "without": {...}} of one model folder."""
    info = _read(folder / "model.json")
    return {
        "name": info.get("name", folder.name),
        "instruction_format": info.get("instruction_format", "?"),
        "with": _read(folder / WITH),
        "without": _read(folder / WITHOUT),
    }


def find_model_folders(roots: list[Path]) -> list[Path]:
    """Model folders in each root: the root itself if it holds model.json, else its children that do."""
    found = []
    for root in map(Path, roots):
        if (root / "model.json").exists():
            found.append(root)
        else:
            found.extend(sorted(p.parent for p in root.glob("*/model.json")))
    return found


def _fmt(value) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.4f}"


def _gain(a, b):
    return None if a is None or b is None else a - b


def table_rows(models: list[dict]) -> list[dict]:
    """One row per (dataset, model): its metrics with instructions, without, and the gain."""
    datasets = []
    for m in models:
        for d in list(m["with"]) + list(m["without"]):
            if d not in datasets:
                datasets.append(d)
    rows = []
    for d in datasets:
        for m in models:
            if d not in m["with"] and d not in m["without"]:
                continue
            w, wo = m["with"].get(d, {}), m["without"].get(d, {})
            row = {"dataset": d, "model": m["name"], "with": w, "without": wo}
            row["gain"] = {k: _gain(w.get(k), wo.get(k)) for k in GAIN_METRICS}
            rows.append(row)
    return rows


def markdown(models: list[dict]) -> str:
    rows = table_rows(models)
    used = [(k, label) for k, label in COLUMNS if any(k in r["with"] or k in r["without"] for r in rows)]
    gains = [k for k in GAIN_METRICS if any(k in r["without"] for r in rows)]
    header = ["Dataset", "Model"] + [label for _, label in used]
    header += [f"{dict(COLUMNS)[k]} no instr." for k in gains] + [f"Δ {dict(COLUMNS)[k]}" for k in gains]
    lines = [
        "# Retrieval evaluation",
        "",
        "Metric columns are computed with instructions (where a model was only run without them, its numbers appear",
        'there instead and no gain is given). "no instr." columns drop every instruction (queries alone); Δ is with',
        "minus without, the instruction gain. nDCG, MAP, Recall and MRR from pytrec_eval; p-MRR as FollowIR / mteb",
        "(> 0: documents made non-relevant by the changed instruction moved down); Rob@10 as InstructIR / mteb.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for r in rows:
        main = r["with"] or r["without"]
        cells = [r["dataset"], r["model"]] + [_fmt(main.get(k)) for k, _ in used]
        cells += [_fmt(r["without"].get(k)) if r["with"] else "–" for k in gains]
        cells += [_fmt(r["gain"][k]) for k in gains]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "## How each model sees the instruction", ""]
    lines += [f"- **{m['name']}**: {m['instruction_format']}" for m in models]
    lines += ["", "Plots: `ndcg_at_10.png` (per-dataset bars), `p-MRR.png` (where the data has `qrel_diff`).", ""]
    return "\n".join(lines)


def _bars(models: list[dict], metric: str, path: Path) -> bool:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = []  # (label, {dataset: value})
    for m in models:
        for setting, label in (("with", m["name"]), ("without", f"{m['name']} (no instr.)")):
            values = {d: v[metric] for d, v in m[setting].items() if metric in v and not math.isnan(v[metric])}
            if values:
                series.append((label, values))
    datasets = sorted({d for _, values in series for d in values})
    if not datasets:
        return False
    width = 0.8 / len(series)
    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(datasets) * len(series) ** 0.5 + 3), 4))
    for n, (label, values) in enumerate(series):
        xs = [i + (n - (len(series) - 1) / 2) * width for i in range(len(datasets))]
        ax.bar(
            xs, [values.get(d, 0.0) for d in datasets], width, label=label, hatch="//" if "no instr." in label else ""
        )
    ax.set_xticks(range(len(datasets)), datasets, rotation=20, ha="right")
    ax.set_ylabel(metric)
    if metric == "p-MRR":
        ax.axhline(0, color="black", linewidth=0.8)
    ax.set_title(f"{metric} per dataset")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def _make_names_unique(models: list[dict], folders: list[Path]) -> None:
    """Models sharing a display name (several runs under --compare, two models named alike in one run) are told
    apart by their folders, which `infembed eval` already made unique within a run; a numeric suffix settles the rest.
    """
    names = [m["name"] for m in models]
    for m, folder in zip(models, folders, strict=True):
        if names.count(m["name"]) > 1:
            m["name"] = f"{folder.parent.name}/{folder.name}"
    seen: set[str] = set()
    for m in models:
        name, n = m["name"], 1
        while name in seen:
            n += 1
            name = f"{m['name']} ({n})"
        m["name"] = name
        seen.add(name)


def write_report(output_dir: str | Path, model_folders: list[Path]) -> Path:
    """Write output_dir/report.md, output_dir/metrics.json ({model: {dataset: {metric}}}) and the PNG plots."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    models = [load_model_results(Path(f)) for f in model_folders]
    _make_names_unique(models, [Path(f) for f in model_folders])
    combined = {}
    for m in models:
        if m["with"]:
            combined[m["name"]] = m["with"]
        if m["without"]:
            combined[f"{m['name']} (no instructions)"] = m["without"]
    (output_dir / "metrics.json").write_text(json.dumps(combined, indent=2) + "\n")
    _bars(models, "ndcg_at_10", output_dir / "ndcg_at_10.png")
    _bars(models, "p-MRR", output_dir / "p-MRR.png")
    path = output_dir / "report.md"
    path.write_text(markdown(models))
    return path
