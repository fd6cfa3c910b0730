"""`infembed train`: fine-tune InF-Embed on an InF-IR dataset repo with transformers' `Trainer`.

    infembed train --data DIR_OR_HUB_ID --backbone PATH_OR_HUB_ID --output DIR [options] [TrainingArguments flags]

One straight line: arguments -> the repo's default config (split `msmarco`) -> InF-Embed around the backbone (or an
InF-Embed folder, to continue training) -> optional LoRA (peft) -> `Trainer` -> a Hub-ready model folder in `--output`.
Every `TrainingArguments` flag works (`--max_steps`, `--learning_rate`, `--bf16`, `--deepspeed`, ...). Launched with
`accelerate launch` or `torchrun`, the in-batch negatives are gathered across processes (the model's loss does it).

Evaluation: `--eval-split`, `--eval-fraction`, or else the repo's `<split>_holdout` split when it has one; the eval
loss, in-batch top-1 accuracy and instruction-negative accuracy are logged every `--eval_steps` (default: every
`--logging_steps`).
"""

import argparse
import dataclasses
import importlib.util
import json
import os
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import HfArgumentParser, Trainer, TrainingArguments, set_seed

from infir_dataset.local_cache import cache_dir_for
from infir_dataset.redact import redact_arguments, redact_argv, redact_record

from . import is_infembed
from .configuration_infembed import COMBINES, LOSS_MODES, LOSS_TERMS, POOLINGS
from .export import write_adapter_folder
from .model_card import LOSS_CURVE, TRAINING_RECORD, dataset_license, write_model_card
from .modeling_infembed import RECORD_FIELDS, InfEmbedModel

# Linear layers LoRA adapts, per backbone family (LIBRARIES.md §6); the first family present in the backbone wins.
LORA_TARGET_FAMILIES = (
    ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"),  # Qwen2, Llama, Mistral
    ("Wqkv", "Wo", "Wi"),  # ModernBERT (fused)
    ("query", "key", "value", "dense"),  # BERT, RoBERTa, XLM-R, E5, MiniLM
)
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16, "auto": "auto"}
ADAPTER_SUBFOLDER = "adapter"


class TrainError(Exception):
    """Bad input to `infembed train`; the CLI prints it as one line."""


@dataclass
class InfEmbedTrainArguments:
    """Data, model and LoRA options of `infembed train` (TrainingArguments holds the rest)."""

    data: str = field(metadata={"help": "InF-IR dataset repo: a local folder (`infir build-repo`) or a Hub id"})
    backbone: str = field(
        metadata={"help": "backbone to wrap (Hub id or folder: BERT, ModernBERT, Qwen2, ...) or an InF-Embed folder"}
    )
    split: str = field(default="msmarco", metadata={"help": "training split of the default config"})
    eval_split: str | None = field(
        default=None, metadata={"help": "held-out split to evaluate on (default: `<split>_holdout` when present)"}
    )
    eval_fraction: float | None = field(
        default=None, metadata={"help": "hold out this fraction of the training split instead of an eval split"}
    )
    combine: str | None = field(default=None, metadata={"choices": list(COMBINES), "help": "instruction + query"})
    pooling: str | None = field(default=None, metadata={"choices": list(POOLINGS), "help": "default: by backbone"})
    loss: str | None = field(default=None, metadata={"help": f"comma-separated loss terms among {LOSS_TERMS} (P,I)"})
    loss_mode: str | None = field(default=None, metadata={"choices": list(LOSS_MODES), "help": "default: multi"})
    query_template: str | None = field(default=None, metadata={"help": "concat template with {instruction}, {query}"})
    similarity_scale: float | None = field(default=None, metadata={"help": "inverse temperature (default 20)"})
    query_max_length: int | None = field(default=None, metadata={"help": "tokens of instruction+query (256)"})
    passage_max_length: int | None = field(default=None, metadata={"help": "tokens of a passage (512)"})
    num_instruction_negatives: int | None = field(default=None, metadata={"help": "instructions sampled for l_I"})
    model_dtype: str = field(
        default="float32", metadata={"choices": list(DTYPES), "help": "weights dtype (use --bf16 for mixed precision)"}
    )
    attn_implementation: str | None = field(default=None, metadata={"help": "sdpa, eager, flash_attention_2, ..."})
    lora_r: int = field(default=0, metadata={"help": "LoRA rank; 0 trains every weight"})
    lora_alpha: int | None = field(default=None, metadata={"help": "LoRA alpha (default 2 x rank)"})
    lora_dropout: float = field(default=0.0, metadata={"help": "LoRA dropout"})
    lora_targets: str | None = field(
        default=None, metadata={"help": "comma-separated Linear module names (default: found from the backbone)"}
    )
    merge_lora: bool = field(
        default=False, metadata={"help": "write merged weights as the model (the adapter goes to `adapter/`)"}
    )
    base_model_id: str | None = field(
        default=None, metadata={"help": "Hub id of the backbone for the card and adapter (default: --backbone)"}
    )
    dataset_id: str | None = field(default=None, metadata={"help": "Hub id of the data for the card (default: --data)"})
    license: str | None = field(
        default=None, metadata={"help": "licence in the model card (default: the training data's, from its card)"}
    )
    license_name: str | None = field(default=None, metadata={"help": "with --license other: the licence's short name"})
    license_link: str | None = field(default=None, metadata={"help": "with --license other: where its terms are"})

    def __post_init__(self):
        if self.eval_split and self.eval_fraction is not None:
            raise TrainError("give --eval-split or --eval-fraction, not both")
        if self.eval_fraction is not None and not 0 < self.eval_fraction < 1:
            raise TrainError(f"--eval-fraction must be in (0, 1), got {self.eval_fraction}")
        if self.lora_r < 0:
            raise TrainError(f"--lora-r must be >= 0, got {self.lora_r}")
        if self.merge_lora and not self.lora_r:
            raise TrainError("--merge-lora needs --lora-r > 0")
        if (self.license_name or self.license_link) and not self.license:
            raise TrainError("--license-name and --license-link go with --license")
        if self.base_model_id is None and not Path(self.backbone).exists():
            self.base_model_id = self.backbone
        if self.dataset_id is None and not Path(self.data).exists():
            self.dataset_id = self.data

    def loss_terms(self) -> list[str] | None:
        if self.loss is None:
            return None
        terms = [term.strip() for term in self.loss.split(",") if term.strip()]
        if not terms or any(term not in LOSS_TERMS for term in terms):
            raise TrainError(f"--loss must be comma-separated terms among {LOSS_TERMS}, got {self.loss!r}")
        return terms

    def config_overrides(self) -> dict:
        """The InfEmbedConfig fields given on the command line."""
        values = {
            "combine": self.combine,
            "pooling": self.pooling,
            "loss_terms": self.loss_terms(),
            "loss_mode": self.loss_mode,
            "query_template": self.query_template,
            "similarity_scale": self.similarity_scale,
            "query_max_length": self.query_max_length,
            "passage_max_length": self.passage_max_length,
            "num_instruction_negatives": self.num_instruction_negatives,
        }
        return {key: value for key, value in values.items() if value is not None}


# ----------------------------------------------------------------------------------------------------------------------
# Arguments
# ----------------------------------------------------------------------------------------------------------------------


def _parser() -> HfArgumentParser:
    return HfArgumentParser((InfEmbedTrainArguments, TrainingArguments), prog="infembed train", description=__doc__)


def _normalise_argv(argv: list[str]) -> list[str]:
    """`--output` is `--output_dir` (argparse would find the prefix ambiguous with `--output-dir`)."""
    out = []
    for token in argv:
        if token == "--output":
            token = "--output_dir"
        elif token.startswith("--output="):
            token = "--output_dir=" + token.split("=", 1)[1]
        out.append(token)
    return out


def _given(argv: list[str], name: str) -> bool:
    """Whether the command line sets TrainingArguments' `name` (either spelling)."""
    spellings = {f"--{name}", f"--{name.replace('_', '-')}"}
    return any(token.split("=", 1)[0] in spellings for token in argv)


def _has_accelerator() -> bool:
    xpu = getattr(torch, "xpu", None)
    return torch.cuda.is_available() or torch.backends.mps.is_available() or bool(xpu and xpu.is_available())


def parse_arguments(argv: list[str], has_eval: bool = False) -> tuple[InfEmbedTrainArguments, TrainingArguments]:
    """Command line -> (our arguments, TrainingArguments), with this command's defaults where the user set none.

    With an eval set, evaluation runs every `--logging_steps` with batches of the training batch size, so the
    eval loss and the in-batch accuracy see as many negatives as training does.
    """
    argv = _normalise_argv(argv)
    parser = _parser()
    if not _given(argv, "output_dir") and not {"-h", "--help"} & set(argv):
        parser.error("--output DIR is required")
    defaults = {"remove_unused_columns": False, "label_names": ["passage_ids"], "save_safetensors": True}
    if has_eval:
        if not _given(argv, "eval_strategy"):
            defaults["eval_strategy"] = "steps"
        if not _given(argv, "per_device_eval_batch_size"):
            train_batch, _ = parser.parse_known_args(argv)
            defaults["per_device_eval_batch_size"] = train_batch.per_device_train_batch_size
    if _given(argv, "bf16") and not _given(argv, "use_cpu") and not _has_accelerator():
        defaults["use_cpu"] = True  # else transformers refuses --bf16 without a GPU, though CPUs with bf16 units gain
    parser.set_defaults(**{key: value for key, value in defaults.items() if key in _training_fields()})
    if _given(argv, "deepspeed") and importlib.util.find_spec("deepspeed") is None:
        raise TrainError("--deepspeed needs the deepspeed package (and GPUs), which this environment does not have")
    args, training = parser.parse_args_into_dataclasses(argv)
    # The raw text columns must reach the collator; `Trainer` would drop them otherwise.
    training.remove_unused_columns = False
    check_sharding(training)
    return args, training


def check_sharding(training: TrainingArguments) -> None:
    """`--fsdp` and `--deepspeed` only where `Trainer` runs them. On CPU processes accelerate (1.16) drops both and
    trains with plain DDP without a word, and FSDP needs more than one process; fail in one line instead."""
    for flag, wanted in (("--fsdp", training.fsdp), ("--deepspeed", training.deepspeed)):
        if wanted and training.device.type == "cpu":
            raise TrainError(
                f"{flag} cannot run on CPU: accelerate shards only on GPUs and other accelerators, and on CPU would "
                "silently train with plain DDP; drop it (CPU processes train with DDP over gloo) or train on GPUs"
            )
    if training.fsdp and training.world_size < 2:
        raise TrainError("--fsdp needs several processes: launch with torchrun --nproc_per_node N or accelerate launch")


def _training_fields() -> set[str]:
    return {f.name for f in dataclasses.fields(TrainingArguments)}


# ----------------------------------------------------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------------------------------------------------


def load_training_data(args: InfEmbedTrainArguments, seed: int = 42):
    """The training split (the seven InF-IR fields) and the eval rows, or None."""
    from datasets import get_dataset_split_names, load_dataset

    try:
        splits = get_dataset_split_names(args.data)
    except (OSError, ValueError) as e:
        raise TrainError(f"cannot read dataset {args.data!r}: {e}") from None
    for name in (args.split, args.eval_split):
        if name and name not in splits:
            raise TrainError(f"{args.data}: no split {name!r} in the default config (splits: {', '.join(splits)})")
    eval_split = args.eval_split
    if eval_split is None and args.eval_fraction is None and f"{args.split}_holdout" in splits:
        eval_split = f"{args.split}_holdout"

    cache_dir = cache_dir_for(args.data)
    train = _records(load_dataset(args.data, split=args.split, cache_dir=cache_dir), args.data, args.split)
    evaluation = None
    if eval_split:
        evaluation = _records(load_dataset(args.data, split=eval_split, cache_dir=cache_dir), args.data, eval_split)
    elif args.eval_fraction is not None:
        parts = train.train_test_split(test_size=args.eval_fraction, seed=seed)
        train, evaluation = parts["train"], parts["test"]
    return train, evaluation


def _records(dataset, data: str, split: str):
    missing = [name for name in RECORD_FIELDS if name not in dataset.column_names]
    if missing:
        raise TrainError(
            f"{data} split {split!r}: missing field(s) {', '.join(missing)} (an InF-IR repo has all seven)"
        )
    if len(dataset) == 0:
        raise TrainError(f"{data} split {split!r} has no rows")
    return dataset.select_columns(list(RECORD_FIELDS))


# ----------------------------------------------------------------------------------------------------------------------
# Model and LoRA
# ----------------------------------------------------------------------------------------------------------------------


def _is_infembed_backbone(name_or_path: str) -> bool:
    try:
        return is_infembed(name_or_path)
    except (OSError, ValueError) as e:
        raise TrainError(f"cannot read backbone {name_or_path!r}: {e}") from None


def build_model(args: InfEmbedTrainArguments) -> InfEmbedModel:
    """InF-Embed around the backbone, or an existing InF-Embed model to continue training, with the overrides."""
    kwargs = {"dtype": DTYPES[args.model_dtype], "attn_implementation": args.attn_implementation}
    overrides = args.config_overrides()
    try:
        if _is_infembed_backbone(args.backbone):
            model = InfEmbedModel.from_pretrained(args.backbone, **kwargs, **overrides)
        else:
            model = InfEmbedModel.from_backbone(args.backbone, **kwargs, **overrides)
    except ValueError as e:  # a bad override (e.g. a template without {query})
        raise TrainError(str(e)) from None
    return model


def find_lora_targets(model: InfEmbedModel) -> list[str]:
    """Names of the backbone's Linear layers to adapt: a known family (attention + MLP), else every Linear."""
    names = {name.rsplit(".", 1)[-1] for name, module in model.encoder.named_modules() if _is_linear(module)}
    for family in LORA_TARGET_FAMILIES:
        present = [name for name in family if name in names]
        if present:
            return present
    return sorted(names)


def _is_linear(module: torch.nn.Module) -> bool:
    return isinstance(module, torch.nn.Linear)


def apply_lora(model: InfEmbedModel, args: InfEmbedTrainArguments, gradient_checkpointing: bool = False):
    """peft's own LoRA on the backbone (no task_type: the generic PeftModel keeps our forward's arguments)."""
    from peft import LoraConfig, get_peft_model

    targets = [t.strip() for t in args.lora_targets.split(",")] if args.lora_targets else find_lora_targets(model)
    present = {name.rsplit(".", 1)[-1] for name, _ in model.encoder.named_modules()}
    unknown = [t for t in targets if t not in present]
    if unknown:
        raise TrainError(f"--lora-targets: no module named {', '.join(unknown)} in the backbone")
    if gradient_checkpointing:
        model.enable_input_require_grads()  # checkpointed blocks need an input that requires grad
    # BERT's pooler is never used by InF-Embed's pooling; adapting it would only add unused parameters.
    has_pooler = any(".pooler." in f".{name}." for name, _ in model.named_modules())
    config = LoraConfig(
        r=args.lora_r,
        lora_alpha=args.lora_alpha or 2 * args.lora_r,
        lora_dropout=args.lora_dropout,
        target_modules=targets,
        exclude_modules=r".*\.pooler\..*" if has_pooler else None,
    )
    return get_peft_model(model, config)


# ----------------------------------------------------------------------------------------------------------------------
# Training
# ----------------------------------------------------------------------------------------------------------------------


def train(
    args: InfEmbedTrainArguments,
    training: TrainingArguments,
    train_rows,
    eval_rows=None,
    command: list[str] | None = None,
) -> Path:
    """Train and write the Hub-ready model folder to `training.output_dir`; returns that folder.

    `command` (the command-line arguments) is recorded in `training_args.json` and the card.
    """
    from .training_eval import group_triples_by_row, make_compute_metrics

    set_seed(training.seed)  # LoRA's initialisation too
    with training.main_process_first():
        model = build_model(args)
    tokenizer = model.tokenizer
    collator = model.data_collator()
    trained = apply_lora(model, args, training.gradient_checkpointing) if args.lora_r else model
    if args.lora_r and training.should_log:
        trained.print_trainable_parameters()

    trainer = Trainer(
        model=trained,
        args=training,
        train_dataset=train_rows,
        eval_dataset=eval_rows,
        data_collator=collator,
        processing_class=tokenizer,
        compute_metrics=make_compute_metrics(training) if eval_rows is not None else None,
        preprocess_logits_for_metrics=group_triples_by_row if eval_rows is not None else None,
    )
    for flag, wanted, enabled in (
        ("--fsdp", training.fsdp, trainer.is_fsdp_enabled),
        ("--deepspeed", training.deepspeed, trainer.is_deepspeed_enabled),
    ):
        if wanted and not enabled:  # never a silent fallback to plain data parallelism
            raise TrainError(f"{flag} was given but accelerate did not enable it on this setup ({training.device})")
    result = trainer.train(resume_from_checkpoint=_resume_arg(training.resume_from_checkpoint))
    out = Path(training.output_dir)
    save_model_folder(trainer, args)
    if trainer.is_world_process_zero():
        write_run_record(out, args, training, trainer, model, result, len(train_rows), eval_rows, command)
    trainer.accelerator.wait_for_everyone()
    return out


def _resume_arg(value: str | None) -> str | bool | None:
    """`--resume_from_checkpoint last` (or true) resumes from the newest checkpoint in the output folder."""
    if value is None:
        return None
    return True if value.lower() in ("last", "true") else value


def save_model_folder(trainer: Trainer, args: InfEmbedTrainArguments) -> None:
    """The model folder: full weights, or the LoRA adapter; with --merge-lora merged weights + `adapter/`.

    The adapter is keyed by the backbone's own module names and names the backbone (its Hub id when known) as its
    base, so every loader that starts from that base applies it (see `export.write_adapter_folder`).
    """
    out = Path(trainer.args.output_dir)
    if not args.lora_r:
        trainer.save_model(str(out))  # also gathers DeepSpeed / FSDP shards
        _remove_pickles(out)
        return
    adapter_dir = out / ADAPTER_SUBFOLDER if args.merge_lora else out
    trainer.save_model(str(adapter_dir))
    if trainer.is_world_process_zero():
        _remove_pickles(adapter_dir)
        model = trainer.model.get_base_model()
        base = args.base_model_id or str(Path(args.backbone).resolve())
        write_adapter_folder(
            adapter_dir,
            base,
            model.config,
            backbone_has_pooler=hasattr(model.encoder, "pooler"),
            base_is_infembed=_is_infembed_backbone(args.backbone),
        )
    if args.merge_lora:
        merged = trainer.model.merge_and_unload()
        if trainer.is_world_process_zero():
            merged.save_pretrained(out)


def _remove_pickles(folder: Path) -> None:
    """`Trainer.save_model` pickles its arguments; the folder ships `training_args.json` instead."""
    (folder / "training_args.bin").unlink(missing_ok=True)


def model_license(args: InfEmbedTrainArguments) -> tuple[dict[str, str] | None, str | None]:
    """The model card's licence and where it comes from: `--license` when given, else the training data's, since
    weights learnt from data under non-commercial terms (MS MARCO's) are not for any use by default."""
    if args.license:
        given = {"license": args.license, "license_name": args.license_name, "license_link": args.license_link}
        return {key: value for key, value in given.items() if value}, "argument"
    found = dataset_license(args.data)
    if found is None:
        print(
            f"infembed train: warning: the card of {args.data} names no licence, so the model card has none "
            "(give --license)",
            file=sys.stderr,
        )
        return None, None
    return found, "data"


def write_run_record(
    out: Path, args, training, trainer, model, result, train_size: int, eval_rows, command: list[str] | None
) -> None:
    """`training_args.json`, the loss curve and the model card; secrets given as arguments are redacted."""
    from .training_eval import plot_loss_curve

    model_config = {
        k: v for k, v in model.config.to_dict().items() if k not in ("encoder_config", "transformers_version")
    }
    licence, licence_from = model_license(args)
    record = {
        "infembed_arguments": redact_arguments(dataclasses.asdict(args)),
        "training_arguments": redact_arguments(json.loads(training.to_json_string())),
        "model_config": model_config,
        "backbone_model_type": model.config.encoder_config.model_type,
        "backbone_is_infembed": _is_infembed_backbone(args.backbone),
        "model_name": out.name,
        "command": shlex.join(["infembed", "train", *redact_argv(command)]) if command is not None else None,
        "license": licence,
        "license_from": licence_from,
        "world_size": training.world_size,
        "train_rows": train_size,
        "eval_rows": len(eval_rows) if eval_rows is not None else 0,
        "global_step": result.global_step,
        "train_loss": result.training_loss,
        "log_history": trainer.state.log_history,
    }
    (out / TRAINING_RECORD).write_text(json.dumps(redact_record(record), indent=2) + "\n")
    plot_loss_curve(trainer.state.log_history, out / LOSS_CURVE)
    write_model_card(out)


# ----------------------------------------------------------------------------------------------------------------------
# CLI
# ----------------------------------------------------------------------------------------------------------------------


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    # Every option goes to HfArgumentParser in `run` (also --help), so this parser declares none.
    parser = subparsers.add_parser(
        "train", help="fine-tune InF-Embed on an InF-IR repo (all TrainingArguments flags work)", add_help=False
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace, extra: list[str]) -> int:
    try:
        ours, training = parse_arguments(extra)
        train_rows, eval_rows = load_training_data(ours, training.seed)
        if eval_rows is not None:
            ours, training = parse_arguments(extra, has_eval=True)
        out = train(ours, training, train_rows, eval_rows, command=extra)
    except TrainError as e:
        print(f"infembed train: error: {e}", file=sys.stderr)
        return 1
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"infembed train: model written to {out}")
    return 0
