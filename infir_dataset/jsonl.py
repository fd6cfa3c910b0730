"""JSON Lines input: one object per line, and an error that names the file and line of the first bad one."""

import json
import os
from collections.abc import Iterator
from pathlib import Path


class InputError(ValueError):
    """An input that cannot be read; `str()` gives `FILE:LINE: reason` (or `FILE: reason`)."""

    def __init__(self, file: str | os.PathLike, reason: str, line: int | None = None):
        self.file, self.reason, self.line = str(file), reason, line
        super().__init__(f"{self.file}:{line}: {reason}" if line is not None else f"{self.file}: {reason}")


def read_jsonl(path: str | os.PathLike) -> Iterator[tuple[int, dict]]:
    """(1-based line number, object) for each non-blank line; InputError at the first line that is not an object."""
    path = Path(path)
    with path.open("rb") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                data = json.loads(line.decode())
            except json.JSONDecodeError as e:
                raise InputError(path, f"invalid JSON: {e.msg} (column {e.colno})", n) from None
            except UnicodeDecodeError:
                raise InputError(path, "not UTF-8 text", n) from None
            if not isinstance(data, dict):
                raise InputError(path, f"expected a JSON object, got {type(data).__name__}", n)
            yield n, data
