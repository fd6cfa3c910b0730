"""Per-record rules of InF-IR: a record is kept only when `validate` finds no reason to reject it.

Each reason is `"<code>: <detail>"`; the code (the part before the colon) is what the dataset card counts.
"""

import re
from typing import Any

from .normalise import letters, normalise
from .schema import RECORD_FIELDS

INSTRUCTION_FIELDS = ("instruction_positive", "instruction_negative")
QUERY_FIELDS = ("query_positive", "query_negative")
PASSAGE_FIELDS = ("document_positive", "hard_negative_document_1", "hard_negative_document_2")

# Bounds in whitespace-separated words and in characters. They reject degenerate generations (an "instruction"
# of one word, a passage that is a whole web page) while admitting MS MARCO, MetaMath and LeetCode rows.
INSTRUCTION_WORDS = (3, 256)
QUERY_WORDS = (1, 128)
PASSAGE_WORDS = (3, 2048)
MAX_CHARS = {"instruction": 4_000, "query": 2_000, "passage": 30_000}

# A source becomes a split name, which `datasets` restricts to `\w+(\.\w+)*` (no dashes).
SPLIT_NAME = re.compile(r"^\w+(\.\w+)*$")
PROVENANCE_STRINGS = ("generator_model", "judge_model", "prompt_version")


def reason_code(reason: str) -> str:
    """The counted part of a reason: `"same_query: ..."` -> `"same_query"`."""
    return reason.split(":", 1)[0]


def _bounds(field: str) -> tuple[tuple[int, int], int]:
    if field in INSTRUCTION_FIELDS:
        return INSTRUCTION_WORDS, MAX_CHARS["instruction"]
    if field in QUERY_FIELDS:
        return QUERY_WORDS, MAX_CHARS["query"]
    return PASSAGE_WORDS, MAX_CHARS["passage"]


def _length_reason(field: str, value: str) -> str | None:
    (low, high), max_chars = _bounds(field)
    # maxsplit keeps the common case cheap: only a text long enough to break the upper bound is fully split.
    if len(value.split(None, low)) < low:
        return f"too_short: {field} has {len(value.split())} words (min {low})"
    if len(value) > 2 * high and (words := len(value.split())) > high:
        return f"too_long: {field} has {words} words (max {high})"
    if len(value) > max_chars:
        return f"too_long: {field} has {len(value)} characters (max {max_chars})"
    return None


def _field_reasons(row: dict[str, Any]) -> list[str]:
    reasons = []
    for field in RECORD_FIELDS:
        value = row.get(field)
        if value is None:
            reasons.append(f"missing_field: {field}")
        elif not isinstance(value, str):
            reasons.append(f"not_a_string: {field} is {type(value).__name__}")
        elif not value.strip():
            reasons.append(f"empty_field: {field}")
        elif reason := _length_reason(field, value):
            reasons.append(reason)
    return reasons


_DIFFERENT = (
    ("instruction_negative", "instruction_positive", "same_instruction"),
    ("query_negative", "query_positive", "same_query"),
    *((a, b, "same_passage") for i, a in enumerate(PASSAGE_FIELDS) for b in PASSAGE_FIELDS[i + 1 :]),
)


_COMPARED = tuple(dict.fromkeys(field for a, b, _ in _DIFFERENT for field in (a, b)))


def _difference_reasons(row: dict[str, Any]) -> list[str]:
    """Parts that must differ but are equal once case, punctuation and spacing are ignored."""
    texts = {field: row[field] for field in _COMPARED if isinstance(row.get(field), str)}
    # Equal letters first, which spares normalising whole passages for almost every pair.
    keys = {field: letters(text) for field, text in texts.items()}
    return [
        f"{code}: {a} equals {b}"
        for a, b, code in _DIFFERENT
        if a in keys and b in keys and keys[a] == keys[b] and normalise(texts[a]) == normalise(texts[b])
    ]


def _identity_reasons(row: dict[str, Any]) -> list[str]:
    reasons = []
    if "id" in row and row["id"] is not None and not (isinstance(row["id"], str) and row["id"].strip()):
        reasons.append("bad_id: id must be a non-empty string")
    source = row.get("source")
    if source is not None and not (isinstance(source, str) and SPLIT_NAME.match(source)):
        reasons.append(f"bad_source: {source!r} is not a valid split name (letters, digits, underscores)")
    return reasons


def _provenance_reasons(provenance: Any) -> list[str]:
    if provenance is None:
        return []
    if not isinstance(provenance, dict):
        return [f"bad_provenance: expected an object, got {type(provenance).__name__}"]
    reasons = [
        f"bad_provenance: {key} must be a string"
        for key in PROVENANCE_STRINGS
        if not isinstance(provenance.get(key), str)
    ]
    verdicts = provenance.get("verdicts", [])
    if not isinstance(verdicts, list):
        return [*reasons, "bad_provenance: verdicts must be a list"]
    for i, verdict in enumerate(verdicts):
        ok = (
            isinstance(verdict, dict)
            and isinstance(verdict.get("check"), str)
            and isinstance(verdict.get("passed"), bool)
            and isinstance(verdict.get("reason", ""), str | None)
        )
        if not ok:
            reasons.append(f"bad_provenance: verdicts[{i}] must be {{check: str, passed: bool, reason: str}}")
    return reasons


def validate(row: dict[str, Any]) -> list[str]:
    """Reasons to reject one input row (an empty list when it is a valid InF-IR record)."""
    return (
        _field_reasons(row)
        + _difference_reasons(row)
        + _identity_reasons(row)
        + _provenance_reasons(row.get("provenance"))
    )
