"""Secrets never leave the machine: redaction of what the commands record, and the scan both push commands run.

`infembed train` records its command line and arguments (training_args.json, the model card); a `--hub_token` or
an API key given there, or the value of a secret environment variable that ended up in an argument, is replaced
by `<redacted>`. `infembed push` and `infir push-repo` refuse to upload a file that still holds a string shaped like
a Hugging Face token or an OpenAI key, whoever wrote it.
"""

import json
import os
import re
from pathlib import Path

REDACTED = "<redacted>"
# The last word of a secret argument or environment variable: `--hub_token`, `--api-key`, `OPENAI_API_KEY`. Only the
# last word, so `--include_tokens_per_second`, `pad_token_id` or `HF_TOKEN_PATH` are left alone.
SECRET_WORDS = {"token", "key", "apikey", "secret", "password", "passwd", "credential", "credentials"}
# Shapes of real secrets: Hub tokens are `hf_` + 34 letters; OpenAI keys `sk-` + 48 characters, or `sk-proj-...`.
# The hyphen-free tail keeps `sk-` inside ordinary hyphenated words ("task-oriented-...") from matching.
SHAPES = {
    "a Hugging Face token (hf_...)": re.compile(rb"hf_[A-Za-z0-9]{30,}"),
    "an OpenAI API key (sk-...)": re.compile(rb"sk-(?:(?:proj|svcacct|admin)-[A-Za-z0-9_-]{20,}|[A-Za-z0-9]{20,})"),
}
_WORD_CHAR = re.compile(rb"[A-Za-z0-9_]")  # `run-sk-...` is a key; `task-...` or `use_hf_...` no token
MIN_SECRET_LENGTH = 8  # shorter environment values (`1`, `true`) are settings, not secrets
CHUNK = 16 * 1024 * 1024
OVERLAP = 512  # a secret cut by a chunk boundary is found whole in the next chunk


def is_secret_name(name: str) -> bool:
    """`--hub_token`, `hub-token`, `OPENAI_API_KEY` -> True; `--include_tokens_per_second`, `pad_token_id` -> False."""
    words = [word for word in re.split(r"[^a-z0-9]+", name.lower()) if word]
    return bool(words) and words[-1] in SECRET_WORDS


def _secret_environment_values() -> list[str]:
    values = {v for k, v in os.environ.items() if is_secret_name(k) and len(v) >= MIN_SECRET_LENGTH}
    return sorted(values, key=len, reverse=True)  # a value that contains another is replaced whole


def redact_text(text: str) -> str:
    """`text` with every token-shaped string and every secret environment value replaced by `<redacted>`."""
    for value in _secret_environment_values():
        text = text.replace(value, REDACTED)
    for pattern in SHAPES.values():
        text = re.sub(pattern.pattern.decode(), REDACTED, text)
    return text


def redact_argv(argv: list[str]) -> list[str]:
    """A command line with the values of secret options (`--hub_token X`, `--api-key=X`) and any secret text
    replaced by `<redacted>`."""
    out: list[str] = []
    hide_next = False
    for token in argv:
        if hide_next and not token.startswith("--"):
            out.append(REDACTED)
            hide_next = False
            continue
        hide_next = False
        name, sep, _ = token.partition("=")
        if token.startswith("--") and is_secret_name(name):
            if sep:
                out.append(f"{name}={REDACTED}")
                continue
            hide_next = True
        out.append(redact_text(token))
    return out


def redact_arguments(arguments: dict) -> dict:
    """Saved arguments with the value of every secret one (`hub_token`, `api_key`) replaced by `<redacted>`."""
    return {k: REDACTED if is_secret_name(k) and isinstance(v, str) and v else v for k, v in arguments.items()}


def redact_record(value):
    """A JSON-like record with every secret text in it replaced by `<redacted>`."""
    if isinstance(value, dict):
        return {key: redact_record(item) for key, item in value.items()}
    if isinstance(value, list):
        return [redact_record(item) for item in value]
    if isinstance(value, str):
        return redact_text(value)
    return value


# ----------------------------------------------------------------------------------------------------------------------
# The scan before an upload
# ----------------------------------------------------------------------------------------------------------------------


def _shape_in(data: bytes) -> str | None:
    for kind, pattern in SHAPES.items():
        for match in pattern.finditer(data):
            start = match.start()
            if start == 0 or not _WORD_CHAR.match(data[start - 1 : start]):
                return kind
    return None


def _texts_of(path: Path):
    """What of a file could hold a secret, as bytes chunks.

    Parquet pages are compressed, so their string columns are read; of a safetensors file only the JSON header
    holds text (the rest is tensor data); every other file is read whole.
    """
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        for batch in pq.ParquetFile(path).iter_batches(batch_size=10_000):
            yield json.dumps(batch.to_pylist(), default=str, ensure_ascii=False).encode()
        return
    with path.open("rb") as f:
        if path.suffix == ".safetensors":
            size = int.from_bytes(f.read(8), "little")
            yield f.read(size)
            return
        tail = b""
        while chunk := f.read(CHUNK):
            yield tail + chunk
            tail = chunk[-OVERLAP:]


def secret_in_file(path: Path) -> str | None:
    """What kind of secret `path` holds ("a Hugging Face token (hf_...)"), or None."""
    for data in _texts_of(path):
        kind = _shape_in(data)
        if kind:
            return kind
    return None


def secret_problems(folder: Path, files: list[Path]) -> list[str]:
    """One line per file (relative to `folder`) that holds a string shaped like a token or key."""
    problems = []
    for rel in files:
        kind = secret_in_file(folder / rel)
        if kind:
            problems.append(f"{folder / rel}: contains a string shaped like {kind}; remove it before publishing")
    return problems
