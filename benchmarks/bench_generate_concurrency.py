"""Generation request rate at `--concurrency 16` over the sequential rate (`--concurrency 1`), against the
OpenAI-compatible test server answering each request in 200 ms. Target: at least 12x.

    .venv/bin/python benchmarks/bench_generate_concurrency.py [--latency 0.2] [--seeds 80]
"""

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from openai_test_server import run_generate, write_seeds  # noqa: E402


def rate(base_url: str, n_seeds: int, concurrency: int, tmp: Path) -> tuple[float, int, float]:
    """(requests per second, requests, seconds) of one `infir generate` run."""
    out = tmp / f"out-{concurrency}"
    seeds = write_seeds(tmp / f"seeds-{concurrency}.jsonl", [f"benchmark question {i}" for i in range(n_seeds)])
    run_generate("--seeds", str(seeds), "--out", str(out), "--base-url", base_url, "--concurrency", str(concurrency))
    report = json.loads((out / "report.json").read_text())
    return report["requests_made"] / report["wall_time_s"], report["requests_made"], report["wall_time_s"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--latency", type=float, default=0.2, help="seconds the server takes per answer")
    parser.add_argument("--seeds", type=int, default=80, help="seeds of the concurrent run (10 requests each)")
    parser.add_argument("--sequential-seeds", type=int, default=4)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    # The server runs in its own process so that it does not share the client's interpreter lock.
    server = subprocess.Popen(
        [sys.executable, str(ROOT / "tests" / "openai_test_server.py"), "--latency", str(args.latency)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        port = int(server.stdout.readline().split()[1])
        base_url = f"http://127.0.0.1:{port}/v1"
        with tempfile.TemporaryDirectory() as tmp:
            seq, seq_n, seq_s = rate(base_url, args.sequential_seeds, 1, Path(tmp))
            con, con_n, con_s = rate(base_url, args.seeds, args.concurrency, Path(tmp))
    finally:
        server.terminate()
        server.wait()
    print(f"server latency per answer: {args.latency * 1000:.0f} ms")
    print(f"sequential (--concurrency 1):  {seq:6.2f} requests/s ({seq_n} requests in {seq_s:.1f} s)")
    print(f"concurrent (--concurrency {args.concurrency}): {con:6.2f} requests/s ({con_n} requests in {con_s:.1f} s)")
    print(f"speed-up: {con / seq:.1f}x (target >= 12x)")


if __name__ == "__main__":
    main()
