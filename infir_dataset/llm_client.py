"""The one way the pipeline talks to an LLM: cached, bounded, typed requests through `openai.AsyncOpenAI`.

Transport failures are left to the openai client's own retry loop (`max_retries`): it honours `Retry-After` on 429
and backs off exponentially with jitter on 408/409/5xx, connection errors and timeouts. This wrapper adds only what
the client cannot know: the SQLite cache, the concurrency bound, token accounting, and a bounded retry of answers
that arrive but do not parse (malformed JSON, or cut off by the token limit). Each such retry is sent with the
sampling `seed` raised by the attempt number, so a server that samples deterministically (llama.cpp, OpenAI with a
seed) does not return the same bad answer again, and is cached under that body.
"""

import asyncio
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, TypeVar

import openai
from pydantic import BaseModel, ValidationError

from .answers import response_format
from .request_cache import RequestCache, request_key

A = TypeVar("A", bound=BaseModel)


class AnswerError(Exception):
    """This seed gets no usable answer (it did not parse after every attempt, or the server refused the request)."""


class PendingAnswer(Exception):  # noqa: N818 (a control-flow signal, not an error)
    """Batch mode: the answer is not in the cache yet; the request was queued for the next batch."""


@dataclass
class UsageStats:
    requests: int = 0  # answers received over HTTP in this run
    cache_hits: int = 0
    # Transport retries (429, 5xx, timeouts) made by the openai client for requests that finally got an answer; the
    # client does not say how many it made before giving up on a request that failed.
    retries: int = 0
    parse_retries: int = 0  # new attempts after an answer that did not parse
    batch_requests: int = 0  # answers received through the Batch API in this run
    prompt_tokens: Counter = field(default_factory=Counter)  # by model
    completion_tokens: Counter = field(default_factory=Counter)

    def count_tokens(self, model: str, response: dict[str, Any]) -> None:
        usage = response.get("usage") or {}
        self.prompt_tokens[model] += int(usage.get("prompt_tokens") or 0)
        self.completion_tokens[model] += int(usage.get("completion_tokens") or 0)


def parse_answer(response: dict[str, Any], answer_type: type[A]) -> A:
    """The typed answer in a chat completion; raises ValueError saying why it is unusable."""
    choice = (response.get("choices") or [{}])[0]
    content = (choice.get("message") or {}).get("content")
    if choice.get("finish_reason") == "length":
        raise ValueError("truncated answer (finish_reason=length)")
    if not content:
        raise ValueError("empty answer")
    try:
        return answer_type.model_validate_json(content)
    except ValidationError as e:
        raise ValueError(f"malformed answer ({e.errors()[0]['msg']})") from None


class LLMClient:
    """Typed, cached chat completions with at most `concurrency` requests in flight."""

    def __init__(
        self,
        client: openai.AsyncOpenAI,
        cache: RequestCache,
        concurrency: int = 8,
        parse_attempts: int = 3,
        collect_for_batch: bool = False,
        stats: UsageStats | None = None,
    ):
        self.client = client
        self.cache = cache
        self.concurrency = concurrency
        self.parse_attempts = parse_attempts
        self.stats = stats if stats is not None else UsageStats()
        self._semaphore = asyncio.Semaphore(concurrency)
        # Batch mode: cache misses are queued here (key -> request body) instead of being sent.
        self.collect_for_batch = collect_for_batch
        self.pending: dict[str, dict[str, Any]] = {}
        self.batch_failures: Counter = Counter()  # key -> batches in which that request failed
        self.batch_errors: dict[str, str] = {}

    def build_request(
        self, model: str, messages: list[dict[str, str]], answer_type: type[BaseModel], params: dict[str, Any]
    ) -> dict[str, Any]:
        """The chat-completions request body (also the cache key's content and a Batch API line's body)."""
        return {"model": model, "messages": messages, "response_format": response_format(answer_type), **params}

    async def ask(self, model: str, messages: list[dict[str, str]], answer_type: type[A], params: dict[str, Any]) -> A:
        """The answer of `model` to `messages`, parsed into `answer_type`."""
        request = self.build_request(model, messages, answer_type, params)
        reason = ""
        for attempt in range(self.parse_attempts):
            body = request
            if attempt:
                self.stats.parse_retries += 1
                body = {**request, "seed": int(request.get("seed", 0)) + attempt}
            key = request_key(body, attempt)
            response = self.cache.get(key)
            if response is None:
                response = await self._fetch(key, body)
            else:
                self.stats.cache_hits += 1
            try:
                return parse_answer(response, answer_type)
            except ValueError as e:
                reason = str(e)
        raise AnswerError(f"{answer_type.__name__}: {reason} after {self.parse_attempts} attempts")

    async def _fetch(self, key: str, request: dict[str, Any]) -> dict[str, Any]:
        if self.collect_for_batch:
            if self.batch_failures[key] >= 2:
                raise AnswerError(f"batch request failed twice: {self.batch_errors.get(key, 'unknown error')}")
            self.pending[key] = request
            raise PendingAnswer(key)
        async with self._semaphore:
            try:
                raw = await self.client.chat.completions.with_raw_response.create(**request)
            except openai.BadRequestError as e:
                too_long = e.code == "context_length_exceeded" or "context" in str(e.message).lower()
                if not too_long and self.cache.is_empty():
                    raise  # refused before anything ever succeeded here: a setting is wrong (model, parameter), stop
                # This seed's request is refused (e.g. too long for the context): no retry can help it.
                raise AnswerError(f"request refused: {e.message}") from None
            completion = raw.parse()
        response = completion.model_dump(mode="json", exclude_unset=True)
        self.stats.requests += 1
        self.stats.retries += raw.retries_taken
        self.stats.count_tokens(request["model"], response)
        self.cache.put(key, request, response)
        return response

    def store_batch_answer(self, key: str, request: dict[str, Any], response: dict[str, Any]) -> None:
        """Batch mode: an answer collected from a batch's output file."""
        self.stats.batch_requests += 1
        self.stats.count_tokens(request["model"], response)
        self.cache.put(key, request, response, via_batch=True)
