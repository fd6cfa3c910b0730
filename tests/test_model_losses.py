"""The InF-Embed objectives against brute-force references written here, from the model's own embeddings.

The reference re-encodes every (instruction, query) candidate of l_I itself, one unpadded text at a time, with the
pooling and the instruction-query attention written out below, and takes each InfoNCE with explicit loops.
"""

import itertools
import math

import pytest
import torch
from tiny_models import make_rows

from infembed_model import InfEmbedModel

TERM_SETS = [["P"], ["IQ"], ["I"], ["P", "I"], ["P", "IQ"], ["IQ", "I"], ["P", "IQ", "I"]]
TEMPLATE = "Instruct: {instruction}\nQuery: {query}"  # the documented default `query_template`

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def copies_rows() -> list[dict[str, str]]:
    """Rows whose triples repeat each other: row 1 reuses row 0's positive passage, row 2 its (instruction, query)."""
    rows = make_rows(4, seed=3)
    rows[1]["document_positive"] = rows[0]["document_positive"]
    rows[2]["query_positive"] = rows[0]["query_positive"]
    rows[2]["instruction_positive"] = rows[0]["instruction_positive"]
    return rows


BATCHES = {"distinct": lambda: make_rows(4, seed=2), "copies": copies_rows}


def triples_of(rows: list[dict[str, str]]) -> list[tuple[str, str, str]]:
    """The three (instruction, query, passage) triples of each row, written out independently of the collator."""
    out = []
    for r in rows:
        out += [
            (r["instruction_positive"], r["query_positive"], r["document_positive"]),
            (r["instruction_negative"], r["query_positive"], r["hard_negative_document_1"]),
            (r["instruction_positive"], r["query_negative"], r["hard_negative_document_2"]),
        ]
    return out


class ReferenceEncoder:
    """Encodes one text per backbone call (no padding at all), pooling and attention written out here."""

    def __init__(self, model: InfEmbedModel):
        self.model, self.hidden_cache = model, {}

    @torch.no_grad()
    def hidden(self, text: str) -> torch.Tensor:
        """[L, d] float64 last hidden states of one text."""
        if text not in self.hidden_cache:
            ids = self.model.tokenizer(text)["input_ids"]
            out = self.model.encoder(input_ids=torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=int))
            self.hidden_cache[text] = out.last_hidden_state[0].double()
        return self.hidden_cache[text]

    def pooled(self, text: str) -> torch.Tensor:
        h = self.hidden(text)
        vector = {"cls": h[0], "mean": h.mean(0), "last": h[-1]}[self.model.config.pooling]
        return vector / vector.norm()

    def concat_query(self, instruction: str, query: str) -> torch.Tensor:
        return self.pooled(TEMPLATE.format(instruction=instruction, query=query) if instruction else query)

    def attention_query(self, instruction: str, query: str) -> torch.Tensor:
        h_i, h_q = self.hidden(instruction), self.hidden(query)
        weights = torch.softmax(h_i @ h_q.T / math.sqrt(h_q.shape[1]), dim=1)  # every token of both is real
        vector = (weights @ h_q).mean(0)
        return vector / vector.norm()

    def query(self, combine: str, instruction: str, query: str) -> torch.Tensor:
        return (self.concat_query if combine == "concat" else self.attention_query)(instruction, query)


def sampled_instructions(batch: dict, tokenizer, triples: list[tuple[str, str, str]]) -> list[list[str]]:
    """For each triple, the instructions of its `concat` l_I negatives, recovered by matching token ids."""
    instructions = sorted({t[0] for t in triples})
    out = []
    for i, (_, query, _) in enumerate(triples):
        candidates = {
            tuple(tokenizer(TEMPLATE.format(instruction=other, query=query))["input_ids"]): other
            for other in instructions
        }
        row = []
        for index in batch["negative_query_index"][i].tolist():
            if index < 0:
                continue
            ids = batch["negative_query_input_ids"][index][batch["negative_query_attention_mask"][index].bool()]
            row.append(candidates[tuple(ids.tolist())])
        out.append(row)
    return out


def logsumexp(values: list[float]) -> float:
    top = max(values)
    return top + math.log(sum(math.exp(v - top) for v in values))


def reference_loss(triples, e, p, negatives, terms, mode, scale, mask_copies=True) -> float:
    """e, p: [N, d] model embeddings; negatives[i]: the l_I negative vectors (I_k, Q_i) of row i."""
    n = len(triples)

    def excluded(i: int, j: int) -> bool:
        same_pair = triples[i][:2] == triples[j][:2]
        return j == i or (mask_copies and (same_pair or triples[i][2] == triples[j][2]))

    total = 0.0
    for i in range(n):
        positive = scale * float(e[i] @ p[i])
        blocks = []
        if "P" in terms:
            blocks.append([scale * float(e[i] @ p[j]) for j in range(n) if not excluded(i, j)])
        if "IQ" in terms:
            blocks.append([scale * float(p[i] @ e[j]) for j in range(n) if not excluded(i, j)])
        if "I" in terms:
            blocks.append([scale * float(v @ p[i]) for v in negatives[i]])
        if mode == "multi":
            total += sum(logsumexp([positive, *negs]) - positive for negs in blocks)
        else:  # one softmax over the union; the positive appears once
            total += logsumexp([positive, *itertools.chain(*blocks)]) - positive
    return total / n


def instruction_negatives(reference, combine, batch, triples, mask_copies=True) -> list[list[torch.Tensor]]:
    if combine == "concat":
        if "negative_query_index" not in batch:  # no l_I: the collator samples nothing
            return [[] for _ in triples]
        chosen = sampled_instructions(batch, reference.model.tokenizer, triples)
        return [
            [reference.concat_query(other, t[1]) for other in chosen[i] if not (mask_copies and other == t[0])]
            for i, t in enumerate(triples)
        ]
    if not mask_copies:  # the public code: every other triple's instruction, copies included
        return [
            [reference.attention_query(other[0], t[1]) for k, other in enumerate(triples) if k != i]
            for i, t in enumerate(triples)
        ]
    if "negative_instruction_index" not in batch:
        return [[] for _ in triples]
    chosen = attention_instructions(batch, triples)
    return [[reference.attention_query(other, t[1]) for other in chosen[i]] for i, t in enumerate(triples)]


def attention_instructions(batch: dict, triples: list[tuple[str, str, str]]) -> list[list[str]]:
    """For each triple, the instructions of its `attention` l_I negatives: those of the triples the batch points at."""
    return [[triples[k][0] for k in row if k >= 0] for row in batch["negative_instruction_index"].tolist()]


@pytest.fixture(scope="module")
def build(backbone_dir):
    def make(combine: str, **overrides) -> InfEmbedModel:
        return InfEmbedModel.from_backbone(str(backbone_dir("bert")), combine=combine, **overrides).eval()

    return make


@pytest.fixture(scope="module")
def references(build):
    return {combine: ReferenceEncoder(build(combine)) for combine in ("concat", "attention")}


def run(model: InfEmbedModel, rows: list[dict]):
    batch = model.data_collator()(rows)
    with torch.no_grad():
        loss = model(**batch).loss.item()
        out = model(**batch, return_loss=False)
    return batch, loss, out.query_embeds.double(), out.passage_embeds.double()


@pytest.mark.parametrize("batch_kind", BATCHES)
@pytest.mark.parametrize("mode", ["multi", "uni"])
@pytest.mark.parametrize("terms", TERM_SETS, ids="+".join)
@pytest.mark.parametrize("combine", ["concat", "attention"])
def test_loss_equals_brute_force_reference(build, references, combine, terms, mode, batch_kind):
    model = build(combine, loss_terms=terms, loss_mode=mode)
    rows = BATCHES[batch_kind]()
    triples = triples_of(rows)
    batch, loss, e, p = run(model, rows)
    negatives = instruction_negatives(references[combine], combine, batch, triples)
    expected = reference_loss(triples, e, p, negatives, terms, mode, model.config.similarity_scale)
    assert loss == pytest.approx(expected, abs=1e-5)


@pytest.mark.parametrize("combine", ["concat", "attention"])
def test_training_embeddings_match_unpadded_reference(build, references, combine):
    """The batch is padded; the reference is not: padding is masked in pooling and in the cross-attention."""
    triples = triples_of(copies_rows())
    _, _, e, p = run(build(combine), copies_rows())
    reference = references[combine]
    assert torch.allclose(e, torch.stack([reference.query(combine, i, q) for i, q, _ in triples]), atol=1e-5)
    assert torch.allclose(p, torch.stack([reference.pooled(t[2]) for t in triples]), atol=1e-5)


@pytest.mark.parametrize("mode", ["multi", "uni"])
@pytest.mark.parametrize("combine", ["concat", "attention"])
def test_copies_of_the_positive_are_masked(build, references, combine, mode):
    """Two rows share a positive passage and two an (instruction, query): those candidates are not negatives."""
    terms = ["P", "IQ", "I"]
    model = build(combine, loss_terms=terms, loss_mode=mode)
    rows = copies_rows()
    triples = triples_of(rows)
    assert len({t[2] for t in triples}) < len(triples) and len({t[:2] for t in triples}) < len(triples)
    batch, loss, e, p = run(model, rows)
    scale = model.config.similarity_scale
    masked = reference_loss(
        triples, e, p, instruction_negatives(references[combine], combine, batch, triples), terms, mode, scale
    )
    # The public code's behaviour: copies of the positive count as negatives.
    unmasked = reference_loss(
        triples,
        e,
        p,
        instruction_negatives(references[combine], combine, batch, triples, mask_copies=False),
        terms,
        mode,
        scale,
        mask_copies=False,
    )
    assert loss == pytest.approx(masked, abs=1e-5)
    assert abs(loss - unmasked) > 1e-2


@pytest.mark.parametrize("kind", ["bert", "modernbert", "qwen2"])
@pytest.mark.parametrize("combine", ["concat", "attention"])
def test_gradients_reach_every_backbone_parameter(backbone_dir, kind, combine):
    # Every parameter, so DistributedDataParallel never waits for one: BERT's own pooler is dropped.
    model = InfEmbedModel.from_backbone(str(backbone_dir(kind)), combine=combine, loss_terms=["P", "IQ", "I"])
    model.train()
    model(**model.data_collator()(make_rows(2))).loss.backward()
    grads = {name: param.grad for name, param in model.encoder.named_parameters()}
    missing = [name for name, grad in grads.items() if grad is None or not grad.abs().sum() > 0]
    assert len(grads) > 10 and not missing, missing
    assert model.get_input_embeddings().weight.grad.abs().sum() > 0


@pytest.mark.parametrize("combine", ["concat", "attention"])
def test_instruction_negatives_are_sampled_distinct_other_and_reproducible(build, combine):
    """Both combines draw K distinct other instructions: attention no longer scores all N x N pairs."""
    model = build(combine, num_instruction_negatives=5)
    rows = copies_rows()
    triples = triples_of(rows)
    batch = model.data_collator()(rows)
    if combine == "concat":
        chosen = sampled_instructions(batch, model.tokenizer, triples)
    else:
        chosen = attention_instructions(batch, triples)
        assert batch["negative_instruction_index"].shape == (len(triples), 5)
    distinct = {t[0] for t in triples}
    for (instruction, _, _), negatives in zip(triples, chosen, strict=True):
        assert instruction not in negatives
        assert len(set(negatives)) == len(negatives) == min(5, len(distinct) - 1)
        assert set(negatives) <= distinct
    again = build(combine, num_instruction_negatives=5).data_collator()(rows)  # a fresh collator, as another process
    for key in batch:
        assert torch.equal(batch[key], again[key])


def test_concat_batch_with_a_single_instruction_trains(build):
    """A task-level instruction shared by every row leaves no other instruction to sample: l_I has no negatives."""
    rows = make_rows(2)
    for row in rows:
        row["instruction_positive"] = row["instruction_negative"] = "w1 w2"
    losses = {}
    for terms in (["P", "I"], ["P"]):
        model = build("concat", loss_terms=terms)
        with torch.no_grad():
            losses["+".join(terms)] = model(**model.data_collator()(rows)).loss.item()
    assert losses["P+I"] == pytest.approx(losses["P"], abs=1e-6)  # l_I has only its positive: it adds 0
