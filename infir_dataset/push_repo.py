"""`infir push-repo`: upload a dataset repo folder from `infir build-repo` to the Hub with huggingface_hub.

Only the files of the repo format are sent (README.md and the Parquet shards of each config); `rejects.jsonl` and
anything else in the folder stay local and are named. A file holding a string shaped like a token or key stops the
upload. The uploaded card's usage snippets load the target repo id. Old shards on the Hub
that the new build no longer has are deleted in the same commit, so the README's `data/<split>-*` globs never pick up
stale files. The token comes from huggingface_hub's usual places (`HF_TOKEN`, `hf auth login`) and is never printed.
"""

import argparse
import fnmatch
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path

from .build_repo import CONFIG_FOLDERS
from .hub_files import files_left_out, files_uploaded, human_size
from .redact import secret_problems
from .validate import SPLIT_NAME

# The shards of every config, as `infir build-repo` writes them. Old shards on the Hub go in the same commit.
SHARD_PATTERNS = [f"{folder}/*.parquet" for folder in CONFIG_FOLDERS.values()]
ALLOW_PATTERNS = ["README.md", *SHARD_PATTERNS]
DELETE_PATTERNS = list(SHARD_PATTERNS)
REQUIRED_METADATA = ("license", "language", "task_categories", "configs")


class CardError(Exception):
    """The folder's README.md metadata would not give a loadable dataset repo, or a file holds a secret."""


def upload_files(folder: Path) -> list[Path]:
    """The files (relative paths) that the upload sends."""
    return files_uploaded(folder, ALLOW_PATTERNS)


def check_secrets(folder: Path) -> None:
    problems = secret_problems(folder, upload_files(folder))
    if problems:
        raise CardError("; ".join(problems))


def card_for(readme: str, repo_id: str) -> str:
    """The card with its usage snippets loading `repo_id`: the folder was built with `--repo-id` of its own
    (by default InF-IR/InF-IR), and the snippets must name the repo they are published in."""
    return re.sub(r'load_dataset\("[^"]*"', lambda _: f'load_dataset("{repo_id}"', readme)


def check_card(folder: Path) -> dict:
    """Parse README.md offline and check that its metadata and `configs` match the files; returns the metadata."""
    from datasets.utils.metadata import MetadataConfigs
    from huggingface_hub import DatasetCard

    readme = folder / "README.md"
    if not readme.is_file():
        raise CardError(f"{readme}: missing (run `infir build-repo` first)")
    try:
        card = DatasetCard.load(readme)
        metadata = card.data.to_dict()
        configs = MetadataConfigs.from_dataset_card_data(card.data)
    except Exception as e:  # YAML errors and metadata errors come as several types
        raise CardError(f"{readme}: unreadable card metadata: {e}") from None
    missing = [key for key in REQUIRED_METADATA if not metadata.get(key)]
    if missing:
        raise CardError(f"{readme}: metadata lacks {', '.join(missing)}")
    if "text-retrieval" not in metadata["task_categories"]:
        raise CardError(f"{readme}: task_categories should include text-retrieval")
    if metadata["license"] == "other" and not (metadata.get("license_name") and metadata.get("license_link")):
        raise CardError(
            f"{readme}: license: other needs license_name and license_link (rebuild with `infir build-repo "
            "--license-name NAME --license-link URL`, or a --license the Hub knows)"
        )
    uploaded = [p.as_posix() for p in upload_files(folder)]
    for name, config in configs.items():
        for entry in config.get("data_files", []):
            if not SPLIT_NAME.match(entry["split"]):
                raise CardError(f"{readme}: config {name}: split name {entry['split']!r} is not valid")
            patterns = entry["path"] if isinstance(entry["path"], list) else [entry["path"]]
            for pattern in patterns:
                if not fnmatch.filter(uploaded, pattern):
                    raise CardError(f"{readme}: config {name}, split {entry['split']}: no file matches {pattern}")
    return metadata


def push_repo(folder: str | Path, repo_id: str, *, private: bool = False, commit_message: str | None = None) -> str:
    """Create the dataset repo if needed and upload `folder` (without rejects.jsonl); returns the commit URL."""
    from huggingface_hub import HfApi

    folder = Path(folder)
    api = HfApi()
    api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
    # The upload is staged next to the folder (same file system: hard links, no copies) with the card rewritten
    # for `repo_id`, so that the built folder itself is never changed.
    with tempfile.TemporaryDirectory(prefix=f".{folder.name}-push-", dir=folder.parent) as staging:
        for rel in upload_files(folder):
            target = Path(staging) / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            if rel.as_posix() == "README.md":
                target.write_text(card_for((folder / rel).read_text(encoding="utf-8"), repo_id), encoding="utf-8")
                continue
            try:
                os.link(folder / rel, target)
            except OSError:  # a file system without hard links
                shutil.copy2(folder / rel, target)
        info = api.upload_folder(
            repo_id=repo_id,
            repo_type="dataset",
            folder_path=staging,
            commit_message=commit_message or "Upload InF-IR dataset built with `infir build-repo`",
            allow_patterns=list(ALLOW_PATTERNS),  # upload_folder adds its own ignore patterns (.git, .cache)
            delete_patterns=DELETE_PATTERNS,
        )
    return str(getattr(info, "commit_url", info))


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "push-repo",
        help="upload a dataset repo folder to the Hugging Face Hub",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("dir", metavar="DIR", help="folder written by `infir build-repo`")
    parser.add_argument("--repo-id", required=True, metavar="ORG/NAME", help="the Hub dataset repo to create or update")
    parser.add_argument("--private", action="store_true", help="create the repo as private")
    parser.add_argument("--commit-message", default=None, help="commit message on the Hub")
    parser.add_argument("--dry-run", action="store_true", help="list the files and check the card; no network")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    folder = Path(args.dir)
    try:
        if args.repo_id.count("/") != 1:
            raise HFValidationError("expected ORG/NAME")
        validate_repo_id(args.repo_id)
    except HFValidationError as e:
        print(f"infir: error: --repo-id {args.repo_id!r}: {e}", file=sys.stderr)
        return 1
    if not folder.is_dir():
        print(f"infir: error: {folder}: no such folder", file=sys.stderr)
        return 1
    try:
        metadata = check_card(folder)
        check_secrets(folder)
    except CardError as e:
        print(f"infir: error: {e}", file=sys.stderr)
        return 1
    files = upload_files(folder)
    left_out = files_left_out(folder, files)
    if args.dry_run:
        total = 0
        for rel in files:
            size = (folder / rel).stat().st_size
            total += size
            print(f"{human_size(size):>10}  {rel.as_posix()}")
        configs = ", ".join(c["config_name"] for c in metadata["configs"])
        visibility = "private" if args.private else "public"
        print(f"{human_size(total):>10}  total, {len(files)} files")
        if left_out:
            print(f"not uploaded (not part of the dataset repo format): {', '.join(left_out)}")
        print(f"card metadata OK: license {metadata['license']}, configs {configs}")
        print(f"dry run: would upload to https://huggingface.co/datasets/{args.repo_id} ({visibility})")
        return 0
    try:
        url = push_repo(folder, args.repo_id, private=args.private, commit_message=args.commit_message)
    except Exception as e:  # network, auth and Hub errors: one line, no traceback
        print(f"infir: error: upload to {args.repo_id} failed: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    print(f"uploaded {len(files)} files to https://huggingface.co/datasets/{args.repo_id} ({url})")
    if left_out:
        print(f"not uploaded (not part of the dataset repo format): {', '.join(left_out)}")
    return 0
