"""Per seed (Q+, P+): write I+, then I-/HN1 and Q-/HN2, then let a judge check each relation; keep the row only if
all pass. Records go to `DIR/records.jsonl`, rejected seeds with their reasons to `DIR/rejected.jsonl`.

Both files are append-only, one fsynced line per seed, and name every seed already done, so a restarted run skips
them; a last line cut by a kill mid-write is truncated on restart (one complete but for its newline is kept).
"""

import asyncio
import json
import os
import re
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2

from .answers import InstructionNegative, PlausibilityVerdict, PositiveInstruction, QueryNegative, RelevanceVerdict
from .llm_client import AnswerError, LLMClient, PendingAnswer
from .normalise import normalise, words
from .seeds import Seed
from .validate import reason_code, validate

PROMPT_VERSION = "v1"
PROMPTS_DIR = Path(__file__).parent / "prompts"


@dataclass(frozen=True)
class PipelineConfig:
    generator_model: str = "gpt-4o-mini"
    judge_model: str = "o3-mini"
    prompt_version: str = PROMPT_VERSION
    seed: int = 0
    temperature: float = 0.7
    generator_max_tokens: int = 1024
    judge_max_tokens: int = 4096  # reasoning models spend their hidden reasoning from this budget too


@dataclass
class Outcome:
    seed: Seed
    record: dict[str, Any] | None = None
    rejection: dict[str, Any] | None = None


# Each judge check asks whether one passage is relevant to one (instruction, query) pair and compares the verdict
# with what the row claims; the judge is never told which answer the row needs.
# (check name, instruction field, query field, passage field, expected relevance)
JUDGE_CHECKS: tuple[tuple[str, str, str, str, bool], ...] = (
    ("positive_relevant", "instruction_positive", "query_positive", "document_positive", True),
    ("instruction_negative_excludes_positive", "instruction_negative", "query_positive", "document_positive", False),
    ("hard_negative_1_relevant", "instruction_negative", "query_positive", "hard_negative_document_1", True),
    (
        "hard_negative_1_excluded_by_positive",
        "instruction_positive",
        "query_positive",
        "hard_negative_document_1",
        False,
    ),
    ("query_negative_excludes_positive", "instruction_positive", "query_negative", "document_positive", False),
    ("hard_negative_2_relevant", "instruction_positive", "query_negative", "hard_negative_document_2", True),
    (
        "hard_negative_2_excluded_by_positive",
        "instruction_positive",
        "query_positive",
        "hard_negative_document_2",
        False,
    ),
)

# The paper checks the poisoned parts for semantic plausibility too: one question per poisoned (instruction, query)
# pair, asked without the passage, whether it reads as a request a real user could make.
# (check name, instruction field, query field)
PLAUSIBILITY_CHECKS: tuple[tuple[str, str, str], ...] = (
    ("instruction_negative_plausible", "instruction_negative", "query_positive"),
    ("query_negative_plausible", "instruction_positive", "query_negative"),
)
# The requests of a seed that reaches the judge: I+, I- with HN1, Q- with HN2, then every judge question.
REQUESTS_PER_SEED = 3 + len(JUDGE_CHECKS) + len(PLAUSIBILITY_CHECKS)


class Prompts:
    """The versioned templates `prompts/<version>_<name>.jinja`, rendered into chat messages."""

    def __init__(self, version: str = PROMPT_VERSION, folder: Path = PROMPTS_DIR):
        self.version = version
        self._env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(folder), undefined=jinja2.StrictUndefined, autoescape=False
        )
        self._system = self._env.get_template(f"{version}_system.jinja").render().strip()
        # Word n-grams of the templates' worked examples (from "Example" to "Now your turn."), to catch copies of
        # them; the rules' own wording ("I want sources that ...") is common phrasing a good answer may share.
        examples = " ".join(
            " ".join(_EXAMPLE.findall((folder / name).read_text(encoding="utf-8")))
            for name in self._env.list_templates()
            if name.startswith(f"{version}_")
        )
        example_words = words(examples)
        self._example_ngrams = {n: _ngrams(example_words, n) for n in range(_MIN_COPY, _MAX_COPY + 1)}

    def copies_template(self, text: str, seed_text: str) -> bool:
        """Whether `text` repeats a run of words of the prompts' worked examples absent from the seed.

        Small models copy the worked example instead of following it; this costs no request to detect.
        """
        text_words = words(text)
        n = min(_MAX_COPY, len(text_words))
        if n < _MIN_COPY:
            return False
        return bool((_ngrams(text_words, n) & self._example_ngrams[n]) - _ngrams(words(seed_text), n))

    def messages(self, name: str, **values: str) -> list[dict[str, str]]:
        user = self._env.get_template(f"{self.version}_{name}.jinja").render(**values).strip()
        return [{"role": "system", "content": self._system}, {"role": "user", "content": user}]


# Words that do not make an instruction say more than its query.
_STOPWORDS = frozenset(
    (  # noqa: SIM905 (one readable line beats a 40-line list)
        "a an the of to in on for and or with about what how is are was do does i me my want find only that this "
        "which who when where why please information documents sources results"
    ).split()
)
_NEGATIVE_FIELDS = ("instruction_negative", "hard_negative_document_1", "query_negative", "hard_negative_document_2")


_MIN_COPY, _MAX_COPY = 3, 8
_EXAMPLE = re.compile(r"^Example$(.*?)^Now your turn\.$", re.S | re.M)


def _ngrams(words: list[str], n: int) -> set[tuple[str, ...]]:
    return {tuple(words[i : i + n]) for i in range(len(words) - n + 1)}


def _content_words(text: str) -> set[str]:
    return set(words(text)) - _STOPWORDS


def precheck_instruction(row: dict[str, str], prompts: Prompts) -> list[str]:
    """Deterministic rejections of I+ before more money is spent on it."""
    ins, query, passage = row["instruction_positive"], row["query_positive"], row["document_positive"]
    if not normalise(ins):
        return ["empty_instruction_positive"]
    if normalise(ins) == normalise(query) or _content_words(ins) <= _content_words(query):
        return ["instruction_copies_query"]
    if normalise(ins) in normalise(passage):
        return ["instruction_copies_passage"]
    if prompts.copies_template(ins, f"{query} {passage}"):
        return ["copies_prompt_example:instruction_positive"]
    return []


def precheck_negatives(row: dict[str, str], prompts: Prompts) -> list[str]:
    """Deterministic rejections of I-, HN1, Q-, HN2 before any judge call."""
    reasons = [f"empty_{f}" for f in _NEGATIVE_FIELDS if not normalise(row[f])]
    if reasons:
        return reasons
    seed_text = f"{row['query_positive']} {row['document_positive']} {row['instruction_positive']}"
    reasons = [f"copies_prompt_example:{f}" for f in _NEGATIVE_FIELDS if prompts.copies_template(row[f], seed_text)]
    same = [
        ("instruction_negative", "instruction_positive", "instruction_negative_equals_positive"),
        ("query_negative", "query_positive", "query_negative_equals_positive"),
        ("hard_negative_document_1", "document_positive", "hard_negative_1_equals_positive"),
        ("hard_negative_document_2", "document_positive", "hard_negative_2_equals_positive"),
        ("hard_negative_document_1", "hard_negative_document_2", "hard_negatives_equal"),
    ]
    return reasons + [reason for a, b, reason in same if normalise(row[a]) == normalise(row[b])]


async def _gather(*aws: Awaitable) -> list:
    """Await all (so every request of a batch round gets queued); raise an AnswerError first, else PendingAnswer."""
    results = await asyncio.gather(*aws, return_exceptions=True)
    errors = [r for r in results if isinstance(r, BaseException)]
    for kind in (AnswerError, PendingAnswer, BaseException):
        for e in errors:
            if isinstance(e, kind):
                raise e
    return results


class SeedPipeline:
    """Turns one seed into a record or a rejection."""

    def __init__(self, llm: LLMClient, config: PipelineConfig, prompts: Prompts):
        self.llm, self.config, self.prompts = llm, config, prompts
        self._gen_params = {"max_completion_tokens": config.generator_max_tokens, "seed": config.seed}
        if not _is_reasoning_model(config.generator_model):
            self._gen_params["temperature"] = config.temperature
        self._judge_params: dict[str, Any] = {"max_completion_tokens": config.judge_max_tokens}

    async def _generate(self, template: str, answer_type, **values: str):
        messages = self.prompts.messages(template, **values)
        return await self.llm.ask(self.config.generator_model, messages, answer_type, self._gen_params)

    async def _judge(self, instruction: str, query: str, passage: str) -> RelevanceVerdict:
        messages = self.prompts.messages("judge_relevance", instruction=instruction, query=query, passage=passage)
        return await self.llm.ask(self.config.judge_model, messages, RelevanceVerdict, self._judge_params)

    async def _judge_plausibility(self, instruction: str, query: str) -> PlausibilityVerdict:
        messages = self.prompts.messages("judge_plausibility", instruction=instruction, query=query)
        return await self.llm.ask(self.config.judge_model, messages, PlausibilityVerdict, self._judge_params)

    async def _verdicts(self, row: dict[str, str]) -> list[dict[str, Any]]:
        """Every judge question about the row at once: relevance, then plausibility of the poisoned requests."""
        answers = await _gather(
            *(self._judge(row[i], row[q], row[p]) for _, i, q, p, _ in JUDGE_CHECKS),
            *(self._judge_plausibility(row[i], row[q]) for _, i, q in PLAUSIBILITY_CHECKS),
        )
        relevance, plausibility = answers[: len(JUDGE_CHECKS)], answers[len(JUDGE_CHECKS) :]
        return [
            {"check": name, "passed": answer.relevant == expected, "reason": answer.reason.strip()}
            for (name, *_, expected), answer in zip(JUDGE_CHECKS, relevance, strict=True)
        ] + [
            {"check": name, "passed": answer.plausible, "reason": answer.reason.strip()}
            for (name, *_), answer in zip(PLAUSIBILITY_CHECKS, plausibility, strict=True)
        ]

    async def run(self, seed: Seed) -> Outcome:
        """Raises PendingAnswer in batch mode when a needed answer is not in the cache yet."""
        row = {"query_positive": seed.query, "document_positive": seed.passage}
        try:
            positive = await self._generate("instruction_positive", PositiveInstruction, **_inputs(row))
            row["instruction_positive"] = positive.instruction.strip()
            if reasons := precheck_instruction(row, self.prompts):
                return self._reject(seed, "instruction_positive", reasons, row)
            inputs = {**_inputs(row), "instruction": row["instruction_positive"]}
            ins_neg, query_neg = await _gather(
                self._generate("instruction_negative", InstructionNegative, **inputs),
                self._generate("query_negative", QueryNegative, **inputs),
            )
        except AnswerError as e:
            stage = "instruction_positive" if "instruction_positive" not in row else "negatives"
            return self._reject(seed, stage, [f"unusable_answer:{stage}"], row, detail=str(e))
        row["instruction_negative"] = ins_neg.instruction_negative.strip()
        row["hard_negative_document_1"] = ins_neg.hard_negative_document.strip()
        row["query_negative"] = query_neg.query_negative.strip()
        row["hard_negative_document_2"] = query_neg.hard_negative_document.strip()
        if reasons := precheck_negatives(row, self.prompts):
            return self._reject(seed, "negatives", reasons, row)
        # The rules of `infir build-repo` (lengths, minimal edits, ...): a row kept here is never rejected there, and
        # a row it would reject costs no judge call.
        if invalid := validate(row):
            codes = list(dict.fromkeys(reason_code(r) for r in invalid))
            return self._reject(seed, "validate", codes, row, detail="; ".join(invalid))
        try:
            verdicts = await self._verdicts(row)
        except AnswerError as e:
            return self._reject(seed, "judge", ["unusable_answer:judge"], row, detail=str(e))
        failed = [f"judge:{v['check']}" for v in verdicts if not v["passed"]]
        if failed:
            return self._reject(seed, "judge", failed, row, verdicts=verdicts)
        return Outcome(
            seed, record={"id": seed.id, "source": seed.source, **row, "provenance": self._provenance(verdicts)}
        )

    def _provenance(self, verdicts: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "generator_model": self.config.generator_model,
            "judge_model": self.config.judge_model,
            "prompt_version": self.config.prompt_version,
            "verdicts": verdicts,
        }

    def _reject(self, seed: Seed, stage: str, reasons: list[str], row: dict[str, str], **extra: Any) -> Outcome:
        rejection = {
            "id": seed.id,
            "source": seed.source,
            "seed_id": seed.seed_id,
            "origin": seed.origin,
            "stage": stage,
            "reasons": reasons,
            "detail": extra.get("detail", ""),
            "generated": {k: v for k, v in row.items() if k not in ("query_positive", "document_positive")},
            "query": seed.query,
            "passage": seed.passage,
            "provenance": self._provenance(extra.get("verdicts", [])),
        }
        return Outcome(seed, rejection=rejection)


def _inputs(row: dict[str, str]) -> dict[str, str]:
    return {"query": row["query_positive"], "passage": row["document_positive"]}


def _is_reasoning_model(model: str) -> bool:
    """OpenAI's reasoning models (o1, o3-mini, o4-mini, gpt-5...) refuse a `temperature`."""
    name = model.rsplit("/", 1)[-1].lower()
    return bool(re.match(r"o\d", name)) or name.startswith("gpt-5")


class OutputFileError(ValueError):
    """An output file of an earlier run that cannot be resumed from."""


def _is_record(line: bytes) -> bool:
    try:
        obj = json.loads(line)
    except ValueError:  # not JSON, or not UTF-8
        return False
    return isinstance(obj, dict) and "id" in obj


class JsonlAppender:
    """An append-only JSONL file whose every line is flushed and fsynced; repairs a cut last line on open."""

    def __init__(self, path: Path):
        self.path = path
        self.ids: set[str] = set()
        if path.exists():
            self._repair_and_read()
        self._file = path.open("a", encoding="utf-8")

    def _repair_and_read(self) -> None:
        data = self.path.read_bytes()
        if data and not data.endswith(b"\n"):
            tail = data[data.rfind(b"\n") + 1 :]
            if _is_record(tail):  # complete, but for its newline (killed between the two, or written by hand)
                with self.path.open("ab") as f:
                    f.write(b"\n")
                data += b"\n"
            else:
                # Killed mid-write: the seed of the cut line was not finished, so it is redone (answers are cached).
                with self.path.open("r+b") as f:
                    f.truncate(len(data) - len(tail))
                data = data[: len(data) - len(tail)]
        for n, line in enumerate(data.decode("utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                self.ids.add(json.loads(line)["id"])
            except (json.JSONDecodeError, KeyError, TypeError):
                raise OutputFileError(
                    f"{self.path}:{n}: not a JSON object with an 'id'; fix or remove this line"
                ) from None

    def append(self, obj: dict[str, Any]) -> None:
        self._file.write(json.dumps(obj, ensure_ascii=False) + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())
        self.ids.add(obj["id"])

    def close(self) -> None:
        self._file.close()


@dataclass
class OutputFiles:
    records: JsonlAppender
    rejected: JsonlAppender
    kept: int = 0  # in this run
    rejected_now: int = 0

    @classmethod
    def open(cls, out_dir: Path) -> "OutputFiles":
        return cls(JsonlAppender(out_dir / "records.jsonl"), JsonlAppender(out_dir / "rejected.jsonl"))

    def done_ids(self) -> set[str]:
        return self.records.ids | self.rejected.ids

    def write(self, outcome: Outcome) -> None:
        if outcome.record is not None:
            self.records.append(outcome.record)
            self.kept += 1
        else:
            assert outcome.rejection is not None
            self.rejected.append(outcome.rejection)
            self.rejected_now += 1

    def close(self) -> None:
        self.records.close()
        self.rejected.close()


async def run_seeds(
    seeds: Iterable[Seed],
    pipeline: SeedPipeline,
    outputs: OutputFiles,
    workers: int,
    on_done: Callable[[Outcome], None] = lambda outcome: None,
) -> list[Seed]:
    """Process `seeds` with `workers` seeds in flight, writing each outcome as it comes; returns the seeds left
    pending (batch mode: answers queued for the next batch)."""
    queue: asyncio.Queue[Seed] = asyncio.Queue()
    for seed in seeds:
        queue.put_nowait(seed)
    pending: list[Seed] = []
    errors: list[BaseException] = []

    async def worker() -> None:
        # After a fatal error (the API is down, the key is wrong) no new seed starts, but the seeds in flight run
        # to their end, so that every answer already on its way is cached rather than paid for again.
        while not queue.empty() and not errors:
            seed = queue.get_nowait()
            try:
                outcome = await pipeline.run(seed)
            except PendingAnswer:
                pending.append(seed)
                continue
            except Exception as e:
                errors.append(e)
                return
            outputs.write(outcome)
            on_done(outcome)

    await asyncio.gather(*(worker() for _ in range(max(1, workers))))
    if errors:
        raise errors[0]
    return pending
