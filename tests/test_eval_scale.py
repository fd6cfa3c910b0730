"""Evaluation at corpus scale: streamed encoding, vectors held once, blocked exact search, dtype/device, and a cache
that follows the content of the model's files."""

import argparse
import hashlib
import os
import random
import shutil

import numpy as np
import pytest
import torch
from tiny_models import write_backbone

from infembed_model import InfEmbedModel, modeling_infembed, retrievers
from infembed_model import evaluate as evaluate_cmd
from infembed_model.eval_data import EvalDataset
from infembed_model.evaluate import as_retriever, evaluate
from infembed_model.mteb_adapter import RetrieverEncoder
from infembed_model.retrievers import exact_search, load_retriever

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def texts(n: int, seed: int, lo: int = 1, hi: int = 40) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(f"w{rng.randrange(200)}" for _ in range(rng.randint(lo, hi))) for _ in range(n)]


def infembed_cli(*argv) -> int:
    parser = argparse.ArgumentParser(prog="infembed")
    evaluate_cmd.add_parser(parser.add_subparsers(dest="command", required=True))
    args, extra = parser.parse_known_args([str(a) for a in argv])
    return args.func(args, extra)


@pytest.fixture(scope="module")
def model_dir(backbone_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("infembed-scale")
    InfEmbedModel.from_backbone(str(backbone_dir("bert"))).save_pretrained(str(out))
    return out


@pytest.fixture(scope="module")
def corpus_data() -> EvalDataset:
    """A full-corpus dataset (no top_ranked): 90 passages, 7 queries with instructions."""
    passages, queries = texts(90, 1), texts(7, 2, 2, 6)
    return EvalDataset(
        name="scale",
        corpus_ids=[f"d{i}" for i in range(90)],
        corpus_texts=passages,
        query_ids=[f"q{i}" for i in range(7)],
        queries=queries,
        instructions=texts(7, 3, 3, 8),
        qrels={f"q{i}": {f"d{i * 11}": 1} for i in range(7)},
    )


@pytest.mark.parametrize("combine", ["concat", "attention"])
def test_chunked_encoding_gives_the_vectors_of_one_batch(backbone_dir, monkeypatch, combine):
    model = InfEmbedModel.from_backbone(str(backbone_dir("bert")), combine=combine).eval()
    passages, queries, instructions = texts(23, 4), texts(23, 5, 1, 6), texts(23, 6, 0, 9)
    one_batch = (
        model.encode_passages(passages, batch_size=len(passages)),
        model.encode_queries(queries, instructions, batch_size=len(queries)),
    )
    monkeypatch.setattr(modeling_infembed, "ENCODE_CHUNK_BATCHES", 1)  # chunks of one batch of 4: 6 chunks
    calls = []
    tokenizer = type(model.tokenizer).__call__

    def counting(self, text, **kwargs):
        calls.append(len(text) if isinstance(text, list) else 1)
        return tokenizer(self, text, **kwargs)

    monkeypatch.setattr(type(model.tokenizer), "__call__", counting)
    chunked = model.encode_passages(passages, batch_size=4), model.encode_queries(queries, instructions, batch_size=4)
    assert max(calls) <= 4  # tokenised a chunk at a time, not the whole input
    for whole, parts in zip(one_batch, chunked, strict=True):
        assert whole.shape == parts.shape == (23, model.config.hidden_size)
        torch.testing.assert_close(parts, whole, atol=1e-5, rtol=0)


def test_retriever_encodes_in_slices_into_the_cache_file(model_dir, monkeypatch, tmp_path, corpus_data):
    whole = load_retriever(str(model_dir)).passage_vectors(corpus_data.corpus_texts)  # no cache: in memory
    assert not isinstance(whole, np.memmap) and whole.shape == (90, 32)
    monkeypatch.setattr(retrievers, "PASSAGE_SLICE", 8)
    retriever = load_retriever(str(model_dir), cache_dir=tmp_path / "cache")
    sizes = []
    encode = retriever.encode_passages
    retriever.encode_passages = lambda ps: sizes.append(len(ps)) or encode(ps)
    mapped = retriever.passage_vectors(corpus_data.corpus_texts)
    assert sizes == [8] * 11 + [2] and retriever.passages_encoded == 90
    assert isinstance(mapped, np.memmap) and not mapped.flags.writeable  # held once: the mapped cache file
    (cached,) = (tmp_path / "cache").glob("*.npy")
    np.testing.assert_allclose(np.load(cached), whole, atol=1e-5, rtol=0)
    assert not list((tmp_path / "cache").glob("*.tmp*"))


@pytest.mark.parametrize("block_rows", [1, 7, 90, 1000])
def test_blocked_search_is_exact(block_rows):
    rng = np.random.default_rng(0)
    p, q = rng.standard_normal((90, 16), dtype=np.float32), rng.standard_normal((5, 16), dtype=np.float32)
    ids = [f"d{i}" for i in range(90)]
    run = exact_search(p, q, [f"q{i}" for i in range(5)], ids, top_k=10, block_rows=block_rows)
    scores = q @ p.T
    for i in range(5):
        best = np.argsort(-scores[i])[:10]
        assert list(run[f"q{i}"]) == [ids[r] for r in best]  # best first
        np.testing.assert_allclose([run[f"q{i}"][ids[r]] for r in best], scores[i, best], rtol=1e-5)
    assert len(exact_search(p, q, ["a", "b", "c", "d", "e"], ids, top_k=1000, block_rows=block_rows)["a"]) == 90


def test_memory_mapped_and_in_memory_search_give_the_same_run(model_dir, monkeypatch, tmp_path, corpus_data):
    in_memory = load_retriever(str(model_dir))  # no cache folder: the vectors live in memory
    expected = in_memory.search(corpus_data, True, top_k=20)
    monkeypatch.setattr(retrievers, "SEARCH_BLOCK_ROWS", 8)  # 12 blocks of the mapped file, merged
    mapped = load_retriever(str(model_dir), cache_dir=tmp_path / "cache")
    first = mapped.search(corpus_data, True, top_k=20)  # encodes into the cache, then searches the mapped file
    again = load_retriever(str(model_dir), cache_dir=tmp_path / "cache")
    second = again.search(corpus_data, True, top_k=20)  # a fresh process: the cached file only
    assert again.passages_encoded == 0
    assert all(isinstance(v, np.memmap) for v in again._vectors.values())
    for run in (first, second):
        assert {q: list(docs) for q, docs in run.items()} == {q: list(docs) for q, docs in expected.items()}
        for q, docs in run.items():
            np.testing.assert_allclose(list(docs.values()), list(expected[q].values()), atol=1e-6)
    # through `evaluate`, the metrics agree too
    assert evaluate(again, [corpus_data])["scale"] == pytest.approx(evaluate(in_memory, [corpus_data])["scale"])


def test_dtype_changes_the_cache_key(model_dir, backbone_dir, tmp_path, corpus_data):
    cache = tmp_path / "cache"
    full = load_retriever(str(model_dir), cache_dir=cache)
    half = load_retriever(str(model_dir), cache_dir=cache, dtype="bfloat16", device="cpu")
    assert full.key != half.key and full.cache_key(["a"]) != half.cache_key(["a"])
    evaluate(full, [corpus_data])
    evaluate(half, [corpus_data])
    assert half.passages_encoded == 90 and len(list(cache.glob("*.npy"))) == 2  # no float32 vectors served
    a, b = (r.passage_vectors(corpus_data.corpus_texts) for r in (full, half))
    assert not np.array_equal(a, b)  # computed in bfloat16
    assert (a * b).sum(1).min() > 0.99  # normalised vectors: cosine
    # sentence-transformers models and loaded models alike
    from sentence_transformers import SentenceTransformer

    st_dir = tmp_path / "st"
    SentenceTransformer(str(backbone_dir("bert")), device="cpu").save_pretrained(str(st_dir))
    keys = {load_retriever(str(st_dir), dtype=d).key for d in ("float32", "float16", "bfloat16")}
    model = InfEmbedModel.from_backbone(str(backbone_dir("bert")))
    keys |= {as_retriever(model, dtype=d).key for d in ("float32", "bfloat16")}
    assert len(keys) == 5
    with pytest.raises(ValueError, match="dtype must be one of float32, float16, bfloat16"):
        load_retriever(str(model_dir), dtype="int8")


def test_eval_cli_dtype_and_device(model_dir, tmp_path, corpus_data, capsys):
    from infembed_model import make_eval

    data = corpus_data
    tables = {
        "corpus": [{"_id": i, "title": "", "text": t} for i, t in zip(data.corpus_ids, data.corpus_texts, strict=True)],
        "queries": [{"_id": q, "text": t} for q, t in zip(data.query_ids, data.queries, strict=True)],
        "default": [{"query-id": q, "corpus-id": d, "score": 1} for q, r in data.qrels.items() for d in r],
    }
    folder = make_eval.write_eval_folder(tmp_path / "data", tables, "scale")
    cache = tmp_path / "cache"
    common = ["--model", model_dir, "--data", folder, "--cache-dir", cache, "--no-instructions"]
    assert infembed_cli("eval", *common, "--output", tmp_path / "a", "--dtype", "bfloat16", "--device", "cpu") == 0
    assert infembed_cli("eval", *common, "--output", tmp_path / "b") == 0
    assert len(list(cache.glob("*.npy"))) == 2
    capsys.readouterr()
    assert infembed_cli("eval", *common, "--output", tmp_path / "c", "--device", "nodevice") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("infembed eval: error: --device nodevice: ")
    if not torch.cuda.is_available():
        assert infembed_cli("eval", *common, "--output", tmp_path / "d", "--device", "cuda") == 2
        assert "has no cuda device" in capsys.readouterr().err
    assert not (tmp_path / "c").exists() and not (tmp_path / "d").exists()


def test_cache_follows_the_weights_content_and_hashes_each_file_once(
    model_dir, backbone_dir, monkeypatch, tmp_path, corpus_data
):
    cache = tmp_path / "cache"
    hashed = []
    file_digest = hashlib.file_digest
    monkeypatch.setattr(hashlib, "file_digest", lambda f, name: hashed.append(f.name) or file_digest(f, name))
    monkeypatch.setattr(retrievers, "_DIGESTS", {})

    first = load_retriever(str(model_dir), cache_dir=cache)
    evaluate(first, [corpus_data])
    assert first.passages_encoded == 90 and any(name.endswith("model.safetensors") for name in hashed)
    hashed.clear()
    load_retriever(str(model_dir), cache_dir=cache)
    assert hashed == []  # remembered in this process
    monkeypatch.setattr(retrievers, "_DIGESTS", {})
    load_retriever(str(model_dir), cache_dir=cache)
    assert hashed == []  # ... and on disk, for a file of the same size and mtime

    # a copy of the folder (another path, other inodes, same bytes) is the same model: its vectors are reused
    copy = tmp_path / "copy"
    shutil.copytree(model_dir, copy)
    same = load_retriever(str(copy), cache_dir=cache)
    evaluate(same, [corpus_data])
    assert same.passages_encoded == 0 and same.identity == first.identity
    assert len(hashed) == len(retrievers._model_files(copy))  # each file of the copy hashed once

    # fresh weights copied over it with the size and mtime of the old ones (cp -p): never the stale vectors
    other = tmp_path / "other"
    InfEmbedModel.from_backbone(str(write_backbone(tmp_path / "backbone-2", "bert", seed=1))).save_pretrained(other)
    weights = copy / "model.safetensors"
    stat = weights.stat()
    assert (other / "model.safetensors").stat().st_size == stat.st_size
    shutil.copyfile(other / "model.safetensors", weights)
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert (weights.stat().st_size, weights.stat().st_mtime_ns) == (stat.st_size, stat.st_mtime_ns)
    fresh = load_retriever(str(copy), cache_dir=cache)
    assert fresh.identity != first.identity
    evaluate(fresh, [corpus_data])
    assert fresh.passages_encoded == 90


def test_mteb_adapter_streams_mteb_batches(model_dir, monkeypatch, tmp_path, corpus_data):
    from mteb.types import PromptType

    retriever = load_retriever(str(model_dir), cache_dir=tmp_path / "cache")
    expected = retriever.encode_passages(corpus_data.corpus_texts)
    monkeypatch.setattr(retrievers, "PASSAGE_SLICE", 16)
    sizes = []
    encode = retriever.encode_passages
    retriever.encode_passages = lambda ps: sizes.append(len(ps)) or encode(ps)

    class Batches:  # a dataloader: re-iterable, one dict of 10 texts per batch
        iterations = 0

        def __iter__(self):
            Batches.iterations += 1
            for start in range(0, 90, 10):
                yield {"text": corpus_data.corpus_texts[start : start + 10], "id": corpus_data.corpus_ids[start:]}

    encoder = RetrieverEncoder(retriever)
    kwargs = {"task_metadata": None, "hf_split": "test", "hf_subset": "default", "prompt_type": PromptType.document}
    vectors = encoder.encode(Batches(), **kwargs)
    assert sizes == [16] * 5 + [10]  # never the whole corpus in one list
    np.testing.assert_allclose(vectors, expected, atol=1e-5, rtol=0)
    assert vectors.flags.writeable  # mteb turns it into a tensor
    again = RetrieverEncoder(load_retriever(str(model_dir), cache_dir=tmp_path / "cache")).encode(Batches(), **kwargs)
    np.testing.assert_array_equal(again, vectors)
    assert encoder.mteb_model_meta.revision == retriever.key[:12]
