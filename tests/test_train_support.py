"""Helpers of the training tests (no tests here): a small InF-IR dataset repo and in-process `infembed train` runs."""

import json
from pathlib import Path

from tiny_models import make_rows

from infembed_model.cli import main


def build_dataset_repo(folder: Path, rows: int, holdout_fraction: float = 0.0, seed: int = 0) -> Path:
    """An InF-IR repo folder as `infir build-repo` writes it (README configs + data/msmarco-*.parquet)."""
    from infir_dataset.build_repo import build_repo

    records = folder.with_suffix(".jsonl")
    records.write_text("".join(json.dumps(row) + "\n" for row in make_rows(rows, seed=seed)))
    build_repo([records], folder, holdout_fraction=holdout_fraction)
    return folder


def train(data: Path, backbone: Path, output: Path, *flags: str) -> dict:
    """Run `infembed train` in this process; returns the run record (training_args.json)."""
    argv = ["train", "--data", str(data), "--backbone", str(backbone), "--output", str(output)]
    argv += ["--use_cpu", "--disable_tqdm", "true", "--report_to", "none", *flags]
    assert main(argv) == 0
    return json.loads((output / "training_args.json").read_text())


def losses(record: dict) -> dict[int, float]:
    """Training loss logged at each step."""
    return {entry["step"]: entry["loss"] for entry in record["log_history"] if "loss" in entry}
