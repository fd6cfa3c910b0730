"""`DIR/report.json`: what a generation run read, kept, rejected and spent.

`retries` counts the openai client's transport retries (429, 5xx, timeouts) of requests that finally got an answer;
those of a request that failed in the end are not known (the client does not report them).
"""

import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

from .llm_client import UsageStats

# USD per million tokens (OpenAI list prices, standard tier, 2025). The Batch API costs half.
# Override or extend with `--prices FILE.json`: {"model": {"input": USD, "output": USD}}.
DEFAULT_PRICES: dict[str, dict[str, float]] = {
    "gpt-4o-mini": {"input": 0.15, "output": 0.60},
    "gpt-4o": {"input": 2.50, "output": 10.00},
    "gpt-4.1-nano": {"input": 0.10, "output": 0.40},
    "gpt-4.1-mini": {"input": 0.40, "output": 1.60},
    "gpt-4.1": {"input": 2.00, "output": 8.00},
    "o3-mini": {"input": 1.10, "output": 4.40},
    "o4-mini": {"input": 1.10, "output": 4.40},
    "o3": {"input": 2.00, "output": 8.00},
}
BATCH_DISCOUNT = 0.5


class PriceFileError(ValueError):
    """A `--prices` file that cannot be used."""


def load_prices(path: str | Path | None) -> dict[str, dict[str, float]]:
    """The default price table updated with the user's file."""
    prices = {model: dict(p) for model, p in DEFAULT_PRICES.items()}
    if path is None:
        return prices
    try:
        user = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise PriceFileError(f"{path}: cannot read a JSON price table ({e})") from None
    if not isinstance(user, dict):
        raise PriceFileError(f'{path}: expected {{"model": {{"input": USD_per_M, "output": USD_per_M}}}}')
    for model, entry in user.items():
        if not isinstance(entry, dict) or not all(isinstance(entry.get(k), int | float) for k in ("input", "output")):
            raise PriceFileError(f"{path}: model {model!r} needs numeric 'input' and 'output' USD per million tokens")
        prices[model] = {"input": float(entry["input"]), "output": float(entry["output"])}
    return prices


def price_of(model: str, prices: dict[str, dict[str, float]]) -> dict[str, float] | None:
    """The price of `model`, or of its name without a date snapshot suffix (`gpt-4o-mini-2024-07-18`).

    Only a date is dropped: `o3-pro` is another model than `o3`, at another price."""
    if model in prices:
        return prices[model]
    dated = re.fullmatch(r"(.+)-\d{4}-\d{2}-\d{2}", model)
    return prices.get(dated.group(1)) if dated else None


def estimate_cost(stats: UsageStats, prices: dict[str, dict[str, float]], batch: bool) -> dict[str, Any]:
    """USD per model and in total for this run's fresh tokens; a model without a price counts as unknown."""
    per_model: dict[str, float | None] = {}
    for model in sorted(set(stats.prompt_tokens) | set(stats.completion_tokens)):
        price = price_of(model, prices)
        if price is None:
            per_model[model] = None
            continue
        usd = (stats.prompt_tokens[model] * price["input"] + stats.completion_tokens[model] * price["output"]) / 1e6
        per_model[model] = round(usd * (BATCH_DISCOUNT if batch else 1.0), 6)
    known = [v for v in per_model.values() if v is not None]
    return {
        "per_model": per_model,
        "total": round(sum(known), 6),
        "models_without_price": [m for m, v in per_model.items() if v is None],
        "batch_discount_applied": batch,
    }


def _reasons_in(path: Path) -> Counter:
    counts: Counter = Counter()
    if path.exists():
        with path.open(encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    counts.update(json.loads(line)["reasons"])
    return counts


def build_report(
    *,
    out_dir: Path,
    seeds_read: int,
    seeds_already_done: int,
    kept: int,
    rejected: int,
    stats: UsageStats,
    tokens_all_runs: dict[str, dict[str, int]],
    prices: dict[str, dict[str, float]],
    batch: bool,
    wall_time_s: float,
    settings: dict[str, Any],
    finished: bool,
    error: str | None = None,
) -> dict[str, Any]:
    """The report of one run; totals over all runs into `out_dir` are read from its files."""
    tokens = {
        m: {"prompt_tokens": stats.prompt_tokens[m], "completion_tokens": stats.completion_tokens[m]}
        for m in sorted(set(stats.prompt_tokens) | set(stats.completion_tokens))
    }
    return {
        "finished": finished,
        "error": error,
        "settings": settings,
        "seeds_read": seeds_read,
        "seeds_already_done": seeds_already_done,
        "records_kept": kept,
        "seeds_rejected": rejected,
        "records_total": _count_lines(out_dir / "records.jsonl"),
        "rejected_total": _count_lines(out_dir / "rejected.jsonl"),
        "rejections_by_reason": dict(_reasons_in(out_dir / "rejected.jsonl").most_common()),
        "requests_made": stats.requests + stats.batch_requests,
        "batch_requests": stats.batch_requests,
        "cache_hits": stats.cache_hits,
        "retries": stats.retries,
        "parse_retries": stats.parse_retries,
        "tokens_per_model": tokens,
        "tokens_per_model_all_runs": tokens_all_runs,
        "estimated_cost_usd": estimate_cost(stats, prices, batch),
        "wall_time_s": round(wall_time_s, 3),
    }


def _count_lines(path: Path) -> int:
    if not path.exists():
        return 0
    with path.open(encoding="utf-8") as f:
        return sum(1 for line in f if line.strip())


def write_report(out_dir: Path, report: dict[str, Any]) -> Path:
    path = out_dir / "report.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    tmp.replace(path)  # atomic: a kill never leaves a half-written report
    return path
