"""Run mteb tasks (FollowIR, InstructIR, IFIR, BRIGHT, ...) through `mteb.evaluate` with our retrievers.

mteb hands each query batch over as `{"id", "text", "query", "instruction"}` where `text` is mteb's own
"query instruction" concatenation; the wrapper ignores `text` for queries and calls the retriever's
`encode_queries(batch["query"], batch["instruction"])`, so every model sees its instruction exactly as in
`infembed eval` on a local folder (see `retrievers.py`). Passages are `batch["text"]` ("title text"), encoded through
the retriever's passage cache, so a second run (e.g. without instructions) encodes none.
"""

import hashlib
from pathlib import Path

import numpy as np
from mteb.models.abs_encoder import AbsEncoder
from mteb.models.model_meta import ModelMeta

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
            revision=hashlib.sha256(retriever.identity.encode()).hexdigest()[:12],
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
        if not is_query:  # all of mteb's documents at once, through the passage cache shared with `infembed eval`
            texts = [t for batch in inputs for t in batch["text"]]
            return np.asarray(self.retriever.passage_vectors(texts), dtype=np.float32)
        out = []
        for batch in inputs:
            queries = list(batch.get("query", batch["text"]))
            given = batch.get("instruction") if self.use_instructions else None
            instructions = [i or "" for i in given] if given is not None else [""] * len(queries)
            out.append(self.retriever.encode_queries(queries, instructions))
        return np.concatenate(out).astype(np.float32)


def get_task(name: str, local_path: str | Path | None = None):
    """An mteb task by name; with `local_path`, its data is read from that folder (a snapshot of the Hub repo)."""
    import mteb

    task = mteb.get_task(name)
    if local_path is not None:
        dataset = {**task.metadata.dataset, "path": str(local_path)}
        task.metadata = task.metadata.model_copy(update={"dataset": dataset})  # this instance only
    return task


def run_task(retriever, task, use_instructions: bool = True, prediction_folder: Path | None = None) -> dict[str, float]:
    """Evaluate one mteb task and return its test scores under mteb's names (nested og/changed dicts left out)."""
    import mteb

    if isinstance(retriever, DenseRetriever):
        model = RetrieverEncoder(retriever, use_instructions)
    else:  # bm25: mteb's own bm25s baseline, which always reads mteb's "query instruction" text
        model = mteb.get_model("mteb/baseline-bm25s")
    if prediction_folder is not None:
        Path(prediction_folder).mkdir(parents=True, exist_ok=True)
    result = mteb.evaluate(
        model,
        task,
        cache=None,
        show_progress_bar=False,
        prediction_folder=prediction_folder,
        overwrite_strategy="always",
    )
    task_result = result.task_results[0]
    split = task.metadata.eval_splits[0]
    scores = task_result.scores[split][0]
    return {k: float(v) for k, v in scores.items() if isinstance(v, int | float) and not isinstance(v, bool)}
