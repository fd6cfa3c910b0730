"""The one definition of an InF-IR record, shared by the generator, the repo builder, the reader and the tests.

A record is one positive <instruction, query, passage> triplet with its two poisoned variants:
(I-, Q+) is answered by `hard_negative_document_1` and (I+, Q-) by `hard_negative_document_2`, so each
of the three passages is a hard negative for the other two (instruction, query) pairs.
"""

import hashlib

from datasets import Features, List, Value

# The seven string fields of the public `InF-IR/InF-IR` rows, in the Hub's order.
RECORD_FIELDS: tuple[str, ...] = (
    "query_positive",
    "instruction_positive",
    "document_positive",
    "query_negative",
    "instruction_negative",
    "hard_negative_document_1",
    "hard_negative_document_2",
)

# Default config: one split per source (`msmarco`, ...).
RECORD_FEATURES = Features(
    {"id": Value("string"), "source": Value("string"), **{f: Value("string") for f in RECORD_FIELDS}}
)

# `triplets` config: the same rows in long form, splits `positive` and `hard_negative`.
TRIPLET_KINDS: tuple[str, ...] = ("positive", "instruction_negative", "query_negative")
TRIPLET_FEATURES = Features(
    {
        "id": Value("string"),
        "instruction": Value("string"),
        "query": Value("string"),
        "passage": Value("string"),
        "kind": Value("string"),
    }
)

# `provenance` config, keyed by `id`: who wrote and who judged each record.
VERDICT_FEATURE = {"check": Value("string"), "passed": Value("bool"), "reason": Value("string")}
PROVENANCE_FEATURES = Features(
    {
        "id": Value("string"),
        "source": Value("string"),
        "generator_model": Value("string"),
        "judge_model": Value("string"),
        "prompt_version": Value("string"),
        "verdicts": List(VERDICT_FEATURE),
    }
)


# `generator_model` / `judge_model` of rows that people wrote and reviewed (the gold sample, infir_dataset/gold/).
HAND_WRITTEN = "InF-IR maintainers (hand-written)"
HAND_REVIEWED = "InF-IR maintainers (second review)"


def record_id(source: str, query: str, passage: str) -> str:
    """Stable id of the record grown from the seed (query, passage): `<source>-<16 hex digits>`."""
    digest = hashlib.sha256(f"{query}\x1f{passage}".encode()).hexdigest()[:16]
    return f"{source}-{digest}"
