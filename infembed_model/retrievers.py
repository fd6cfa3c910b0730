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

Dense search is exact inner product over the full corpus, or over each query's own candidates when the dataset has
`top_ranked`. The passage vectors are held once: in the on-disk cache, a memory-mapped `.npy` (never a pickle), or in
memory when there is no cache folder. Full-corpus search scores them a block of `SEARCH_BLOCK_ROWS` passages at a time
(FAISS `knn`) and keeps a running top-k (`faiss.ResultHeap`), so a corpus whose vectors exceed the memory is searched
exactly from the page cache. Passages are encoded `PASSAGE_SLICE` at a time and written straight into the cache file.

The cache key hashes the model's identity and the passages. A model folder is identified by the content (SHA-256) of
the files that shape its vectors (weights, configs, tokenizer, code), not by its path or mtimes: a copied folder whose
weights were replaced never gets the old vectors. Each file's digest is remembered (in `<cache>/file_sha256/`) for a
file of the same path, size, mtime, inode and ctime, so a big model is hashed once, not on every call. The identity
also holds `dtype`, and vectors of `bfloat16` and `float16` are cached apart from float32 ones. A model that
`load_retriever` loads gets its weights in that precision, as inference servers run them (on a CPU with AMX, 3.1x the
float32 speed against 2.5x for autocast's casts at every op, vectors within cosine 0.9999); a model object handed in
keeps its weights and runs under `torch.autocast` (the model being trained, for one).
"""

import contextlib
import ctypes
import hashlib
import json
import os
import sys
from collections.abc import Callable, Iterable, Iterator
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
INFEMBED_TEMPLATE_FORMAT = "encode_query of the InF-Embed query_template {!r} filled (kept by the folder)"
BM25_FORMAT = 'bm25s over "{instruction} {query}"'
DTYPES = ("float32", "float16", "bfloat16")
PASSAGE_SLICE = 2048  # passages per encode call while filling the cache: bounds the working set of encoding
SEARCH_BLOCK_ROWS = 65_536  # passage vectors scored at a time in full-corpus search


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
    dtype: str = "float32"  # the precision the encoders compute in (part of the cache key)
    passages_encoded: int = 0  # how many passages this process actually encoded (the cache skips them)
    _vectors: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    @property
    def key(self) -> str:
        """What the vectors depend on besides the passages: the model's identity and the dtype."""
        return hashlib.sha256(f"{self.identity}\x1f{self.dtype}".encode()).hexdigest()

    def cache_key(self, texts: Iterable[str]) -> tuple[str, int]:
        """(cache key of these passages' vectors, number of passages), in one pass over `texts`."""
        key, n = hashlib.sha256(self.key.encode()), 0
        for t in texts:
            key.update(hashlib.sha256(t.encode()).digest())
            n += 1
        return key.hexdigest(), n

    def passage_vectors(self, texts: Iterable[str]) -> np.ndarray:
        """float32 [n, d] vectors of `texts` (a list, or any iterable that can be iterated again, such as mteb's
        batches): memory-mapped from the cache when there is one (encoded into it first if absent), else in memory."""
        key, n = self.cache_key(texts)
        if key in self._vectors:
            return self._vectors[key]
        path = self.cache_dir / f"{key}.npy" if self.cache_dir else None
        if path is None:
            vectors = np.empty((0, 0), dtype=np.float32)
            for start, block in self._encode_slices(texts, n):
                if start == 0:
                    vectors = np.empty((n, block.shape[1]), dtype=np.float32)
                vectors[start : start + len(block)] = block
        else:
            if not path.exists():
                self._encode_into(path, texts, n)
            vectors = np.load(path, mmap_mode="r", allow_pickle=False)
        self._vectors[key] = vectors
        return vectors

    def _encode_slices(self, texts: Iterable[str], n: int) -> Iterator[tuple[int, np.ndarray]]:
        """(first row, float32 vectors) of consecutive slices of `PASSAGE_SLICE` passages."""
        steady_heap()
        done = 0
        for chunk in _slices(texts, PASSAGE_SLICE):
            block = np.ascontiguousarray(self.encode_passages(chunk), dtype=np.float32)
            self.passages_encoded += len(chunk)
            yield done, block
            done += len(chunk)
        if done != n:
            raise RuntimeError(f"the passages changed while being encoded: {done} read, {n} hashed")

    def _encode_into(self, path: Path, texts: Iterable[str], n: int) -> None:
        """Encode straight into a `.npy` file (header first, then each slice's rows), renamed into place when whole."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp.npy")
        try:
            with open(tmp, "wb") as f:
                dim = None
                for start, block in self._encode_slices(texts, n):
                    if start == 0:
                        dim = block.shape[1]
                        header = {"descr": np.lib.format.dtype_to_descr(np.dtype(np.float32)), "fortran_order": False}
                        np.lib.format.write_array_header_1_0(f, {**header, "shape": (n, dim)})
                    block.tofile(f)
                if dim is None:  # no passage: an empty array of unknown width
                    np.save(f, np.empty((0, self.dim or 0), dtype=np.float32), allow_pickle=False)
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)

    def search(self, data: EvalDataset, use_instructions: bool, top_k: int = DEFAULT_TOP_K) -> Run:
        instructions = data.instructions if use_instructions else [""] * len(data.queries)
        q = np.ascontiguousarray(self.encode_queries(data.queries, instructions), dtype=np.float32)
        if data.top_ranked is None:
            return exact_search(self.passage_vectors(data.corpus_texts), q, data.query_ids, data.corpus_ids, top_k)
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


_HEAP = {"steady": False}
HEAP_MMAP_THRESHOLD = 128 * 1024


def steady_heap() -> None:
    """Keep glibc's heap from growing with the corpus while it is encoded (once per process, Linux only).

    glibc serves allocations above a threshold with mmap and gives them back when freed, but raises that threshold
    each time such a block is freed (up to 32 MB). Encoding frees tensors of a new shape at every batch, so soon every
    activation comes from the heap, which fragments and keeps growing: about 8 KB of RSS per encoded passage with a
    small model. Fixing the threshold at glibc's initial 128 KiB (`mallopt(M_MMAP_THRESHOLD)`, as the environment
    variable MALLOC_MMAP_THRESHOLD_ would) keeps the peak flat; it applies to the whole process."""
    if _HEAP["steady"] or not sys.platform.startswith("linux"):
        return
    _HEAP["steady"] = True
    mallopt = getattr(ctypes.CDLL(None), "mallopt", None)  # glibc and musl have it
    if mallopt is not None:
        m_mmap_threshold = -3
        mallopt(m_mmap_threshold, HEAP_MMAP_THRESHOLD)


def _slices(items: Iterable[str], size: int) -> Iterator[list[str]]:
    chunk = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def exact_search(
    p: np.ndarray, q: np.ndarray, query_ids: list[str], doc_ids: list[str], top_k: int, block_rows: int | None = None
) -> Run:
    """Exact inner-product top-k of each query over all passage vectors `p` (in memory or memory-mapped), scoring
    `block_rows` passages at a time (default `SEARCH_BLOCK_ROWS`) and merging each block into a running top-k."""
    import faiss

    block_rows = block_rows or SEARCH_BLOCK_ROWS
    k = min(top_k, len(doc_ids))
    heap = faiss.ResultHeap(len(q), k, keep_max=True)
    for start in range(0, len(p), block_rows):
        block = np.ascontiguousarray(p[start : start + block_rows])  # a view of the mapped file, not a copy
        scores, rows = faiss.knn(q, block, min(k, len(block)), metric=faiss.METRIC_INNER_PRODUCT)
        heap.add_result(scores, np.where(rows >= 0, rows + start, -1))
    heap.finalize()
    return {
        qid: {doc_ids[r]: float(s) for r, s in zip(heap.I[i], heap.D[i], strict=True) if r >= 0}
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


def _model_files(folder: Path) -> list[Path]:
    """Every file that shapes the vectors: weights, configs (also the sentence-transformers modules'
    `1_Pooling/config.json`, `sentence_bert_config.json`), tokenizer files, and the remote code."""
    patterns = ("*.safetensors", "*.bin", "*.json", "*.py", "*.txt", "*.model", "*/*.safetensors", "*/*.json")
    return sorted({f for p in patterns for f in folder.glob(p) if f.is_file()})


_DIGESTS: dict[tuple, str] = {}  # this process's memo of file_digest, by file stamp
DIGEST_MEMO = "file_sha256"  # the folder of the on-disk memo, inside the cache folder


def file_digest(path: Path, memo_dir: Path | None = None) -> str:
    """SHA-256 of a file's content, computed once per state of the file: remembered in this process and, with
    `memo_dir`, on disk, under its path, size, mtime, inode and ctime (a rewrite, even one that restores size and
    mtime as `cp -p` does, changes the ctime, so the file is hashed again)."""
    path = Path(path).resolve()
    st = path.stat()
    stamp = (str(path), st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns)
    if stamp in _DIGESTS:
        return _DIGESTS[stamp]
    memo = Path(memo_dir) / hashlib.sha256(repr(stamp).encode()).hexdigest() if memo_dir else None
    digest = memo.read_text().strip() if memo is not None and memo.is_file() else ""
    if len(digest) != 64:
        with open(path, "rb") as f:
            digest = hashlib.file_digest(f, "sha256").hexdigest()
        if memo is not None:
            with contextlib.suppress(OSError):  # a read-only cache only costs a hash next time
                memo.parent.mkdir(parents=True, exist_ok=True)
                tmp = memo.with_name(f"{memo.name}.{os.getpid()}.tmp")
                tmp.write_text(digest + "\n")
                os.replace(tmp, memo)
    _DIGESTS[stamp] = digest
    return digest


def _local_folder(name_or_path: str) -> Path | None:
    """The folder holding the model's files: the path itself, or the Hub cache snapshot of a Hub id."""
    if Path(name_or_path).is_dir():
        return Path(name_or_path).resolve()
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(name_or_path, "config.json")
    return Path(found).parent if isinstance(found, str) else None


def model_identity(name_or_path: str, kind: str, extra: dict, cache_dir: Path | None = None) -> str:
    """What a model's vectors depend on: the content of its files (wherever the folder is), or its name when no
    local folder holds them, the kind of model, and `extra` (settings that are not in the files)."""
    folder = _local_folder(name_or_path)
    memo = (cache_dir or default_cache_dir()) / DIGEST_MEMO
    if folder is None:
        return json.dumps({"model": name_or_path, "kind": kind, **extra}, sort_keys=True, default=str)
    files = [[str(f.relative_to(folder)), file_digest(f, memo)] for f in _model_files(folder)]
    return json.dumps({"files": files, "kind": kind, **extra}, sort_keys=True, default=str)


def display_name(name_or_path: str) -> str:
    """A readable model name: the Hub id as given, or the folder's name."""
    return Path(name_or_path).name if Path(name_or_path).is_dir() else name_or_path


def precision(dtype: str, device_type: str):
    """The context an encoder runs in for `dtype`: none for float32, else `torch.autocast` on that device type."""
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    if dtype == "float32":
        return contextlib.nullcontext()
    import torch

    return torch.autocast(device_type, dtype=getattr(torch, dtype))


def in_dtype(model, dtype: str):
    """A model that evaluation loaded itself, with its weights cast to `dtype` (float32: as it is)."""
    if dtype == "float32":
        return model
    import torch

    return model.to(getattr(torch, dtype))


def _device_type(model) -> str:
    device = getattr(model, "device", None)
    return getattr(device, "type", None) or "cpu"


def from_infembed(
    model, name: str, identity: str, batch_size: int = 32, cache_dir: Path | None = None, dtype: str = "float32"
):
    """Adapter for a loaded InF-Embed model (its `encode_queries` / `encode_passages`), computing in `dtype`."""
    model.eval()

    def encode_queries(queries: list[str], instructions: list[str]) -> np.ndarray:
        with precision(dtype, _device_type(model)):
            return model.encode_queries(queries, instructions, batch_size=batch_size).float().numpy()

    def encode_passages(passages: list[str]) -> np.ndarray:
        with precision(dtype, _device_type(model)):
            return model.encode_passages(passages, batch_size=batch_size).float().numpy()

    return DenseRetriever(
        name=name,
        identity=identity,
        instruction_format=INFEMBED_FORMAT,
        encode_queries=encode_queries,
        encode_passages=encode_passages,
        cache_dir=cache_dir,
        dim=model.config.encoder_config.hidden_size,  # pooled hidden state
        n_parameters=model.num_parameters(),
        max_tokens=model.config.passage_max_length,
        dtype=dtype,
    )


def from_sentence_transformer(
    model,
    name: str,
    identity: str,
    batch_size: int = 32,
    cache_dir: Path | None = None,
    dtype: str = "float32",
    query_template: str | None = None,
):
    """Adapter for a loaded SentenceTransformer (instruction handling in the module docstring), computing in `dtype`.
    With `query_template` (an InF-Embed model's, kept by the folders `infembed train` and `infembed export` write),
    a query is that template filled with its instruction, as the model was trained."""
    normalize = str(model.similarity_fn_name or "cosine") == "cosine"
    kwargs = {"batch_size": batch_size, "normalize_embeddings": normalize, "convert_to_numpy": True}

    def texts(queries: list[str], instructions: list[str]) -> list[str]:
        if query_template is None:
            return query_texts(queries, instructions)
        from .modeling_infembed import format_query

        return [format_query(query_template, q, i) for q, i in zip(queries, instructions, strict=True)]

    def encode_queries(queries: list[str], instructions: list[str]) -> np.ndarray:
        with precision(dtype, _device_type(model)):
            return np.asarray(model.encode_query(texts(queries, instructions), **kwargs), dtype=np.float32)

    def encode_passages(passages: list[str]) -> np.ndarray:
        with precision(dtype, _device_type(model)):
            vectors = model.encode_document(passages, show_progress_bar=len(passages) > 5000, **kwargs)
        return np.asarray(vectors, dtype=np.float32)

    return DenseRetriever(
        name=name,
        identity=identity,
        instruction_format=ST_FORMAT if query_template is None else INFEMBED_TEMPLATE_FORMAT.format(query_template),
        encode_queries=encode_queries,
        encode_passages=encode_passages,
        cache_dir=cache_dir,
        dim=model.get_embedding_dimension(),
        n_parameters=sum(p.numel() for p in model.parameters()),
        max_tokens=model.max_seq_length,
        dtype=dtype,
    )


def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def load_retriever(
    spec: str,
    batch_size: int = 32,
    cache_dir: Path | None = None,
    *,
    dtype: str = "float32",
    device: str | None = None,
) -> Retriever:
    """`bm25`, an InF-Embed folder or Hub id, or any sentence-transformers model (folder or Hub id), on `device`
    (default: cuda when there is one, else cpu), with its weights in `dtype` (float32, bfloat16 or float16)."""
    if spec.lower() == "bm25":
        return Bm25Retriever()
    precision(dtype, "cpu")  # an unknown dtype fails before a model loads
    device = device or default_device()
    name = display_name(spec)
    try:
        infembed = is_infembed(spec)
    except (OSError, ValueError):  # an unreachable or malformed name: the loader below reports it
        infembed = False
    if infembed:
        from transformers import AutoModel

        model = in_dtype(AutoModel.from_pretrained(spec, trust_remote_code=True).to(device), dtype)
        identity = model_identity(spec, "infembed", {}, cache_dir)
        return from_infembed(model, name, identity, batch_size, cache_dir, dtype)
    from sentence_transformers import SentenceTransformer

    model = in_dtype(SentenceTransformer(spec, device=device), dtype)
    template = _query_template(spec)
    extra = {"max_seq_length": model.max_seq_length, "prompts": model.prompts, "sim": str(model.similarity_fn_name)}
    identity = model_identity(spec, "sentence-transformers", extra, cache_dir)
    return from_sentence_transformer(model, name, identity, batch_size, cache_dir, dtype, template)


def _query_template(folder: str) -> str | None:
    """The InF-Embed query template that a LoRA adapter or exported folder keeps (None for other models)."""
    from .export import QUERY_TEMPLATE_KEY

    path = Path(folder) / "config_sentence_transformers.json"
    return json.loads(path.read_text()).get(QUERY_TEMPLATE_KEY) if path.is_file() else None
