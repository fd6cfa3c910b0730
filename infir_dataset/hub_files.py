"""What `HfApi.upload_folder` sends from a folder, and file sizes for people: shared by `infir push-repo` and
`infembed push`, so that a dry run lists exactly what an upload sends."""

from pathlib import Path

from huggingface_hub.utils import DEFAULT_IGNORE_PATTERNS, filter_repo_objects


def files_uploaded(folder: Path, ignore_patterns: list[str]) -> list[Path]:
    """Paths relative to `folder` that `upload_folder(..., ignore_patterns=ignore_patterns)` sends.

    Its own filter, with the patterns it adds itself (`.git`, `.cache/huggingface`).
    """
    every = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    return [Path(p) for p in filter_repo_objects(every, ignore_patterns=[*ignore_patterns, *DEFAULT_IGNORE_PATTERNS])]


def human_size(n: float) -> str:
    """`532 B`, `1.4 KB`, `12.0 MB`, `3.2 GB`."""
    if n < 1024:
        return f"{n:.0f} B"
    for unit in ("KB", "MB"):
        n /= 1024
        if n < 1024:
            return f"{n:.1f} {unit}"
    return f"{n / 1024:.1f} GB"
