"""Metrics: p-MRR and Robustness@10 equal mteb's, pytrec_eval metrics equal mteb's, and hand-checked values."""

import math
import random

import numpy as np
import pytest
from mteb._evaluators.retrieval_metrics import (
    calculate_retrieval_scores,
    evaluate_p_mrr_change,
)
from mteb._evaluators.retrieval_metrics import robustness_at_10 as mteb_robustness

from infembed_model.eval_data import EvalDataset
from infembed_model.metrics import evaluate_run, p_mrr, per_query_scores, robustness_at_10
from infembed_model.retrievers import DenseRetriever


def random_followir(seed: int):
    rng = random.Random(seed)
    docs = [f"d{i}" for i in range(rng.randint(5, 30))]
    qrels, run, diff = {}, {}, {}
    for q in range(rng.randint(1, 8)):
        changed = rng.sample(docs, rng.randint(1, 4))
        diff[f"q{q}"] = changed
        for suffix in ("og", "changed"):
            qid = f"q{q}-{suffix}"
            qrels[qid] = {d: rng.choice([0, 1, 2]) for d in rng.sample(docs, 5)}
            retrieved = rng.sample(docs, rng.randint(1, len(docs)))  # some changed docs are missing from the run
            # coarse scores so that ties occur and the tie-break by doc id matters
            run[qid] = {d: float(rng.randint(0, 4)) for d in retrieved}
    return qrels, run, diff


@pytest.mark.parametrize("seed", range(40))
def test_p_mrr_equals_mteb(seed):
    qrels, run, diff = random_followir(seed)
    theirs = evaluate_p_mrr_change(qrels, run, diff, [1, 10])["p-MRR"]
    assert abs(p_mrr(run, diff) - theirs) < 1e-9


@pytest.mark.parametrize("seed", range(10))
def test_pytrec_metrics_and_robustness_equal_mteb(seed):
    rng = np.random.default_rng(seed)
    docs = [f"d{i}" for i in range(40)]
    qrels = {f"b{b}_{v}": {d: int(rng.integers(0, 3)) for d in rng.choice(docs, 6)} for b in range(4) for v in range(3)}
    run = {q: {d: float(rng.integers(0, 20)) for d in docs} for q in qrels}
    ours = per_query_scores(qrels, run)
    theirs = calculate_retrieval_scores(run, qrels, [1, 5, 10, 100, 1000])
    mean = evaluate_run(qrels, run)
    for q, values in ours.items():  # mteb's unrounded per-query trec_eval values
        for name, key in [("ndcg_at_1", "ndcg_cut_1"), ("ndcg_at_10", "ndcg_cut_10"), ("map_at_1000", "map_cut_1000")]:
            assert values[name] == pytest.approx(theirs.all_scores[q][key], abs=1e-12)
        assert values["recall_at_100"] == pytest.approx(theirs.all_scores[q]["recall_100"], abs=1e-12)
    assert mean["ndcg_at_10"] == pytest.approx(theirs.ndcg["NDCG@10"], abs=6e-6)  # mteb rounds to 5 digits
    assert mean["mrr_at_10"] == pytest.approx(theirs.mrr["MRR@10"], abs=1e-9)
    assert mean["robustness_at_10"] == pytest.approx(mteb_robustness(qrels, run, theirs.all_scores), abs=1e-12)
    assert robustness_at_10(ours) == mean["robustness_at_10"]


def one_hot_retriever():
    """Texts are 'v<i>' (a unit vector on axis i) or 'mix': passage texts and query texts map to fixed vectors."""
    vectors = {
        "a": [1, 0, 0],
        "b": [0.8, 0.6, 0],
        "c": [0, 1, 0],
        "d": [0, 0.6, 0.8],
        "e": [0, 0, 1],
        "x": [1, 0, 0],
        "y": [0, 1, 0],
        "z": [0, 0, 1],
    }

    def enc(texts):
        return np.array([vectors[t] for t in texts], dtype=np.float32)

    return DenseRetriever("toy", "toy", "none", lambda qs, ins: enc(qs), enc)


def test_hand_checked_toy_dataset():
    # 5 docs a..e, 3 queries: x=(1,0,0), y=(0,1,0), z=(0,0,1). Inner products give the rankings
    #   x: a 1.0, b 0.8, c 0, d 0, e 0 (ties c,d,e broken by id descending: e, d, c)  -> a b e d c
    #   y: c 1.0, b 0.6, d 0.6 (tie -> d before b), a 0, e 0 (-> e before a)          -> c d b e a
    #   z: e 1.0, d 0.8, a/b/c 0 (-> c b a)                                             -> e d c b a
    data = EvalDataset(
        name="toy",
        corpus_ids=list("abcde"),
        corpus_texts=list("abcde"),
        query_ids=["x", "y", "z"],
        queries=["x", "y", "z"],
        instructions=["", "", ""],
        qrels={"x": {"b": 1}, "y": {"a": 1, "c": 1}, "z": {"c": 2, "e": 1}},
    )
    run = one_hot_retriever().search(data, use_instructions=True)
    assert [d for d, _ in sorted(run["y"].items(), key=lambda kv: (kv[1], kv[0]), reverse=True)] == list("cdbea")
    m = evaluate_run(data.qrels, run)
    log2 = math.log2
    # nDCG@1 (trec_eval's gain is the relevance itself): x 0 (a not relevant); y 1 (c); z: e has gain 1 where the
    # ideal top-1, c, has 2 -> 1/2
    assert m["ndcg_at_1"] == pytest.approx((0 + 1 + 1 / 2) / 3)
    # nDCG@5 (discount 1/log2(rank+1)):
    #   x: b at rank 2 -> (1/log2 3) / 1
    #   y: c rank 1, a rank 5 -> (1 + 1/log2 6) / (1 + 1/log2 3)
    #   z: e rank 1 (rel 1), c rank 3 (rel 2) -> (1 + 2/log2 4) / (2 + 1/log2 3)
    x = 1 / log2(3)
    y = (1 + 1 / log2(6)) / (1 + 1 / log2(3))
    z = (1 + 2 / log2(4)) / (2 + 1 / log2(3))
    assert m["ndcg_at_5"] == pytest.approx((x + y + z) / 3)
    assert m["ndcg_at_10"] == pytest.approx((x + y + z) / 3)
    # MRR@10: x 1/2, y 1, z 1;  MAP: x 1/2, y (1 + 2/5)/2, z (1 + 2/3)/2;  every relevant doc is in the top 100
    assert m["mrr_at_10"] == pytest.approx((0.5 + 1 + 1) / 3)
    assert m["map_at_1000"] == pytest.approx((0.5 + 0.7 + 5 / 6) / 3)
    assert m["recall_at_100"] == 1.0


def test_p_mrr_hand_checked():
    # q1: d2 at rank 2 under og, rank 4 under changed -> 1 - 2/4 = 0.5 (moved down: good)
    # q2: d1 at rank 3 under og, rank 1 under changed -> 1/3 - 1 = -2/3 (moved up: bad); d9 missing from both runs
    #     -> rank len+1 in each = 4 and 4 -> 0.  q2 mean = -1/3.  p-MRR = (0.5 - 1/3) / 2
    run = {
        "q1-og": {"d1": 4.0, "d2": 3.0, "d3": 2.0, "d4": 1.0},
        "q1-changed": {"d1": 4.0, "d3": 3.0, "d4": 2.0, "d2": 1.0},
        "q2-og": {"d3": 3.0, "d2": 2.0, "d1": 1.0},
        "q2-changed": {"d1": 3.0, "d2": 2.0, "d3": 1.0},
    }
    assert p_mrr(run, {"q1": ["d2"], "q2": ["d1", "d9"]}) == pytest.approx((0.5 - 1 / 3) / 2)


def test_robustness_needs_several_bases_with_several_variants():
    from infembed_model.metrics import has_variants

    assert has_variants(["b1_0", "b1_1", "b2_0", "b2_1", "b2_2"])  # InstructIR: two bases, each with variants
    assert not has_variants(["test_0", "test_1", "test_2"])  # one base: ordinary ids
    assert not has_variants(["a_1", "b_1", "c_1", "c_2"])  # a and b have a single "variant"
    assert not has_variants(["q_0", "q_1", "r"])
    qrels = {f"test_{i}": {"d1": 1} for i in range(3)}
    run = {q: {"d1": 1.0, "d2": 0.5} for q in qrels}
    assert "robustness_at_10" not in evaluate_run(qrels, run)
