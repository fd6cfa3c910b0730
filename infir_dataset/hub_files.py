"""What `HfApi.upload_folder` sends from a folder, what it leaves out, and file sizes for people: shared by
`infir push-repo` and `infembed push`, so that a dry run lists exactly what an upload sends."""

from pathlib import Path

from huggingface_hub.utils import DEFAULT_IGNORE_PATTERNS, filter_repo_objects


def _every_file(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def files_uploaded(folder: Path, allow_patterns: list[str]) -> list[Path]:
    """Paths relative to `folder` that `upload_folder(..., allow_patterns=allow_patterns)` sends.

    Its own filter, with the patterns it ignores itself (`.git`, `.cache/huggingface`).
    """
    kept = filter_repo_objects(
        _every_file(folder), allow_patterns=allow_patterns, ignore_patterns=list(DEFAULT_IGNORE_PATTERNS)
    )
    return [Path(p) for p in kept]


def files_left_out(folder: Path, uploaded: list[Path]) -> list[str]:
    """The folder's other files, for people: a top-level folder none of whose files is sent is one entry
    (`.git/ (57 files)`), so that a clone's history or a checkpoint does not flood the listing."""
    sent = {p.as_posix() for p in uploaded}
    others = [p for p in _every_file(folder) if p not in sent]
    sent_tops = {p.split("/", 1)[0] for p in sent if "/" in p}
    entries: dict[str, int] = {}
    for path in others:
        top, _, rest = path.partition("/")
        key = f"{top}/" if rest and top not in sent_tops else path
        entries[key] = entries.get(key, 0) + 1
    return [f"{key} ({n} file{'s' if n != 1 else ''})" if key.endswith("/") else key for key, n in entries.items()]


def human_size(n: float) -> str:
    """`532 B`, `1.4 KB`, `12.0 MB`, `3.2 GB`."""
    if n < 1024:
        return f"{n:.0f} B"
    for unit in ("KB", "MB"):
        n /= 1024
        if n < 1024:
            return f"{n:.1f} {unit}"
    return f"{n / 1024:.1f} GB"
