"""`infembed eval`: retrieval metrics of any model, with and without instructions, on local folders or mteb tasks.

    infembed eval --model M [M ...] --data DIR_OR_TASK [...] --output DIR [--no-instructions] [--batch-size N]
                  [--dtype {float32,float16,bfloat16}] [--device DEVICE]
    infembed eval --compare DIR1 DIR2 ... --output DIR
    infembed eval --model MODEL_DIR --data ... --output DIR --update-card

M is an InF-Embed folder or Hub id, any sentence-transformers model, or `bm25` (instruction handling: retrievers.py).
--data takes evaluation folders (eval_data.py), mteb task names (run through `mteb.evaluate`, needs the Hub), or
`TASK=DIR` to run an mteb task on a local snapshot of its Hub repo. Each model is run with instructions and again
without them (queries alone; passages come from the cache), unless --no-instructions asks for the second run only.
--device places the model (default cuda when there is one, else cpu); --dtype bfloat16/float16 loads its weights
in that precision (vectors cached apart from float32 ones). Lower precision is faster only where
the hardware has it: GPUs, and CPUs with AVX512-BF16/AMX; on an AVX2-only CPU bfloat16 is many times slower.

Output: DIR/<model>/metrics.json and metrics_no_instructions.json (`{dataset: {metric: value}}`, mteb's names),
DIR/<model>/runs/<dataset>[.no_instructions].trec (TREC run files), DIR/metrics.json (`{model: {dataset: ...}}`,
the no-instruction runs as "<model> (no instructions)"), DIR/report.md, DIR/ndcg_at_10.png and DIR/p-MRR.png.
With --update-card, the scores with instructions also go into the card (README.md `model-index`) of each model that
is a folder written by `infembed train`, with the dataset's Hub id, config and split for mteb tasks.
"""

import argparse
import hashlib
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from .eval_data import EvalDataError, EvalDataset, load_eval_dataset
from .metrics import Run, evaluate_run, ranked
from .model_card import eval_results_for, has_training_record, update_model_card
from .retrievers import (
    DEFAULT_TOP_K,
    DTYPES,
    Bm25Retriever,
    DenseRetriever,
    default_cache_dir,
    from_infembed,
    from_sentence_transformer,
    load_retriever,
)

# The metrics a model card shows and its model-index holds; metrics.json keeps them all.
CARD_METRICS = ("ndcg_at_10", "p-MRR", "map_at_1000", "recall_at_100", "mrr_at_10", "robustness_at_10")


@dataclass
class MtebTask:
    """An mteb task by name, optionally read from a local snapshot of its Hub dataset repo."""

    name: str
    local_path: str | None = None


def parse_data(spec: str) -> EvalDataset | MtebTask:
    """A folder -> its EvalDataset; `TASK=DIR` or a task name -> MtebTask (checked against mteb's task list)."""
    if Path(spec).is_dir():
        return load_eval_dataset(spec)
    name, _, local = spec.partition("=")
    import mteb

    try:
        mteb.get_task(name)
    except KeyError:
        raise EvalDataError(f"{spec!r} is neither an evaluation folder nor an mteb task name") from None
    if local and not Path(local).is_dir():
        raise EvalDataError(f"{spec!r}: no such folder {local!r}")
    return MtebTask(name, local or None)


def _parameters_digest(model) -> str:
    """Hash of an in-memory model's weights: cached passage vectors must not outlive a training step."""
    import torch

    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy())
    return digest.hexdigest()


def _tokenizer_settings(tokenizer) -> dict | None:
    """What of a tokenizer changes the vectors besides its vocabulary file."""
    if tokenizer is None:
        return None
    keys = ("name_or_path", "padding_side", "truncation_side", "model_max_length", "pad_token")
    return {"class": type(tokenizer).__name__, "size": len(tokenizer), **{k: getattr(tokenizer, k, None) for k in keys}}


def as_retriever(
    model, batch_size: int = 32, cache_dir: Path | None = None, *, dtype: str = "float32", device: str | None = None
):
    """A retriever from a model spec string, a loaded InF-Embed model or SentenceTransformer, or a retriever.

    `device` places a model loaded here; a loaded model stays where it is. `dtype`: a model loaded here gets its
    weights in it, a loaded one keeps its weights and runs under `torch.autocast`."""
    if isinstance(model, DenseRetriever | Bm25Retriever):
        return model
    if isinstance(model, str):
        return load_retriever(model, batch_size, cache_dir, dtype=dtype, device=device)
    name = Path(str(getattr(model, "name_or_path", "") or type(model).__name__)).name or type(model).__name__
    # same weights under another pooling, normalisation, template or max length give other vectors
    config = getattr(model, "config", None)
    identity = {
        "class": type(model).__name__,
        "weights": _parameters_digest(model),
        "config": config.to_dict() if hasattr(config, "to_dict") else None,
        "tokenizer": _tokenizer_settings(getattr(model, "tokenizer", None)),
    }
    if hasattr(model, "encode_passages"):
        identity = json.dumps(identity, sort_keys=True, default=str)
        return from_infembed(model, name, identity, batch_size, cache_dir, dtype)
    from sentence_transformers import SentenceTransformer

    if isinstance(model, SentenceTransformer):
        identity["st"] = {
            "prompts": model.prompts,
            "default_prompt_name": model.default_prompt_name,
            "max_seq_length": model.max_seq_length,
            "similarity": str(model.similarity_fn_name),
            "modules": [[type(m).__name__, getattr(m, "get_config_dict", dict)()] for m in model],
        }
        identity = json.dumps(identity, sort_keys=True, default=str)
        return from_sentence_transformer(model, name, identity, batch_size, cache_dir, dtype)
    raise TypeError(f"cannot evaluate a {type(model).__name__}: give a model path, Hub id, 'bm25' or a loaded model")


def write_trec_run(run: Run, path: Path, tag: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        for qid, docs in run.items():
            for rank, doc in enumerate(ranked(docs), start=1):
                f.write(f"{qid} Q0 {doc} {rank} {docs[doc]:.6f} {tag}\n")


def slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "__", name).strip("_") or "model"


def evaluate(
    model,
    datasets: list,
    output_dir: str | Path | None = None,
    instructions: bool = True,
    *,
    batch_size: int = 32,
    cache_dir: str | Path | None = None,
    top_k: int = DEFAULT_TOP_K,
    dtype: str = "float32",
    device: str | None = None,
) -> dict[str, dict[str, float]]:
    """Evaluate one model on datasets (folders, EvalDatasets, mteb task names or MtebTasks) -> {dataset: {metric}}.

    With output_dir, writes metrics.json (or metrics_no_instructions.json when instructions=False), model.json and
    TREC run files under runs/. Passage vectors are cached in cache_dir (default: $INFEMBED_CACHE or
    $HF_HOME/infembed), so the second call on the same model and corpus encodes only queries. `dtype` and `device`
    apply to a model given by name or loaded (see `as_retriever`), not to a retriever, which has its own.
    """
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    retriever = as_retriever(model, batch_size, cache, dtype=dtype, device=device)
    if isinstance(retriever, DenseRetriever) and retriever.cache_dir is None:
        retriever.cache_dir = cache
    out = Path(output_dir) if output_dir else None
    suffix = "" if instructions else ".no_instructions"
    results = {}
    for spec in datasets:
        data = spec if isinstance(spec, EvalDataset | MtebTask) else parse_data(str(spec))
        if isinstance(data, MtebTask):
            from .mteb_adapter import get_task, run_task

            if isinstance(retriever, Bm25Retriever) and not instructions:
                print(f"skipped: bm25 on mteb task {data.name} has no run without instructions", file=sys.stderr)
                continue
            task = get_task(data.name, data.local_path)
            predictions = out / "runs" / f"mteb{suffix}" if out else None
            results[data.name] = run_task(retriever, task, instructions, predictions, data.local_path)
            continue
        run = retriever.search(data, instructions, top_k)
        results[data.name] = evaluate_run(data.qrels, run, data.qrel_diff)
        if out:
            write_trec_run(run, out / "runs" / f"{slug(data.name)}{suffix}.trec", slug(retriever.name))
    if out:
        out.mkdir(parents=True, exist_ok=True)
        info = {"name": retriever.name, "instruction_format": retriever.instruction_format}
        (out / "model.json").write_text(json.dumps(info, indent=2) + "\n")
        name = "metrics.json" if instructions else "metrics_no_instructions.json"
        (out / name).write_text(json.dumps(results, indent=2) + "\n")
    return results


def card_results(results: dict[str, dict[str, float]], datasets: list[EvalDataset | MtebTask]) -> list:
    """`EvalResult`s for a model card: the card's metrics of each dataset, with the Hub id, config, split and
    revision of mteb tasks (a local folder is known by its name only)."""
    from .mteb_adapter import task_source

    entries = []
    for data in datasets:
        if data.name not in results:
            continue
        metrics = {k: results[data.name][k] for k in CARD_METRICS if k in results[data.name]}
        source = task_source(data.name) if isinstance(data, MtebTask) else {}
        entries += eval_results_for(data.name, metrics, **source)
    return entries


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "eval",
        help="nDCG, MAP, Recall, MRR, p-MRR of models on evaluation folders or mteb tasks",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--model", nargs="+", help="InF-Embed folder/Hub id, sentence-transformers model, or bm25")
    p.add_argument("--data", nargs="+", help="evaluation folder, mteb task name, or TASK=LOCAL_SNAPSHOT_DIR")
    p.add_argument("--output", required=True, help="output folder")
    p.add_argument("--no-instructions", action="store_true", help="only run with every instruction dropped")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument(
        "--dtype",
        choices=DTYPES,
        default="float32",
        help="precision of dense models' weights (bfloat16/float16 are faster on GPUs and AVX512-BF16/AMX CPUs)",
    )
    p.add_argument("--device", help="device of the dense models: cpu, cuda, cuda:1, mps, ... (default cuda if present)")
    p.add_argument("--top-k", type=int, default=DEFAULT_TOP_K, help="documents kept per query in full-corpus search")
    p.add_argument("--cache-dir", help="passage vector cache (default $INFEMBED_CACHE or $HF_HOME/infembed)")
    p.add_argument("--compare", nargs="+", metavar="DIR", help="write a side-by-side report of earlier eval outputs")
    p.add_argument(
        "--update-card",
        action="store_true",
        help="write the scores with instructions into the card (model-index) of each model folder from infembed train",
    )
    p.set_defaults(func=run)


def _update_card_problem(args: argparse.Namespace, cards: list[str]) -> str | None:
    """Why --update-card cannot do what it says, checked before any model runs."""
    if args.no_instructions:
        return "--update-card writes the scores with instructions; drop --no-instructions"
    if not cards:
        return "--update-card: no --model is a folder written by `infembed train` (with training_args.json)"
    for spec in args.model:
        if spec not in cards:
            print(f"--update-card: {spec} has no card of ours (not a folder written by `infembed train`); skipped")
    return None


def device_problem(device: str) -> str | None:
    """Why torch cannot run on `device` here (an unknown name, or a device this machine or build lacks)."""
    import torch

    try:
        parsed = torch.device(device)
    except RuntimeError as e:
        return f"--device {device}: {' '.join(str(e).split())}"
    if parsed.type == "cpu":
        return None
    module = getattr(torch, parsed.type, None)
    if not (module is not None and hasattr(module, "is_available") and module.is_available()):
        return f"--device {device}: this machine (or this torch build) has no {parsed.type} device"
    count = module.device_count() if hasattr(module, "device_count") else None
    if parsed.index is not None and count is not None and parsed.index >= count:
        return f"--device {device}: this machine has {count} {parsed.type} device(s), numbered from 0"
    return None


def _fail(message: str) -> int:
    print(f"infembed eval: error: {message}", file=sys.stderr)
    return 2


def run(args: argparse.Namespace, extra: list[str]) -> int:
    from .report import find_model_folders, write_report

    if extra:
        return _fail(f"unrecognized arguments: {' '.join(extra)}")
    if args.compare:
        folders = find_model_folders(args.compare)
        if not folders:
            return _fail(f"no evaluation output (model.json) found in {args.compare}")
        print(f"report: {write_report(args.output, folders)}")
        return 0
    if not args.model or not args.data:
        return _fail("--model and --data are required (or --compare DIR ...)")
    cards = [spec for spec in args.model if has_training_record(spec)] if args.update_card else []
    if args.update_card and (problem := _update_card_problem(args, cards)):
        return _fail(problem)
    try:  # every dataset is checked before any model is loaded
        datasets = [parse_data(d) for d in args.data]
    except EvalDataError as e:
        return _fail(str(e))
    if args.device and (problem := device_problem(args.device)):
        return _fail(problem)
    output = Path(args.output)
    folders, used = [], set()
    for spec in args.model:  # a mistyped folder is caught before any model runs
        if spec.startswith(("/", ".", "~")) and not Path(spec).expanduser().exists():
            return _fail(f"cannot load model {spec!r}: no such folder")
    for spec in args.model:
        try:  # a mistyped path or Hub id: transformers / sentence-transformers raise OSError or ValueError
            cache = Path(args.cache_dir) if args.cache_dir else None
            retriever = load_retriever(spec, args.batch_size, cache, dtype=args.dtype, device=args.device)
        except (OSError, ValueError) as e:
            if folders:  # keep the report of the models already evaluated
                write_report(output, folders)
            return _fail(f"cannot load model {spec!r}: {' '.join(str(e).split())}")
        name = slug(retriever.name)
        while name in used:
            name += "_"
        used.add(name)
        folder = output / name
        for setting in [False] if args.no_instructions else [True, False]:
            try:
                results = evaluate(retriever, datasets, folder, setting, cache_dir=args.cache_dir, top_k=args.top_k)
            except EvalDataError as e:  # e.g. an mteb task whose data or packages are missing here
                return _fail(str(e))
            label = "with instructions" if setting else "without instructions"
            for dataset, metrics in results.items():
                shown = ", ".join(f"{k}={metrics[k]:.4f}" for k in ("ndcg_at_10", "p-MRR") if k in metrics)
                print(f"{retriever.name} | {dataset} | {label}: {shown}")
            if setting and spec in cards:
                card = update_model_card(spec, card_results(results, datasets))
                print(f"card updated: {card} (model-index)")
        folders.append(folder)
    print(f"report: {write_report(output, folders)}")
    return 0
