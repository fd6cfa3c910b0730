"""`--batch`: the same pipeline, but cache misses travel through the OpenAI Batch API (half the price, within 24 h).

The pipeline runs over all unfinished seeds with an LLM client that queues every cache miss instead of sending it.
The queued requests (one stage of every seed: first all I+, then all I-/Q- pairs, then all judge checks, then any
retries of answers that did not parse) are written as one JSONL request file in `DIR/batches/`, uploaded with
`files.create`, submitted with `batches.create`, polled with `batches.retrieve`, and their output (`files.content`)
goes into the same SQLite cache. Then the pipeline runs again and moves every seed one stage on, until no seed
waits. Submitted batch ids are kept in the cache, so a restarted run collects a batch in flight instead of paying
for it twice.
"""

import asyncio
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .llm_client import LLMClient
from .pipeline import Outcome, OutputFiles, SeedPipeline, run_seeds
from .seeds import Seed

MAX_REQUESTS_PER_BATCH = 50_000  # the Batch API's limit per input file
_FINAL_STATES = {"completed", "failed", "expired", "cancelled"}


class BatchError(RuntimeError):
    """A batch ended without output (failed, expired or cancelled)."""


async def run_batched(
    seeds: list[Seed],
    pipeline: SeedPipeline,
    outputs: OutputFiles,
    llm: LLMClient,
    poll_interval: float = 30.0,
    on_done: Callable[[Outcome], None] = lambda outcome: None,
    log: Callable[[str], None] = print,
) -> None:
    """Run `seeds` to completion, one Batch API round per pipeline stage."""
    llm.collect_for_batch = True
    for batch_id, request_file in llm.cache.open_batches():
        log(f"collecting batch {batch_id} submitted by an earlier run")
        await _collect(llm, batch_id, Path(request_file), poll_interval, log)
    waiting = seeds
    while waiting:
        llm.pending.clear()
        waiting = await run_seeds(waiting, pipeline, outputs, workers=min(len(waiting), 256), on_done=on_done)
        if not waiting:
            break
        requests = dict(llm.pending)
        keys = list(requests)
        # Every chunk is submitted before any is awaited, so the batches of one stage run side by side.
        submitted = []
        for start in range(0, len(keys), MAX_REQUESTS_PER_BATCH):
            chunk = {k: requests[k] for k in keys[start : start + MAX_REQUESTS_PER_BATCH]}
            request_file = await _submit(llm, chunk)
            submitted.append(request_file)
            log(f"submitted batch {request_file.stem} with {len(chunk)} requests for {len(waiting)} seeds")
        for request_file in submitted:
            await _collect(llm, request_file.stem, request_file, poll_interval, log)


async def _submit(llm: LLMClient, requests: dict[str, dict[str, Any]]) -> Path:
    """Write, upload and submit one request file; returns its local copy `DIR/batches/<batch id>.jsonl`."""
    folder = llm.cache.path.parent / "batches"
    folder.mkdir(exist_ok=True)
    staging = folder / "submitting.jsonl"
    with staging.open("w", encoding="utf-8") as f:
        for key, body in requests.items():
            f.write(
                json.dumps({"custom_id": key, "method": "POST", "url": "/v1/chat/completions", "body": body}) + "\n"
            )
    upload = await llm.client.files.create(file=staging, purpose="batch")
    batch = await llm.client.batches.create(
        input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    request_file = staging.rename(folder / f"{batch.id}.jsonl")
    llm.cache.add_batch(batch.id, str(request_file), len(requests))
    return request_file


async def _collect(
    llm: LLMClient, batch_id: str, request_file: Path, poll_interval: float, log: Callable[[str], None]
) -> None:
    start = time.monotonic()
    while True:
        batch = await llm.client.batches.retrieve(batch_id)
        if batch.status in _FINAL_STATES:
            break
        await asyncio.sleep(poll_interval)
    requests = _request_bodies(request_file)
    answered_keys: set[str] = set()
    failed_keys: set[str] = set()
    for file_id in (batch.output_file_id, batch.error_file_id):
        if not file_id:
            continue
        content = await llm.client.files.content(file_id)
        for line in content.text.splitlines():
            if not line.strip():
                continue
            item = json.loads(line)
            key, response = item["custom_id"], item.get("response") or {}
            if response.get("status_code") == 200 and key in requests:
                llm.store_batch_answer(key, requests[key], response["body"])
                answered_keys.add(key)
            else:
                # Left out of the cache, so the next round asks again; a request failing twice rejects its seed.
                failed_keys.add(key)
                llm.batch_errors[key] = json.dumps(item.get("error") or response.get("body"))[:300]
    for key in requests.keys() - answered_keys:
        llm.batch_failures[key] += 1
        if key not in failed_keys:
            llm.batch_errors[key] = "no answer in the batch output"
    llm.cache.close_batch(batch_id)
    log(f"batch {batch_id} {batch.status}: {len(answered_keys)} answers in {time.monotonic() - start:.0f} s")
    if batch.status != "completed" and not answered_keys:
        raise BatchError(f"batch {batch_id} ended {batch.status!r} without answers: {batch.errors}")


def _request_bodies(request_file: Path) -> dict[str, dict[str, Any]]:
    """custom_id -> request body, from the local copy of a submitted request file."""
    with request_file.open(encoding="utf-8") as f:
        items = [json.loads(line) for line in f if line.strip()]
    return {item["custom_id"]: item["body"] for item in items}
