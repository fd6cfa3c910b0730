"""Retrieval metrics under mteb's names.

nDCG@{1,5,10}, MAP@1000, Recall@100 and MRR@10 come from pytrec_eval (trec_eval's own code); MRR@10 is trec_eval's
`recip_rank` on the run cut to its top 10 (ties broken by document id, descending, as trec_eval and mteb do).
p-MRR follows mteb's `calculate_pmrr` / `rank_score` (FollowIR) and Robustness@10 mteb's `robustness_at_10`
(InstructIR): both are checked against mteb in the tests.
"""

from collections import defaultdict

import pytrec_eval

Run = dict[str, dict[str, float]]
Qrels = dict[str, dict[str, int]]

_MEASURES = {"ndcg_cut.1,5,10", "map_cut.1000", "recall.100"}
_NAMES = {
    "ndcg_cut_1": "ndcg_at_1",
    "ndcg_cut_5": "ndcg_at_5",
    "ndcg_cut_10": "ndcg_at_10",
    "map_cut_1000": "map_at_1000",
    "recall_100": "recall_at_100",
}


def ranked(docs: dict[str, float]) -> list[str]:
    """Document ids best first; ties broken by document id, descending (trec_eval's and mteb's order)."""
    return [d for d, _ in sorted(docs.items(), key=lambda x: (x[1], x[0]), reverse=True)]


def per_query_scores(qrels: Qrels, run: Run) -> dict[str, dict[str, float]]:
    """{query_id: {metric: value}} for the queries present in both qrels and run."""
    run = {q: {d: float(s) for d, s in docs.items()} for q, docs in run.items() if q in qrels}
    scores = pytrec_eval.RelevanceEvaluator(qrels, _MEASURES).evaluate(run)
    top10 = {q: {d: run[q][d] for d in ranked(docs)[:10]} for q, docs in run.items()}
    rr = pytrec_eval.RelevanceEvaluator(qrels, {"recip_rank"}).evaluate(top10)
    return {
        q: {**{name: values[key] for key, name in _NAMES.items()}, "mrr_at_10": rr[q]["recip_rank"]}
        for q, values in scores.items()
    }


def p_mrr(run: Run, qrel_diff: dict[str, list[str]]) -> float:
    """FollowIR p-MRR in [-1, 1]: > 0 when documents made non-relevant by the changed instruction move down.

    For each base query q and each document d in qrel_diff[q], compare d's rank in the run of `q-og` with its rank in
    the run of `q-changed` (a document missing from a run ranks after all of it); average per query, then over queries.
    """
    per_query = []
    for qid, docs in qrel_diff.items():
        og, new = run.get(f"{qid}-og"), run.get(f"{qid}-changed")
        if og is None or new is None or not docs:
            continue
        og_rank = {d: i + 1 for i, d in enumerate(ranked(og))}
        new_rank = {d: i + 1 for i, d in enumerate(ranked(new))}
        changes = []
        for d in docs:
            r_og, r_new = og_rank.get(d, len(og) + 1), new_rank.get(d, len(new) + 1)
            changes.append(r_new / r_og - 1 if r_og >= r_new else 1 - r_og / r_new)
        per_query.append(sum(changes) / len(changes))
    return sum(per_query) / len(per_query) if per_query else float("nan")


def robustness_at_10(scores: dict[str, dict[str, float]]) -> float:
    """InstructIR Robustness@10: the worst nDCG@10 over a base query's instruction variants (`<base>_<variant>` ids),
    averaged over base queries."""
    groups: dict[str, list[float]] = defaultdict(list)
    for qid, values in scores.items():
        groups[qid.split("_")[0]].append(values["ndcg_at_10"])
    return sum(min(v) for v in groups.values()) / len(groups)


def has_variants(query_ids: list[str]) -> bool:
    """True when query ids look like InstructIR's `<base>_<variant>`: every id has a variant, and at least two base
    ids each have two or more. Ordinary ids like `test_0`, `test_1` (one base) or `q_1`, `r_1` (one each) do not."""
    if not query_ids or not all("_" in q for q in query_ids):
        return False
    counts: dict[str, int] = defaultdict(int)
    for q in query_ids:
        counts[q.split("_")[0]] += 1
    return len(counts) >= 2 and all(n >= 2 for n in counts.values())


def evaluate_run(qrels: Qrels, run: Run, qrel_diff: dict[str, list[str]] | None = None) -> dict[str, float]:
    """Mean metrics over evaluated queries, plus p-MRR where qrel_diff is given and robustness_at_10 for variants."""
    scores = per_query_scores(qrels, run)
    if not scores:
        raise ValueError("no query of the run has qrels")
    result = {name: sum(s[name] for s in scores.values()) / len(scores) for name in next(iter(scores.values()))}
    if qrel_diff:
        result["p-MRR"] = p_mrr(run, qrel_diff)
    elif has_variants(list(scores)):
        result["robustness_at_10"] = robustness_at_10(scores)
    return result
