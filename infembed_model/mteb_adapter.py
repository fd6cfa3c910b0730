"""Run mteb tasks (FollowIR, InstructIR, IFIR, BRIGHT, ...) through `mteb.evaluate` with our retrievers.

mteb hands each query batch over as `{"id", "text", "query", "instruction"}` where `text` is mteb's own
"query instruction" concatenation; the wrapper ignores `text` for queries and calls the retriever's
`encode_queries(batch["query"], batch["instruction"])`, so every model sees its instruction exactly as in
`infembed eval` on a local folder (see `retrievers.py`). Passages are `batch["text"]` ("title text"): mteb's batches
of each corpus chunk stream through the retriever's passage cache (hashed in one pass, encoded `PASSAGE_SLICE` at a
time in a second, never joined into one list), so a second run (e.g. without instructions) encodes none.
"""

from pathlib import Path

import numpy as np
from mteb.models.abs_encoder import AbsEncoder
from mteb.models.model_meta import ModelMeta

from .eval_data import EvalDataError
from .retrievers import DenseRetriever


class RetrieverEncoder(AbsEncoder):
    """An mteb encoder over a DenseRetriever; `use_instructions=False` drops every instruction."""

    def __init__(self, retriever: DenseRetriever, use_instructions: bool = True):
        self.retriever = retriever
        self.use_instructions = use_instructions
        name = retriever.name if "/" in retriever.name else f"local/{retriever.name}"
        self.mteb_model_meta = ModelMeta(
            loader=None,
            name=name,
            # results of different weights must not share a results folder
            revision=retriever.key[:12],
            release_date=None,
            languages=None,
            n_parameters=retriever.n_parameters,
            memory_usage_mb=None,
            max_tokens=retriever.max_tokens,
            embed_dim=retriever.dim,
            license=None,
            open_weights=True,
            public_training_code=None,
            public_training_data=None,
            framework=["PyTorch"],
            # vectors are already L2-normalised where the model means cosine; dot ranks as our own FAISS search does
            similarity_fn_name="dot",
            use_instructions=use_instructions,
            training_datasets=None,
        )

    def encode(self, inputs, *, task_metadata, hf_split, hf_subset, prompt_type=None, **kwargs) -> np.ndarray:
        is_query = prompt_type is not None and prompt_type.value == "query"
        if not is_query:  # through the passage cache shared with `infembed eval`, batch by batch
            vectors = self.retriever.passage_vectors(BatchTexts(inputs))
            return vectors if vectors.flags.writeable else np.array(vectors)  # a mapped cache file is read-only
        out = []
        for batch in inputs:
            queries = list(batch.get("query", batch["text"]))
            given = batch.get("instruction") if self.use_instructions else None
            instructions = [i or "" for i in given] if given is not None else [""] * len(queries)
            out.append(self.retriever.encode_queries(queries, instructions))
        return np.concatenate(out).astype(np.float32)


class BatchTexts:
    """The texts of mteb's batches, one at a time, as often as they are iterated (the dataloader is re-iterable)."""

    def __init__(self, batches):
        self.batches = batches

    def __iter__(self):
        for batch in self.batches:
            yield from batch["text"]


# Import names whose package has another name on PyPI.
PIP_NAMES = {"Stemmer": "PyStemmer"}


class MtebTaskError(EvalDataError):
    """An mteb task that cannot run here, with the cause and the fix in one line."""


def task_source(name: str) -> dict[str, str | None]:
    """The Hub dataset an mteb task reads (also when run on a local snapshot): id, revision, config and split."""
    import mteb

    metadata = mteb.get_task(name).metadata
    return {
        "dataset_id": metadata.dataset.get("path"),
        "revision": metadata.dataset.get("revision"),
        "config": (metadata.hf_subsets or ["default"])[0],
        "split": metadata.eval_splits[0],
    }


def _is_network_error(error: BaseException) -> bool:
    """Whether `error`, or an error it was raised from, is a failed or refused connection (datasets and
    huggingface_hub wrap them: `ConnectionError: Couldn't reach ... (OfflineModeIsEnabled)`)."""
    from huggingface_hub.errors import LocalEntryNotFoundError  # not cached, and the Hub not asked or not reached

    while error is not None:
        if isinstance(error, ConnectionError | TimeoutError | LocalEntryNotFoundError):
            return True
        error = error.__cause__ or error.__context__
    return False


def _unreachable_message(task, local_path: str | Path | None) -> str:
    from huggingface_hub import constants

    name, dataset = task.metadata.name, task.metadata.dataset["path"]
    if local_path is not None:
        return f"mteb task {name}: cannot read its data from {local_path} (give a snapshot of its Hub dataset)"
    if constants.HF_HUB_OFFLINE:
        cause, fetch = "HF_HUB_OFFLINE is set and", "unset HF_HUB_OFFLINE on a machine with network to cache it once"
    else:
        cause, fetch = "the Hub cannot be reached and", "run once with network to cache it"
    return (
        f"mteb task {name}: {cause} its data ({dataset}) is not in the local cache; {fetch}, or download a snapshot "
        f"(`hf download {dataset} --repo-type dataset --local-dir DIR`) and pass --data {name}=DIR"
    )


def _missing_package_message(task, error: ImportError, model_name: str) -> str:
    module = (error.name or "").split(".")[0]
    package = PIP_NAMES.get(module, module)
    return (
        f"mteb task {task.metadata.name}: {model_name} needs the Python package {package}, which is not installed "
        f"(`pip install {package}`, or `make setup` to install infir's dependencies)"
    )


def get_task(name: str, local_path: str | Path | None = None):
    """An mteb task by name; with `local_path`, its data is read from that folder (a snapshot of the Hub repo)."""
    import mteb

    task = mteb.get_task(name)
    if local_path is not None:
        dataset = {**task.metadata.dataset, "path": str(local_path)}
        task.metadata = task.metadata.model_copy(update={"dataset": dataset})  # this instance only
    return task


BM25_MODEL = "mteb/baseline-bm25s"


def run_task(
    retriever,
    task,
    use_instructions: bool = True,
    prediction_folder: Path | None = None,
    local_path: str | Path | None = None,
) -> dict[str, float]:
    """Evaluate one mteb task and return its test scores under mteb's names (nested og/changed dicts left out).

    Raises MtebTaskError when a package the mteb model needs is missing or the task's data cannot be had.
    """
    import mteb

    if isinstance(retriever, DenseRetriever):
        model, model_name = RetrieverEncoder(retriever, use_instructions), retriever.name
    else:  # bm25: mteb's own bm25s baseline, which always reads mteb's "query instruction" text
        model, model_name = mteb.get_model(BM25_MODEL), f"mteb's BM25 baseline ({BM25_MODEL})"
    if prediction_folder is not None:
        Path(prediction_folder).mkdir(parents=True, exist_ok=True)
    try:
        result = mteb.evaluate(
            model,
            task,
            cache=None,
            show_progress_bar=False,
            prediction_folder=prediction_folder,
            overwrite_strategy="always",
        )
    except ImportError as e:  # an optional dependency of the mteb model (PyStemmer for BM25)
        raise MtebTaskError(_missing_package_message(task, e, model_name)) from None
    except Exception as e:
        if _is_network_error(e):
            raise MtebTaskError(_unreachable_message(task, local_path)) from None
        raise
    task_result = result.task_results[0]
    split = task.metadata.eval_splits[0]
    scores = task_result.scores[split][0]
    return {k: float(v) for k, v in scores.items() if isinstance(v, int | float) and not isinstance(v, bool)}


def mteb_model(model, batch_size: int = 32, cache_dir: Path | None = None) -> RetrieverEncoder:
    """An InF-Embed model (folder, Hub id, or a loaded `InfEmbedModel`) as an mteb encoder that gives each query its
    own instruction through `encode_queries`, as trained: `mteb.evaluate(mteb_model(path), task)` scores what
    `infembed eval` scores.

    `mteb.evaluate(SentenceTransformer(path, trust_remote_code=True), task)` cannot: mteb hands a SentenceTransformer
    the text "{query} {instruction}" with one static prompt, never the model's `query_template`. Any model
    `infembed eval --model` takes works here too (a sentence-transformers model gets "{instruction} {query}").
    """
    from .retrievers import from_infembed, load_retriever

    if isinstance(model, str | Path):
        retriever = load_retriever(str(model), batch_size=batch_size, cache_dir=cache_dir)
    else:  # e.g. built from a LoRA adapter, as its card shows
        name = Path(model.name_or_path or "InF-Embed").name
        identity = f"in-memory {type(model).__name__} {model.name_or_path} {id(model)}"
        retriever = from_infembed(model, name, identity, batch_size=batch_size)
    if not isinstance(retriever, DenseRetriever):
        raise ValueError(f"{model!r} is not an embedding model (for BM25 use mteb.get_model({BM25_MODEL!r}))")
    return RetrieverEncoder(retriever)
