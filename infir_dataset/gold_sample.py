"""The InF-IR gold sample: rows that the maintainers wrote and reviewed by hand (`infir_dataset/gold/`), its fixed
split, and the diversity figures that `python -m infir_dataset.gold_sample` prints and checks.

The sample is what `make demo` trains and evaluates on when no LLM is configured; see `gold/README.md` for how it
was written. The split was made once, with `is_gold_holdout`.
"""

import argparse
import difflib
import hashlib
import re
import sys
from collections import Counter
from importlib.resources import files
from pathlib import Path

from .jsonl import read_jsonl

PARTS = ("train", "heldout")
HOLDOUT_FRACTION = 0.2
# Diversity targets: no instruction opening may dominate, and a hard negative is a minimal edit of its positive.
MAX_OPENING_SHARE = 0.05
MAX_EDIT_SHARE = 0.5
MIN_LONG_SHARE = 0.2
LONG_WORDS = (60, 150)
MAX_LENGTH_CHANGE = 0.25


def gold_path(part: str) -> Path:
    """The JSONL file of one part of the sample: `train` or `heldout`."""
    if part not in PARTS:
        raise ValueError(f"part must be one of {PARTS}, got {part!r}")
    return Path(str(files("infir_dataset") / "gold" / f"{part}.jsonl"))


def is_gold_holdout(record_id: str) -> bool:
    """The sample's split: a row is held out when its salted id hash falls below HOLDOUT_FRACTION. The salt keeps it
    independent of the id hash that chose the seeds (the lowest hashes), which would have held out all of those."""
    digest = hashlib.sha256(f"infir-gold-split:{record_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < HOLDOUT_FRACTION


def read_gold(part: str) -> list[dict]:
    return [row for _, row in read_jsonl(gold_path(part))]


def _words(text: str) -> list[str]:
    return re.findall(r"\w+", text.lower())


def edit_share(original: str, edited: str) -> float:
    """Share of `edited`'s words outside its longest word alignment with `original` (0: the same words)."""
    a, b = _words(original), _words(edited)
    matcher = difflib.SequenceMatcher(None, a, b, autojunk=False)
    kept = sum(block.size for block in matcher.get_matching_blocks())
    return 1 - kept / max(len(b), 1)


def diversity(rows: list[dict]) -> dict:
    """The figures the sample is held to: instruction openings, long instructions, and how far HN1/HN2 stray from P+."""
    openings = Counter(" ".join(_words(row["instruction_positive"])[:4]) for row in rows)
    long_rows = sum(LONG_WORDS[0] <= len(row["instruction_positive"].split()) <= LONG_WORDS[1] for row in rows)
    edits, length_changes = [], []
    for row in rows:
        positive_words = len(row["document_positive"].split())
        for field in ("hard_negative_document_1", "hard_negative_document_2"):
            edits.append(edit_share(row["document_positive"], row[field]))
            length_changes.append(abs(len(row[field].split()) / positive_words - 1))
    top_opening, top_count = openings.most_common(1)[0]
    return {
        "rows": len(rows),
        "distinct_openings": len(openings),
        "top_opening": top_opening,
        "top_opening_share": top_count / len(rows),
        "long_instruction_share": long_rows / len(rows),
        "hard_negative_edit_share_mean": sum(edits) / len(edits),
        "hard_negative_edit_share_max": max(edits),
        "hard_negative_length_change_max": max(length_changes),
    }


def problems(figures: dict) -> list[str]:
    """The targets a sample misses (none for the shipped one)."""
    checks = [
        (
            figures["top_opening_share"] <= MAX_OPENING_SHARE,
            f"an I+ opening is in over {MAX_OPENING_SHARE:.0%} of rows",
        ),
        (figures["long_instruction_share"] >= MIN_LONG_SHARE, f"fewer than {MIN_LONG_SHARE:.0%} long I+"),
        (figures["hard_negative_edit_share_max"] < MAX_EDIT_SHARE, "a hard negative rewrites most of P+'s words"),
        (figures["hard_negative_length_change_max"] <= MAX_LENGTH_CHANGE, "a hard negative's length is off by > 25%"),
    ]
    return [message for ok, message in checks if not ok]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infir_dataset.gold_sample", description=__doc__.split("\n\n")[0])
    parser.add_argument("--input", nargs="+", metavar="FILE", help="rows to check (default: the shipped sample)")
    args = parser.parse_args(argv)
    paths = args.input or [gold_path(part) for part in PARTS]
    rows = [row for path in paths for _, row in read_jsonl(path)]
    figures = diversity(rows)
    for name, value in figures.items():
        print(f"{name:34} {value:.3f}" if isinstance(value, float) else f"{name:34} {value}")
    missed = problems(figures)
    for message in missed:
        print(f"gold_sample: {message}", file=sys.stderr)
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
