"""Benchmark `infir build-repo` on 100,000 and 1,000,000 synthetic records (passages of 60-100 words) with
decontamination and a 1 % held-out split.

For each size: wall seconds (the fastest of --repeat builds) and peak resident memory (the largest). Then the
ratios against the targets, measured in this run: at 100,000 records no slower and no bigger than the in-memory
build was (13.0 s, 783 MB on the machine of the README), at 1,000,000 a peak under 1.5 GB and at most 12x the time of
100,000 (the build streams: memory must not grow with the corpus). A ratio at or below 1.0 meets its target. The
records are written before the clock starts, and each build runs in a child process of its own, so the peak memory
measured is the build's.

    .venv/bin/python benchmarks/bench_build_repo.py [--records 100000 1000000] [--repeat 2]
"""

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

IN_MEMORY_SECONDS = 13.0  # the in-memory build at 100,000 records (README, before streaming)
IN_MEMORY_BYTES = 783 * 2**20
TARGET_BYTES_1M = 1.5 * 2**30
TARGET_TIME_RATIO_1M = 12.0
VOCAB_SIZE = 20_000


def make_records(path: Path, n: int, seed: int = 0) -> None:
    """Synthetic generator output: realistic lengths, poisoned parts that are minimal edits, a few invalid rows and
    duplicates, provenance objects."""
    rng = random.Random(seed)
    vocab = [f"w{i}" for i in range(VOCAB_SIZE)]

    def words(low: int, high: int) -> str:
        return " ".join(rng.choices(vocab, k=rng.randint(low, high)))

    def edit(text: str, changes: int) -> str:
        """A minimal edit, as I-, Q-, HN1 and HN2 are: a few words replaced and one inserted."""
        tokens = text.split()
        for _ in range(changes):
            tokens[rng.randrange(len(tokens))] = rng.choice(vocab)
        tokens.insert(rng.randrange(len(tokens)), rng.choice(vocab))
        return " ".join(tokens)

    with path.open("w") as f:
        for i in range(n):
            query, instruction, passage = words(4, 10), words(15, 40), words(60, 100)
            row = {
                "id": f"msmarco-{i:016x}",
                "source": "msmarco",
                "query_positive": query,
                "instruction_positive": instruction,
                "document_positive": passage,
                "query_negative": edit(query, 1),
                "instruction_negative": edit(instruction, 3),
                "hard_negative_document_1": edit(passage, 10),
                "hard_negative_document_2": edit(passage, 10),
                "provenance": {
                    "generator_model": "gpt-4o-mini",
                    "judge_model": "o3-mini",
                    "prompt_version": "v1",
                    "verdicts": [{"check": c, "passed": True, "reason": "ok"} for c in ("positive", "i_neg", "q_neg")],
                },
            }
            if i % 1000 == 1:
                row["query_negative"] = row["query_positive"]  # invalid
            f.write(json.dumps(row) + "\n")


def make_eval(path: Path, records: Path, n: int = 10_000, seed: int = 1) -> None:
    """Evaluation passages: mostly unrelated, plus 100 copied from the records (to be caught)."""
    rng = random.Random(seed)
    vocab = [f"w{i}" for i in range(VOCAB_SIZE)]
    with records.open() as f:
        copied = [json.loads(line)["document_positive"] for _, line in zip(range(100), f, strict=False)]
    with path.open("w") as f:
        for i in range(n):
            text = copied[i] if i < len(copied) else " ".join(rng.choices(vocab, k=rng.randint(60, 100)))
            f.write(json.dumps({"_id": str(i), "text": text}) + "\n")


def child(records: str, eval_file: str, out: str) -> None:
    from infir_dataset.build_repo import build_repo

    before = resource.getrusage(resource.RUSAGE_SELF)
    start = time.perf_counter()
    stats = build_repo([records], out, decontaminate=[eval_file], holdout_fraction=0.01)
    seconds = time.perf_counter() - start
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu = usage.ru_utime + usage.ru_stime - before.ru_utime - before.ru_stime
    peak = usage.ru_maxrss * 1024  # Linux reports KiB
    print(
        json.dumps(
            {
                "seconds": seconds,
                "cpu_seconds": cpu,
                "peak_bytes": peak,
                "kept": stats.kept,
                "input": stats.input_rows,
                "rejected": stats.rejected,
                "contaminated": stats.contaminated,
            }
        )
    )


def build(records: int, repeat: int, tmp: Path) -> dict:
    """The fastest of `repeat` builds of `records` records, with the largest peak memory of them."""
    path, eval_file, out = tmp / f"records-{records}.jsonl", tmp / "eval.jsonl", tmp / "repo"
    make_records(path, records)
    make_eval(eval_file, path)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    cmd = [sys.executable, __file__, "--child", str(path), str(eval_file), str(out)]
    runs = []
    for _ in range(repeat):  # a fresh process each time, so each peak memory is that build's own
        done = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env)
        runs.append(json.loads(done.stdout.splitlines()[-1]))
    result = min(runs, key=lambda r: r["seconds"])
    result["peak_bytes"] = max(r["peak_bytes"] for r in runs)
    result["all_seconds"] = [r["seconds"] for r in runs]
    result["jsonl_bytes"] = path.stat().st_size
    result["parquet_bytes"] = sum(p.stat().st_size for p in out.rglob("*.parquet"))
    path.unlink()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--records", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--repeat", type=int, default=2, help="builds per size; the fastest is reported")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for records in args.records:
            r = results[records] = build(records, args.repeat, Path(tmp))
            seconds = ", ".join(f"{s:.1f}" for s in r["all_seconds"])
            print(
                f"{records:>9,} records ({r['jsonl_bytes'] / 2**20:,.0f} MB JSONL): kept {r['kept']:,}, invalid "
                f"{r['rejected']:,}, contaminated {r['contaminated']:,}; Parquet {r['parquet_bytes'] / 2**20:,.0f} MB\n"
                f"           {r['seconds']:.1f} s (runs: {seconds}; cpu {r['cpu_seconds']:.1f} s), "
                f"peak {r['peak_bytes'] / 2**20:,.0f} MB",
                flush=True,
            )
    if 100_000 in results:
        r = results[100_000]
        print(
            f"100,000 against the in-memory build: time {r['seconds'] / IN_MEMORY_SECONDS:.2f}x of "
            f"{IN_MEMORY_SECONDS:.1f} s, memory {r['peak_bytes'] / IN_MEMORY_BYTES:.2f}x of "
            f"{IN_MEMORY_BYTES / 2**20:.0f} MB (target: both <= 1.0)"
        )
    if 1_000_000 in results:
        r = results[1_000_000]
        print(f"1,000,000: peak {r['peak_bytes'] / TARGET_BYTES_1M:.2f}x of 1.5 GB (target <= 1.0)")
        if 100_000 in results:
            ratio = r["seconds"] / results[100_000]["seconds"]
            print(f"1,000,000 / 100,000 time: {ratio:.1f}x (target <= {TARGET_TIME_RATIO_1M:.0f}x)")


if __name__ == "__main__":
    main()
