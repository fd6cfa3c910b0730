"""InF-IR rows for the dataset tests: the seven public fields, random words at realistic lengths."""

import random

VOCAB = [f"w{i}" for i in range(5000)]


def words(rng: random.Random, n: int) -> str:
    return " ".join(rng.choices(VOCAB, k=n))


def _edit(text: str, replacements: str) -> str:
    """`text` with its last words replaced by those of `replacements`: a minimal edit, as I- and Q- must be."""
    kept, new = text.split(), replacements.split()
    return " ".join(kept[: len(kept) - len(new)] + new)


def public_row(seed: int) -> dict:
    """A row shaped like the public InF-IR rows: the seven string fields only."""
    rng = random.Random(seed)
    row = {
        "query_positive": words(rng, 6),
        "instruction_positive": words(rng, 20),
        "document_positive": words(rng, 70),
        "query_negative": words(rng, 1),
        "instruction_negative": words(rng, 3),
        "hard_negative_document_1": words(rng, 70),
        "hard_negative_document_2": words(rng, 70),
    }
    row["query_negative"] = _edit(row["query_positive"], row["query_negative"])
    row["instruction_negative"] = _edit(row["instruction_positive"], row["instruction_negative"])
    return row
