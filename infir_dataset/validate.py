"""Per-record rules of InF-IR: a record is kept only when `validate` finds no reason to reject it.

Each reason is `"<code>: <detail>"`; the code (the part before the colon) is what the dataset card counts.
"""

import re
from typing import Any

from .normalise import letters, normalise, words
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

# I- and Q- are minimal edits of I+ and Q+, both ways: at most this share of the distinct (normalised) words of I+
# may be missing from I-, and at most this share of those of I- may be new. Measured on the 546 gold rows (one
# condition or entity changed): at most 50% of an instruction's words and 60% of a query's change, 20% at the median;
# I+ against the I- of another row changes 93% at the median, and 0.5% of such pairs pass (2.9% of query pairs).
# Sets of words are cheap; a word-order-aware edit distance separated those rows barely better, at several times
# the cost per row.
MAX_EDIT_SHARE = 0.6
# ... or at most this many words, so that a query of one or two words can still have its entity swapped.
EDIT_ALLOWANCE_WORDS = 2
# HN1 and HN2 are within 25% of P+'s length, longer or shorter (the project's rule): a model must tell them from P+
# by what they say, not by how long they are. Length in characters or in whitespace-separated words, either will do:
# the two disagree on texts of unusually long or short words, and characters cost nothing to count.
LENGTH_TOLERANCE = 0.25
# (poisoned field, its positive, reason code)
MINIMAL_EDITS = (
    ("instruction_negative", "instruction_positive", "instruction_negative_not_minimal_edit"),
    ("query_negative", "query_positive", "query_negative_not_minimal_edit"),
)
SAME_LENGTH = (
    ("hard_negative_document_1", "document_positive", "hard_negative_1_length_mismatch"),
    ("hard_negative_document_2", "document_positive", "hard_negative_2_length_mismatch"),
)

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


_FIELD_BOUNDS = {field: _bounds(field) for field in RECORD_FIELDS}


def _length_reason(field: str, value: str) -> str | None:
    (low, high), max_chars = _FIELD_BOUNDS[field]
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


def _difference_reasons(texts: dict[str, str], tokens: dict[str, list[str]]) -> list[str]:
    """Parts that must differ but are equal once case, punctuation and spacing are ignored."""
    # Passages: equal letters first, which spares normalising whole passages for almost every pair.
    keys = {field: tokens[field] if field in tokens else letters(texts[field]) for field in _COMPARED if field in texts}
    return [
        f"{code}: {a} equals {b}"
        for a, b, code in _DIFFERENT
        if a in keys and b in keys and keys[a] == keys[b] and normalise(texts[a]) == normalise(texts[b])
    ]


def _far_in_length(text: str, positive: str) -> bool:
    """Whether `text` is more than LENGTH_TOLERANCE longer or shorter than `positive`, in characters and in words."""
    if abs(len(text) - len(positive)) <= LENGTH_TOLERANCE * len(positive):
        return False
    words, positive_words = len(text.split()), len(positive.split())
    return abs(words - positive_words) > LENGTH_TOLERANCE * positive_words


def _edit_reasons(texts: dict[str, str], tokens: dict[str, list[str]]) -> list[str]:
    """I- and Q- that are no minimal edit of I+ and Q+, and HN1 and HN2 whose length is far from P+'s."""
    reasons = []
    for poisoned, positive, code in MINIMAL_EDITS:
        if poisoned in tokens and positive in tokens:
            before, after = set(tokens[positive]), set(tokens[poisoned])
            kept = len(before & after)
            dropped, added = len(before) - kept, len(after) - kept
            if dropped > max(EDIT_ALLOWANCE_WORDS, MAX_EDIT_SHARE * len(before)) or added > max(
                EDIT_ALLOWANCE_WORDS, MAX_EDIT_SHARE * len(after)
            ):
                reasons.append(
                    f"{code}: {poisoned} drops {dropped} of the {len(before)} distinct words of {positive} and adds"
                    f" {added} to its {len(after)} (at most {MAX_EDIT_SHARE:.0%} each way, or {EDIT_ALLOWANCE_WORDS})"
                )
    for negative, positive, code in SAME_LENGTH:
        if negative in texts and positive in texts and _far_in_length(texts[negative], texts[positive]):
            a, b = texts[negative], texts[positive]
            reasons.append(
                f"{code}: {negative} has {len(a)} characters and {len(a.split())} words, {positive} {len(b)} and"
                f" {len(b.split())} (at most {LENGTH_TOLERANCE:.0%} apart in either)"
            )
    return reasons


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
    texts = {field: row[field] for field in RECORD_FIELDS if isinstance(row.get(field), str)}
    # Instructions and queries are short: their normalised words serve both the "differs" and the minimal-edit rules.
    tokens = {field: words(texts[field]) for field in INSTRUCTION_FIELDS + QUERY_FIELDS if field in texts}
    return (
        _field_reasons(row)
        + _difference_reasons(texts, tokens)
        + _edit_reasons(texts, tokens)
        + _identity_reasons(row)
        + _provenance_reasons(row.get("provenance"))
    )
