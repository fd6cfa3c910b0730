"""Retrievers behind one small interface: encode queries with their instructions, encode passages, search.

How each kind of model sees an instruction (also written into every report):
- InF-Embed (a folder or Hub id whose config.json has `"model_type": "infembed"`): its own
  `encode_queries(queries, instructions)`, i.e. the model's `query_template`
  (default "Instruct: {instruction}\\nQuery: {query}"; an empty instruction gives the query alone).
- any sentence-transformers model: the text `"{instruction} {query}"` (the query alone when there is no instruction)
  goes through `SentenceTransformer.encode_query`, which prepends the model's own "query" prompt when it has a
  non-empty one; passages go through `encode_document` (its "document" prompt, if any). Vectors are L2-normalised when
  the model's similarity is cosine, so inner product ranks as the model intends.
- `bm25` (bm25s, English stopwords, no stemming): the text `"{instruction} {query}"`.

Dense search is exact inner product with FAISS (`IndexFlatIP`) over the full corpus, or over each query's own
candidates when the dataset has `top_ranked`. Passage vectors are cached on disk as `.npy` (never pickles), keyed by
a hash of the model's identity (name, class, config and weight files' size and mtime) and of the passages.
"""

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from . import is_infembed
from .eval_data import EvalDataset
from .metrics import Run

DEFAULT_TOP_K = 1000
INFEMBED_FORMAT = "InF-Embed query_template via encode_queries(queries, instructions)"
ST_FORMAT = 'encode_query("{instruction} {query}") (the model\'s own "query" prompt, if any, prepended)'
BM25_FORMAT = 'bm25s over "{instruction} {query}"'


def default_cache_dir() -> Path:
    base = os.environ.get("INFEMBED_CACHE") or Path(os.environ.get("HF_HOME", Path.home() / ".cache")) / "infembed"
    return Path(base) / "passage_vectors"


def query_texts(queries: list[str], instructions: list[str]) -> list[str]:
    """`"{instruction} {query}"`, or the query alone where the instruction is empty."""
    return [f"{i} {q}" if i else q for q, i in zip(queries, instructions, strict=True)]


class Retriever(Protocol):
    name: str
    instruction_format: str

    def search(self, data: EvalDataset, use_instructions: bool, top_k: int = DEFAULT_TOP_K) -> Run: ...


@dataclass
class DenseRetriever:
    """A bi-encoder: `encode_queries(queries, instructions)` and `encode_passages(passages)` return float32 arrays."""

    name: str
    identity: str
    instruction_format: str
    encode_queries: Callable[[list[str], list[str]], np.ndarray]
    encode_passages: Callable[[list[str]], np.ndarray]
    cache_dir: Path | None = None
    dim: int | None = None
    n_parameters: int | None = None
    max_tokens: int | None = None
    passages_encoded: int = 0  # how many passages this process actually encoded (the cache skips them)
    _vectors: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    def passage_vectors(self, texts: list[str]) -> np.ndarray:
        key = hashlib.sha256(self.identity.encode())
        for t in texts:
            key.update(hashlib.sha256(t.encode()).digest())
        key = key.hexdigest()
        if key in self._vectors:
            return self._vectors[key]
        path = self.cache_dir / f"{key}.npy" if self.cache_dir else None
        if path is not None and path.exists():
            vectors = np.load(path, allow_pickle=False)
        else:
            vectors = np.ascontiguousarray(self.encode_passages(texts), dtype=np.float32)
            self.passages_encoded += len(texts)
            if path is not None:
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_suffix(f".{os.getpid()}.tmp.npy")
                np.save(tmp, vectors, allow_pickle=False)
                os.replace(tmp, path)
        self._vectors[key] = vectors
        return vectors

    def search(self, data: EvalDataset, use_instructions: bool, top_k: int = DEFAULT_TOP_K) -> Run:
        instructions = data.instructions if use_instructions else [""] * len(data.queries)
        q = np.ascontiguousarray(self.encode_queries(data.queries, instructions), dtype=np.float32)
        if data.top_ranked is None:
            return _faiss_search(self.passage_vectors(data.corpus_texts), q, data.query_ids, data.corpus_ids, top_k)
        # rerank: encode only passages that are someone's candidate, score each query against its own candidates
        wanted = {d for qid in data.query_ids for d in data.top_ranked[qid]}
        ids = [d for d in data.corpus_ids if d in wanted]
        position = {d: i for i, d in enumerate(ids)}
        text = dict(zip(data.corpus_ids, data.corpus_texts, strict=True))
        p = self.passage_vectors([text[d] for d in ids])
        run = {}
        for row, qid in enumerate(data.query_ids):
            cands = data.top_ranked[qid]
            scores = p[[position[d] for d in cands]] @ q[row]
            run[qid] = {d: float(s) for d, s in zip(cands, scores, strict=True)}
        return run


def _faiss_search(p: np.ndarray, q: np.ndarray, query_ids: list[str], doc_ids: list[str], top_k: int) -> Run:
    import faiss

    index = faiss.IndexFlatIP(p.shape[1])
    index.add(p)
    scores, rows = index.search(q, min(top_k, len(doc_ids)))
    return {
        qid: {doc_ids[r]: float(s) for r, s in zip(rows[i], scores[i], strict=True) if r >= 0}
        for i, qid in enumerate(query_ids)
    }


@dataclass
class Bm25Retriever:
    name: str = "bm25"
    instruction_format: str = BM25_FORMAT
    _indexes: dict[str, object] = field(default_factory=dict, repr=False)

    def _index(self, texts: list[str]):
        import bm25s

        key = hashlib.sha256("\x1f".join(texts).encode()).hexdigest()
        if key not in self._indexes:
            index = bm25s.BM25()
            index.index(bm25s.tokenize(texts, stopwords="en", show_progress=False), show_progress=False)
            self._indexes[key] = index
        return self._indexes[key]

    def search(self, data: EvalDataset, use_instructions: bool, top_k: int = DEFAULT_TOP_K) -> Run:
        import bm25s

        index = self._index(data.corpus_texts)
        instructions = data.instructions if use_instructions else [""] * len(data.queries)
        tokens = bm25s.tokenize(
            query_texts(data.queries, instructions), stopwords="en", return_ids=False, show_progress=False
        )
        position = {d: i for i, d in enumerate(data.corpus_ids)}
        run = {}
        for qid, toks in zip(data.query_ids, tokens, strict=True):
            scores = index.get_scores(toks)
            if data.top_ranked is not None:
                cands = data.top_ranked[qid]
                run[qid] = {d: float(scores[position[d]]) for d in cands}
            else:
                k = min(top_k, len(scores))
                best = np.argpartition(-scores, k - 1)[:k]
                run[qid] = {data.corpus_ids[r]: float(scores[r]) for r in best}
        return run


def _file_stamp(folder: Path) -> list[tuple[str, int, int]]:
    """Size and mtime of every file that shapes the vectors: weights, configs (also the sentence-transformers modules'
    `1_Pooling/config.json`, `sentence_bert_config.json`), tokenizer files, and the remote code."""
    patterns = ("*.safetensors", "*.bin", "*.json", "*.py", "*.txt", "*.model", "*/*.safetensors", "*/*.json")
    files = sorted({f for p in patterns for f in folder.glob(p) if f.is_file()})
    return [(str(f.relative_to(folder)), f.stat().st_size, f.stat().st_mtime_ns) for f in files]


def _local_folder(name_or_path: str) -> Path | None:
    """The folder holding the model's files: the path itself, or the Hub cache snapshot of a Hub id."""
    if Path(name_or_path).is_dir():
        return Path(name_or_path).resolve()
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(name_or_path, "config.json")
    return Path(found).parent if isinstance(found, str) else None


def _identity(name_or_path: str, kind: str, extra: dict) -> str:
    folder = _local_folder(name_or_path)
    stamp = _file_stamp(folder) if folder else []
    return json.dumps({"model": name_or_path, "folder": str(folder), "kind": kind, "files": stamp, **extra})


def display_name(name_or_path: str) -> str:
    """A readable model name: the Hub id as given, or the folder's name."""
    return Path(name_or_path).name if Path(name_or_path).is_dir() else name_or_path


def from_infembed(model, name: str, identity: str, batch_size: int = 32, cache_dir: Path | None = None):
    """Adapter for a loaded InF-Embed model (its `encode_queries` / `encode_passages`)."""
    model.eval()
    return DenseRetriever(
        name=name,
        identity=identity,
        instruction_format=INFEMBED_FORMAT,
        encode_queries=lambda qs, ins: model.encode_queries(qs, ins, batch_size=batch_size).float().numpy(),
        encode_passages=lambda ps: model.encode_passages(ps, batch_size=batch_size).float().numpy(),
        cache_dir=cache_dir,
        dim=model.config.encoder_config.hidden_size,  # pooled hidden state
        n_parameters=model.num_parameters(),
        max_tokens=model.config.passage_max_length,
    )


def from_sentence_transformer(model, name: str, identity: str, batch_size: int = 32, cache_dir: Path | None = None):
    """Adapter for a loaded SentenceTransformer (instruction handling in the module docstring)."""
    normalize = str(model.similarity_fn_name or "cosine") == "cosine"
    kwargs = {"batch_size": batch_size, "normalize_embeddings": normalize, "convert_to_numpy": True}
    return DenseRetriever(
        name=name,
        identity=identity,
        instruction_format=ST_FORMAT,
        encode_queries=lambda qs, ins: model.encode_query(query_texts(qs, ins), **kwargs),
        encode_passages=lambda ps: model.encode_document(ps, show_progress_bar=len(ps) > 5000, **kwargs),
        cache_dir=cache_dir,
        dim=model.get_embedding_dimension(),
        n_parameters=sum(p.numel() for p in model.parameters()),
        max_tokens=model.max_seq_length,
    )


def load_retriever(spec: str, batch_size: int = 32, cache_dir: Path | None = None) -> Retriever:
    """`bm25`, an InF-Embed folder or Hub id, or any sentence-transformers model (folder or Hub id)."""
    if spec.lower() == "bm25":
        return Bm25Retriever()
    name = display_name(spec)
    try:
        infembed = is_infembed(spec)
    except (OSError, ValueError):  # an unreachable or malformed name: the loader below reports it
        infembed = False
    if infembed:
        import torch
        from transformers import AutoModel

        model = AutoModel.from_pretrained(spec, trust_remote_code=True)
        if torch.cuda.is_available():
            model.to("cuda")
        identity = _identity(spec, "infembed", {})
        return from_infembed(model, name, identity, batch_size, cache_dir)
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(spec)
    extra = {"max_seq_length": model.max_seq_length, "prompts": model.prompts, "sim": str(model.similarity_fn_name)}
    return from_sentence_transformer(
        model, name, _identity(spec, "sentence-transformers", extra), batch_size, cache_dir
    )
