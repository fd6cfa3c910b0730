"""SQLite cache of LLM requests and answers, in the output folder, so that a killed run repeats no finished request.

Each answer is committed the moment it arrives (WAL journal: a SIGKILL loses at most the transactions not yet
committed, never a committed one). The key is the sha256 of the model, messages, parameters and attempt number, so a
retry of an answer that did not parse is a new request while a rerun of the same command hits the cache.
"""

import hashlib
import json
import sqlite3
from pathlib import Path
from typing import Any

_SCHEMA = """
CREATE TABLE IF NOT EXISTS answers (
    key TEXT PRIMARY KEY,
    model TEXT NOT NULL,
    request TEXT NOT NULL,
    response TEXT NOT NULL,
    prompt_tokens INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    via_batch INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS batches (
    batch_id TEXT PRIMARY KEY,
    request_file TEXT NOT NULL,
    n_requests INTEGER NOT NULL,
    collected INTEGER NOT NULL DEFAULT 0
);
"""


def request_key(request: dict[str, Any], attempt: int) -> str:
    """sha256 of the request body (model, messages, parameters) and the attempt number."""
    canonical = json.dumps({"request": request, "attempt": attempt}, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


class RequestCache:
    """Answers by request key, stored in `DIR/requests.sqlite`."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._db = sqlite3.connect(self.path, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        # NORMAL is durable across a killed process (the WAL is in the OS page cache); only a power loss can drop
        # the last commits, which the next run then requests again.
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)

    def get(self, key: str) -> dict[str, Any] | None:
        """The stored chat completion (as a dict) for `key`, or None."""
        row = self._db.execute("SELECT response FROM answers WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else None

    def put(self, key: str, request: dict[str, Any], response: dict[str, Any], via_batch: bool = False) -> None:
        """Store and commit one answer."""
        usage = response.get("usage") or {}
        self._db.execute(
            "INSERT OR REPLACE INTO answers (key, model, request, response, prompt_tokens, completion_tokens,"
            " via_batch) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                key,
                request["model"],
                json.dumps(request, ensure_ascii=False),
                json.dumps(response, ensure_ascii=False),
                int(usage.get("prompt_tokens") or 0),
                int(usage.get("completion_tokens") or 0),
                int(via_batch),
            ),
        )

    def is_empty(self) -> bool:
        """Whether no answer was ever stored here (by any run into this folder)."""
        return self._db.execute("SELECT 1 FROM answers LIMIT 1").fetchone() is None

    def tokens_per_model(self) -> dict[str, dict[str, int]]:
        """Tokens of every answer ever stored here (all runs into this folder), by model."""
        rows = self._db.execute(
            "SELECT model, COUNT(*), SUM(prompt_tokens), SUM(completion_tokens) FROM answers GROUP BY model"
        ).fetchall()
        return {m: {"requests": n, "prompt_tokens": p, "completion_tokens": c} for m, n, p, c in rows}

    def add_batch(self, batch_id: str, request_file: str, n_requests: int) -> None:
        """Remember a submitted batch, so that a restarted run collects it instead of paying for it twice."""
        self._db.execute(
            "INSERT OR IGNORE INTO batches (batch_id, request_file, n_requests) VALUES (?, ?, ?)",
            (batch_id, request_file, n_requests),
        )

    def open_batches(self) -> list[tuple[str, str]]:
        """(batch id, local request file) of submitted batches whose answers are not collected yet."""
        return self._db.execute(
            "SELECT batch_id, request_file FROM batches WHERE collected = 0 ORDER BY rowid"
        ).fetchall()

    def close_batch(self, batch_id: str) -> None:
        self._db.execute("UPDATE batches SET collected = 1 WHERE batch_id = ?", (batch_id,))

    def close(self) -> None:
        self._db.close()
