"""The one normalisation of texts compared by the pipeline's prechecks, validation, dedup and decontamination.

A text is compared as its words: every character lowercased (the simple Unicode mapping, one character to one), and
every punctuation mark (Unicode category P*, `_` included), symbol (S*) and whitespace character treated as a space.
So `a_b`, `a-b`, `a/b` and `a b` are the same words, and so are `“a”` and `"a"`. One rule everywhere means that a
row the generator keeps as "I- differs from I+" is not rejected by `infir build-repo` as the same instruction.

`normalise` works on one string, `normalise_array` on an Arrow array (for dedup and decontamination). They agree on
every character of the Unicode version of Python's `unicodedata`; characters assigned only in a later version
(which Arrow's tables may know) can differ.
"""

import unicodedata

import pyarrow as pa
import pyarrow.compute as pc


class _Table(dict):
    """`str.translate` table, filled on first use of each character: a separator becomes `separator`, anything else
    its lowercase. Lazy, since a full table would take a second to build at import."""

    def __init__(self, separator: str | None):
        super().__init__()
        self.separator = separator  # None deletes: unlike "", it keeps `str.translate` on its fast path

    def __missing__(self, code: int) -> str | None:
        char = chr(code)
        # `str.lower` maps U+0130 (İ) to two characters; its simple mapping, which Arrow uses, is the first.
        value = self.separator if unicodedata.category(char)[0] in "PSZ" or char.isspace() else char.lower()[0]
        self[code] = value
        return value


_TABLE = _Table(" ")
_LETTERS_TABLE = _Table(None)

# The same separators for RE2: punctuation, symbols, and what `str.isspace` accepts (Z* and a few controls).
_SEPARATOR = r"[\pP\pS\p{Z}\t\n\x0b\x0c\r\x1c-\x1f\x85]"
# ... other than a plain space (`[^\PZ ]`: a Z character that is not " ").
_NOT_A_SPACE = r"[\pP\pS\t\n\x0b\x0c\r\x1c-\x1f\x85]|[^\PZ ]"
# Only runs of separators and single separators other than a space are rewritten: ordinary text (words between
# single spaces) then has few matches, which is much faster than rewriting every space.
_REWRITTEN = f"{_SEPARATOR}{{2,}}|{_NOT_A_SPACE}"


def words(text: str) -> list[str]:
    """The normalised words of `text`."""
    return text.translate(_TABLE).split()


def normalise(text: str) -> str:
    """The normalised words of `text`, joined by single spaces."""
    return " ".join(words(text))


def letters(text: str) -> str:
    """`normalise(text)` without its spaces: texts with equal `normalise` have equal `letters`, and this is cheaper,
    so a test of equality of long texts can start with it."""
    return text.translate(_LETTERS_TABLE)


def normalise_array(texts: pa.Array | pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
    """`normalise` of each string of an Arrow array."""
    return pc.utf8_trim(pc.replace_substring_regex(pc.utf8_lower(texts), _REWRITTEN, " "), " ")
