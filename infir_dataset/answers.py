"""Typed structured answers of the LLM, one pydantic model per request kind.

Each model's JSON schema is sent as `response_format={"type": "json_schema", ...}` with `strict: true`, so OpenAI,
vLLM and llama.cpp constrain decoding to it; the answer is then validated back into the model. Free-text reasoning
fields come first so that a model writes its reasoning before the answer it commits to.
"""

from typing import Any

from pydantic import BaseModel, ConfigDict


class _Answer(BaseModel):
    # extra="forbid" makes the schema say additionalProperties: false, which strict mode requires.
    model_config = ConfigDict(extra="forbid")


class PositiveInstruction(_Answer):
    """Stage 1: I+, an instruction that narrows Q+ so that P+ (and not any answer of Q+) is what the user wants."""

    aspect: str
    instruction: str


class InstructionNegative(_Answer):
    """Stage 2: I-, a minimal edit of I+ that P+ no longer satisfies, and HN1, a passage relevant to (I-, Q+)."""

    edit: str
    instruction_negative: str
    hard_negative_document: str


class QueryNegative(_Answer):
    """Stage 3: Q-, a minimal edit of Q+ that P+ no longer answers under I+, and HN2, a passage relevant to (I+, Q-)."""

    edit: str
    query_negative: str
    hard_negative_document: str


class RelevanceVerdict(_Answer):
    """Judge: is this passage relevant to this (instruction, query)? The judge never sees which answer is expected."""

    reason: str
    relevant: bool


class PlausibilityVerdict(_Answer):
    """Judge: is this (instruction, query) a request a real user could make? Asked of the poisoned pairs."""

    reason: str
    plausible: bool


def schema_name(answer_type: type[BaseModel]) -> str:
    """The `json_schema.name` of an answer type (letters, digits, `_` as OpenAI requires)."""
    name = answer_type.__name__
    return "".join("_" + c.lower() if c.isupper() and i else c.lower() for i, c in enumerate(name))


def response_format(answer_type: type[BaseModel]) -> dict[str, Any]:
    """The OpenAI `response_format` asking for a strict JSON answer of `answer_type`."""
    schema = answer_type.model_json_schema()
    # pydantic puts the class docstrings here; they are notes for developers, and would otherwise reach the prompt
    # (and the cache key) outside the versioned templates.
    for model_schema in (schema, *schema.get("$defs", {}).values()):
        model_schema.pop("description", None)
    return {"type": "json_schema", "json_schema": {"name": schema_name(answer_type), "schema": schema, "strict": True}}
