"""`infembed push DIR --repo-id ORG/NAME [--private] [--dry-run]`: publish a trained InF-Embed folder on the Hub.

DIR is a folder of `infembed train` (full weights with the model code, or a LoRA adapter) or of `infembed export`
(a plain sentence-transformers folder). It is checked first (weights in safetensors, the files its kind needs,
tokenizer, card metadata, no file holding a string shaped like a token or key). Only the files such folders consist
of are sent (`ALLOW_PATTERNS`); what is left out (checkpoints, pickles, logs, anything else) is named. `--dry-run`
prints what would be uploaded and touches neither the Hub nor the folder. The token comes from `HF_TOKEN` or
`hf auth login`, and is never printed.
"""

import argparse
import json
import sys
from pathlib import Path

from huggingface_hub import ModelCard
from huggingface_hub.utils import HFValidationError, validate_repo_id

from infir_dataset.hub_files import files_left_out, files_uploaded, human_size
from infir_dataset.redact import secret_problems

from .model_card import LOSS_CURVE, TRAINING_RECORD

# What a tokenizer of any backbone family saves (fast and slow files, sentencepiece models, chat templates).
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.txt",
    "vocab.json",
    "merges.txt",
    "tokenizer.model",
    "spiece.model",
    "sentencepiece.bpe.model",
    "chat_template.jinja",
)
ADAPTER_WEIGHTS = ("adapter_config.json", "adapter_model.safetensors")
# The plain sentence-transformers description (`export.write_st_files`): of LoRA adapters and exported folders.
ST_FILES = (
    "modules.json",
    "sentence_bert_config.json",
    "config_sentence_transformers.json",
    "1_Pooling/config.json",
    "2_Normalize/config.json",
)
# The files an InF-Embed folder consists of, and nothing else: weights only as safetensors (never a pickle), the
# remote code, the tokenizer, the sentence-transformers description, the card with what it shows and its results,
# and the LoRA adapter (alone, or in `adapter/` beside merged weights).
ALLOW_PATTERNS = [
    "model.safetensors",
    "model-*-of-*.safetensors",
    "model.safetensors.index.json",
    "config.json",
    "configuration_infembed.py",
    "modeling_infembed.py",
    *TOKENIZER_FILES,
    *ST_FILES,
    "README.md",
    TRAINING_RECORD,
    LOSS_CURVE,
    ".eval_results/*.yaml",
    *ADAPTER_WEIGHTS,
    *(f"adapter/{name}" for name in (*ADAPTER_WEIGHTS, "README.md", *TOKENIZER_FILES, *ST_FILES)),
]
MODEL_FILES = (
    "config.json",
    "configuration_infembed.py",
    "modeling_infembed.py",
    "tokenizer_config.json",
    "modules.json",
    "sentence_bert_config.json",
    "config_sentence_transformers.json",
)
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors", "tokenizer_config.json")
EXPORT_FILES = (
    "config.json",
    "tokenizer_config.json",
    "modules.json",
    "sentence_bert_config.json",
    "1_Pooling/config.json",
)
CARD_FIELDS = ("license", "library_name", "pipeline_tag", "tags")


class PushError(Exception):
    """The folder is not ready to publish, or the upload failed."""


def files_to_upload(folder: Path) -> list[Path]:
    """Paths (relative to `folder`) that the upload sends."""
    return files_uploaded(folder, ALLOW_PATTERNS)


def folder_kind(folder: Path) -> str:
    """`adapter` (a LoRA adapter alone), `export` (a plain sentence-transformers folder of `infembed export`: a
    backbone's config.json beside modules.json) or `model` (an InF-Embed folder)."""
    if (folder / "adapter_config.json").is_file() and not (folder / "config.json").is_file():
        return "adapter"
    if (folder / "modules.json").is_file() and (folder / "config.json").is_file():
        config = json.loads((folder / "config.json").read_text())
        if config.get("model_type") != "infembed" and "auto_map" not in config:
            return "export"
    return "model"


def check_folder(folder: Path) -> list[str]:
    """Problems that would make the published repo unusable; an empty list when it is ready."""
    if not folder.is_dir():
        return [f"{folder}: no such folder"]
    names = {p.as_posix() for p in files_to_upload(folder)}
    problems = []
    kind = folder_kind(folder)
    required = {"adapter": ADAPTER_FILES, "export": EXPORT_FILES, "model": MODEL_FILES}[kind]
    problems += [f"{folder}: missing {name}" for name in required if name not in names]
    if kind != "adapter":
        if not any(n == "model.safetensors" or n == "model.safetensors.index.json" for n in names):
            problems.append(f"{folder}: no model.safetensors (weights must be safetensors)")
        if kind == "model" and "config.json" in names:
            config = json.loads((folder / "config.json").read_text())
            if config.get("model_type") != "infembed" or "AutoModel" not in config.get("auto_map", {}):
                problems.append(f"{folder}/config.json: not an InF-Embed config with auto_map (model_type, auto_map)")
    else:
        base = json.loads((folder / "adapter_config.json").read_text()).get("base_model_name_or_path", "")
        if not base or Path(base).is_absolute():
            problems.append(
                f"{folder}/adapter_config.json: base_model_name_or_path {base!r} is a local path, not a Hub id "
                "(train with --base-model-id)"
            )
    problems += _check_card(folder)
    problems += secret_problems(folder, files_to_upload(folder))
    return problems


def _check_card(folder: Path) -> list[str]:
    readme = folder / "README.md"
    if not readme.is_file():
        return [f"{folder}: missing README.md (the model card)"]
    try:
        data = ModelCard.load(readme).data.to_dict()
    except (ValueError, TypeError) as e:
        return [f"{readme}: unreadable card metadata: {e}"]
    problems = [f"{readme}: card metadata has no {field!r}" for field in CARD_FIELDS if not data.get(field)]
    if data.get("license") == "other" and not (data.get("license_name") and data.get("license_link")):
        problems.append(
            f"{readme}: card metadata says license: other without license_name and license_link "
            "(train with --license other --license-name NAME --license-link URL, or a --license the Hub knows)"
        )
    for field in ("base_model", "datasets"):
        values = data.get(field) or []
        for value in [values] if isinstance(values, str) else values:
            if Path(value).is_absolute() or value.count("/") != 1:
                problems.append(f"{readme}: card metadata {field} {value!r} is not a Hub id")
    return problems


def push(folder: str | Path, repo_id: str, private: bool = False, dry_run: bool = False) -> list[Path]:
    """Check `folder`, then create `repo_id` (if needed) and upload it; returns the uploaded paths."""
    folder = Path(folder)
    try:
        validate_repo_id(repo_id)
    except HFValidationError as e:
        raise PushError(f"--repo-id {repo_id!r}: {e}") from None
    if "/" not in repo_id:
        raise PushError(f"--repo-id {repo_id!r}: give ORG/NAME")
    problems = check_folder(folder)
    if problems:
        raise PushError("; ".join(problems))
    files = files_to_upload(folder)
    total = sum((folder / f).stat().st_size for f in files)
    visibility = "private" if private else "public"
    print(
        f"{'would upload' if dry_run else 'uploading'} {len(files)} files ({human_size(total)}) to {visibility} "
        f"https://huggingface.co/{repo_id}"
    )
    for f in files:
        print(f"  {human_size((folder / f).stat().st_size):>9}  {f.as_posix()}")
    left_out = files_left_out(folder, files)
    if left_out:
        print(f"left out (not part of an InF-Embed folder): {', '.join(left_out)}")
    if dry_run:
        return files

    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    from .model_card import write_model_card

    if (folder / TRAINING_RECORD).is_file():
        write_model_card(folder, repo_id=repo_id)  # usage snippets name the repo
    api = HfApi()
    try:
        api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        info = api.upload_folder(
            repo_id=repo_id,
            folder_path=folder,
            repo_type="model",
            allow_patterns=list(ALLOW_PATTERNS),  # upload_folder adds its own ignore patterns (.git, .cache)
            commit_message="Upload InF-Embed model",
        )
    except (HfHubHTTPError, OSError) as e:
        raise PushError(f"upload to {repo_id} failed: {e}") from None
    print(f"uploaded: {info.commit_url}")
    return files


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("push", help="upload a trained InF-Embed folder to the Hugging Face Hub")
    parser.add_argument("dir", metavar="DIR", help="folder written by `infembed train` or `infembed export`")
    parser.add_argument("--repo-id", required=True, metavar="ORG/NAME", help="Hub model repo (created if needed)")
    parser.add_argument("--private", action="store_true", help="create the repo as private")
    parser.add_argument("--dry-run", action="store_true", help="check and list the files, upload nothing")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace, extra: list[str]) -> int:
    if extra:
        print(f"infembed push: error: unrecognised arguments: {' '.join(extra)}", file=sys.stderr)
        return 2
    try:
        push(args.dir, args.repo_id, private=args.private, dry_run=args.dry_run)
    except PushError as e:
        print(f"infembed push: error: {e}", file=sys.stderr)
        return 1
    return 0
