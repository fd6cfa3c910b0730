"""A `datasets` cache folder per state of a local dataset folder's files.

datasets 5 keys its cache of a local folder (`load_dataset(DIR)`) on the folder's card (configs and `dataset_info`),
not on its files: a repo rebuilt in place whose splits keep their row counts and Arrow sizes (a corrected word, a
changed letter) is read from the cache of the old one, and training or evaluation silently sees stale rows. Every
loader of this project passes `cache_dir=cache_dir_for(DIR)`: a cache folder keyed by the files' paths, sizes and
modification times, so a rebuilt folder is read afresh and an unchanged one from its cache.
"""

import hashlib
import os
from pathlib import Path


def cache_dir_for(path: str | os.PathLike) -> str | None:
    """The cache folder for the current files of the local folder `path`; None for anything else (a Hub id, which
    datasets keys on its commit)."""
    import datasets

    folder = Path(path)
    if not folder.is_dir():
        return None
    digest = hashlib.sha256()
    for file in sorted(folder.rglob("*")):
        if file.is_file():
            stat = file.stat()
            digest.update(f"{file.relative_to(folder)}\x1f{stat.st_size}\x1f{stat.st_mtime_ns}\n".encode())
    return str(Path(datasets.config.HF_DATASETS_CACHE) / "infir_local" / digest.hexdigest()[:16])
