"""InF-Embed: an instruction-aware bi-encoder over any transformers backbone, trained with the InF-IR objectives.

This file and `configuration_infembed.py` travel with every saved model (`trust_remote_code=True`), so they import
nothing but torch and transformers.

Shapes: B rows of InF-IR make N = 3B triples (instruction I, query Q, passage P): (I+, Q+, P+), (I-, Q+, HN1) and
(I+, Q-, HN2). d is the hidden size, L a sequence length, K the number of sampled instruction negatives.
"""

import hashlib
import json
import math
import os
import random
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
from transformers import AutoConfig, AutoModel, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase
from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES, MODEL_FOR_MASKED_LM_MAPPING_NAMES
from transformers.utils import ModelOutput

from .configuration_infembed import InfEmbedConfig

# Texts tokenized at a time by `encode_queries`/`encode_passages`, in batches: enough to sort by length, few enough
# that memory holds the output vectors and not the whole corpus's tokens.
ENCODE_CHUNK_BATCHES = 64
# What `forward` was called without: the two ways to call it, and where embedding with instructions lives.
FORWARD_INPUTS = (
    "InfEmbedModel.forward takes a training batch from model.data_collator() (query_input_ids, passage_input_ids, "
    "pair_ids, ...) or tokenized texts (input_ids, attention_mask), embedded one text per row; to embed queries "
    "with their instructions use model.encode_queries(queries, instructions) and model.encode_passages(passages), "
    "or sentence-transformers (see the model card)"
)
# The seven fields of an InF-IR row (infir_dataset.schema), copied: this file may import only torch and transformers.
RECORD_FIELDS = (
    "query_positive",
    "instruction_positive",
    "document_positive",
    "query_negative",
    "instruction_negative",
    "hard_negative_document_1",
    "hard_negative_document_2",
)


# ----------------------------------------------------------------------------------------------------------------------
# Pooling and instruction-query attention
# ----------------------------------------------------------------------------------------------------------------------


def pool(hidden: torch.Tensor, mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """[n, L, d] hidden states and [n, L] attention mask -> [n, d]."""
    if pooling == "cls":
        return hidden[:, 0]
    if pooling == "last":
        # Index of the last real token, whichever side the padding is on.
        last = mask.shape[1] - 1 - mask.flip(1).argmax(1)
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
    weights = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)


def instruction_query_attention(
    h_instr: torch.Tensor, mask_instr: torch.Tensor, h_query: torch.Tensor, mask_query: torch.Tensor
) -> torch.Tensor:
    """Parameter-free cross-attention of instruction tokens over query tokens, averaged over instruction tokens.

    h_instr [..., Li, d], mask_instr [..., Li], h_query [..., Lq, d], mask_query [..., Lq] -> [..., d].
    Leading dimensions broadcast, so [n, 1, Li, d] against [1, m, Lq, d] scores every instruction-query pair.
    Padding is masked identically in training and inference: padded query tokens get no attention and padded
    instruction tokens do not enter the mean.
    """
    scores = h_instr @ h_query.transpose(-1, -2) / math.sqrt(h_query.shape[-1])  # [..., Li, Lq]
    scores = scores.masked_fill(mask_query.unsqueeze(-2) == 0, float("-inf"))
    z = scores.softmax(-1) @ h_query  # [..., Li, d]
    weights = mask_instr.unsqueeze(-1).to(z.dtype)
    return (z * weights).sum(-2) / weights.sum(-2).clamp(min=1e-9)


# ----------------------------------------------------------------------------------------------------------------------
# Contrastive objectives. Each block gives, per query row, candidate logits [N, C], which candidates count
# [N, C] and the column of the positive [N]; `multi` sums one InfoNCE per block, `uni` joins the blocks.
# ----------------------------------------------------------------------------------------------------------------------


@dataclass
class ScoreBlock:
    logits: torch.Tensor  # [N, C]
    valid: torch.Tensor  # [N, C] bool: False for copies of the positive and padding
    positive: torch.Tensor  # [N] column of the positive


def info_nce(block: ScoreBlock) -> torch.Tensor:
    """Mean cross-entropy of each row towards its positive, over its valid candidates only."""
    return F.cross_entropy(block.logits.masked_fill(~block.valid, float("-inf")), block.positive)


def copies_of_positive(pair_ids: torch.Tensor, passage_ids: torch.Tensor) -> torch.Tensor:
    """[N, N] bool: candidate j is a copy of row i's positive (same instruction and query, or same passage), j != i.

    The public code counted such copies as negatives; here they are masked out.
    """
    same = (pair_ids[:, None] == pair_ids[None, :]) | (passage_ids[:, None] == passage_ids[None, :])
    return same & ~torch.eye(len(pair_ids), dtype=torch.bool, device=pair_ids.device)


def passage_block(queries: torch.Tensor, passages: torch.Tensor, copies: torch.Tensor, scale: float) -> ScoreBlock:
    """l_P: each (instruction, query) e_i [N, d] against every passage p_j [N, d]; positive p_i."""
    positive = torch.arange(len(queries), device=queries.device)
    return ScoreBlock(scale * queries @ passages.T, ~copies, positive)


def pair_block(queries: torch.Tensor, passages: torch.Tensor, copies: torch.Tensor, scale: float) -> ScoreBlock:
    """l_IQ: each passage p_i [N, d] against every (instruction, query) e_j [N, d]; positive e_i."""
    positive = torch.arange(len(queries), device=queries.device)
    return ScoreBlock(scale * passages @ queries.T, ~copies, positive)


def combine_losses(blocks: list[ScoreBlock], mode: str) -> torch.Tensor:
    """`multi`: sum of one InfoNCE per block. `uni`: one softmax over the union of the blocks' candidates.

    In `uni` the positive keeps its column in the first block; its duplicates in later blocks (the same
    score s(e_i, p_i)) are masked, so it is counted once.
    """
    if mode == "multi":
        return sum(info_nce(block) for block in blocks)
    first, rest = blocks[0], blocks[1:]
    logits, valid = [first.logits], [first.valid]
    for block in rest:
        not_positive = F.one_hot(block.positive, block.logits.shape[1]) == 0
        logits.append(block.logits)
        valid.append(block.valid & not_positive)
    return info_nce(ScoreBlock(torch.cat(logits, 1), torch.cat(valid, 1), first.positive))


def gather(tensor: torch.Tensor) -> torch.Tensor:
    """All-gather along dim 0 across processes; only this process's slice keeps its gradient. [n, ...] -> [W*n, ...]"""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return tensor
    parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, tensor.detach().contiguous())
    parts[dist.get_rank()] = tensor
    return torch.cat(parts)


# ----------------------------------------------------------------------------------------------------------------------
# Data collator: InF-IR rows -> a training batch
# ----------------------------------------------------------------------------------------------------------------------


def text_id(*texts: str) -> int:
    """A stable 63-bit id of a text (or a tuple of texts), to find copies across the batch and across processes."""
    digest = hashlib.blake2b("\x1f".join(texts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def format_query(template: str, query: str, instruction: str | None) -> str:
    """The `concat` input: the template filled with instruction and query, or the query alone without instruction."""
    return template.format(instruction=instruction, query=query) if instruction else query


def _instruction_span(template: str, query: str, instruction: str) -> tuple[int, int]:
    """Character span of the instruction in `format_query(template, query, instruction)`."""
    head = template.split("{instruction}", 1)[0]
    start = len(head.format(query=query))
    return start, start + len(instruction)


def tokenize_queries(
    tokenizer: PreTrainedTokenizerBase,
    template: str,
    queries: list[str],
    instructions: list[str],
    max_length: int,
) -> list[list[int]]:
    """Token ids of each `format_query` text, at most `max_length`, cut from the end of the instruction, never from
    the query: a long instruction would otherwise push the query out of the window. The query (with the template)
    keeps its tokens up to the limit and the instruction gets the rest; a query too long even alone is encoded alone
    and cut as usual."""
    texts = [format_query(template, q, i) for q, i in zip(queries, instructions, strict=True)]
    encoded = tokenizer(texts, return_offsets_mapping=True, verbose=False)
    out = []
    for n, (ids, offsets) in enumerate(zip(encoded["input_ids"], encoded["offset_mapping"], strict=True)):
        excess = len(ids) - max_length
        if excess > 0 and instructions[n]:
            start, end = _instruction_span(template, queries[n], instructions[n])
            inside = [k for k, (a, b) in enumerate(offsets) if b > a and a >= start and b <= end]
            if len(inside) >= excess:
                dropped = set(inside[len(inside) - excess :])
                ids = [token for k, token in enumerate(ids) if k not in dropped]
                excess = 0
        if excess > 0:
            ids = tokenizer(queries[n], truncation=True, max_length=max_length)["input_ids"]
        out.append(ids)
    return out


def sample_instruction_negatives(instructions: list[str], queries: list[str], k: int) -> list[list[str]]:
    """Up to k distinct instructions of the batch other than each triple's own, with a seed taken from the batch's
    content, so a batch always gets the same negatives, whether resumed from a checkpoint or split over processes.
    Each distinct instruction is one candidate, however many triples carry it (I+ is in two of each row's three)."""
    rng = random.Random(text_id(*instructions, *queries))
    distinct = sorted(set(instructions))
    negatives = []
    for instruction in instructions:
        others = [other for other in distinct if other != instruction]
        negatives.append(rng.sample(others, min(k, len(others))))
    return negatives


def expand_rows(rows: list[dict]) -> list[tuple[str, str, str]]:
    """Each InF-IR row -> its three (instruction, query, passage) triples, which are each other's hard negatives."""
    triples = []
    for index, row in enumerate(rows):
        for field in RECORD_FIELDS:
            if not isinstance(row.get(field), str):
                raise ValueError(f"row {index}: field {field!r} must be a string, got {type(row.get(field)).__name__}")
        triples += [
            (row["instruction_positive"], row["query_positive"], row["document_positive"]),
            (row["instruction_negative"], row["query_positive"], row["hard_negative_document_1"]),
            (row["instruction_positive"], row["query_negative"], row["hard_negative_document_2"]),
        ]
    return triples


@dataclass
class InfEmbedCollator:
    """Collates InF-IR rows (the seven public string fields) into the batch `InfEmbedModel.forward` trains on.

    With the `I` objective each triple also gets up to K other instructions of the batch as negatives (see
    `sample_instruction_negatives`): with `concat` as K more (instruction, query) texts, with `attention` as the
    index [N, K] of a triple that carries each of them.
    """

    tokenizer: PreTrainedTokenizerBase
    config: InfEmbedConfig

    def __call__(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        triples = expand_rows(rows)
        instructions, queries, passages = (list(column) for column in zip(*triples, strict=True))
        cfg = self.config
        if cfg.combine == "attention":
            instructions = [i or cfg.default_instruction for i in instructions]
        batch = {
            **self._tokenize("passage", passages, cfg.passage_max_length),
            "pair_ids": torch.tensor([text_id(i, q) for i, q in zip(instructions, queries, strict=True)]),
            "passage_ids": torch.tensor([text_id(p) for p in passages]),
            "instruction_ids": torch.tensor([text_id(i) for i in instructions]),
        }
        negatives = sample_instruction_negatives(instructions, queries, cfg.num_instruction_negatives)
        if cfg.combine == "attention":
            batch |= self._tokenize("query", queries, cfg.query_max_length)
            batch |= self._tokenize("instruction", instructions, cfg.query_max_length)
            if "I" in cfg.loss_terms:
                carrier = {}
                for n, instruction in enumerate(instructions):
                    carrier.setdefault(instruction, n)
                batch["negative_instruction_index"] = self._index([[carrier[i] for i in row] for row in negatives])
            return batch
        batch |= self._pad("query", self._query_ids(queries, instructions))
        if "I" in cfg.loss_terms:
            pairs = [(query, other) for query, row in zip(queries, negatives, strict=True) for other in row]
            batch["negative_query_index"] = self._index(negatives, consecutive=True)
            if pairs:  # none when the whole batch shares one instruction
                batch |= self._pad("negative_query", self._query_ids(*map(list, zip(*pairs, strict=True))))
        return batch

    def _query_ids(self, queries: list[str], instructions: list[str]) -> list[list[int]]:
        cfg = self.config
        return tokenize_queries(self.tokenizer, cfg.query_template, queries, instructions, cfg.query_max_length)

    def _tokenize(self, prefix: str, texts: list[str], max_length: int) -> dict[str, torch.Tensor]:
        return self._pad(prefix, self.tokenizer(texts, truncation=True, max_length=max_length)["input_ids"])

    def _pad(self, prefix: str, ids: list[list[int]]) -> dict[str, torch.Tensor]:
        tokens = self.tokenizer.pad({"input_ids": ids}, return_tensors="pt")
        return {f"{prefix}_input_ids": tokens["input_ids"], f"{prefix}_attention_mask": tokens["attention_mask"]}

    def _index(self, rows: list[list], consecutive: bool = False) -> torch.Tensor:
        """[N, K] indices, -1 where a row has fewer than K; `consecutive` numbers the entries in order instead."""
        k, index, counter = self.config.num_instruction_negatives, [], 0
        for row in rows:
            values = list(range(counter, counter + len(row))) if consecutive else list(row)
            counter += len(row)
            index.append(values + [-1] * (k - len(row)))
        return torch.tensor(index, dtype=torch.long).reshape(len(rows), k)


# ----------------------------------------------------------------------------------------------------------------------
# The model
# ----------------------------------------------------------------------------------------------------------------------


@dataclass
class InfEmbedOutput(ModelOutput):
    loss: torch.FloatTensor | None = None
    query_embeds: torch.FloatTensor | None = None  # [N, d] (instruction, query) embeddings of this process
    passage_embeds: torch.FloatTensor | None = None  # [N, d]
    embeddings: torch.FloatTensor | None = None  # [n, d] `forward(input_ids, attention_mask)`: one vector per text


class InfEmbedPreTrainedModel(PreTrainedModel):
    config_class = InfEmbedConfig
    base_model_prefix = "encoder"
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_flex_attn = True
    # The loss is a mean over the batch; Trainer must not pass num_items_in_batch.
    accepts_loss_kwargs = False
    # Checkpoints of BERT-like backbones carry a pooler that InF-Embed drops (see `_without_pooler`).
    _keys_to_ignore_on_load_unexpected = [r"encoder\.pooler\."]


class InfEmbedModel(InfEmbedPreTrainedModel):
    """Embeds (instruction, query) pairs and passages into one space; `forward` on a collated batch gives the loss."""

    def __init__(self, config: InfEmbedConfig):
        super().__init__(config)
        self.encoder = _without_pooler(AutoModel.from_config(config.encoder_config))
        self._tokenizer = None
        self.post_init()

    @classmethod
    def from_backbone(
        cls,
        name_or_path: str,
        *,
        dtype: torch.dtype | str | None = None,
        attn_implementation: str | None = None,
        **config_overrides,
    ) -> "InfEmbedModel":
        """A new InF-Embed model around a pretrained backbone (Hub id or folder), keeping the backbone's tokenizer.

        Decoder backbones default to last-token pooling and stay causal (unless `bidirectional=True`), their
        tokenizer made to end every text with the end-of-sequence token that is pooled; encoders pool the mean.
        Weights load in float32 unless `dtype` says otherwise: mixed precision is `TrainingArguments`' business.
        """
        backbone_config = AutoConfig.from_pretrained(name_or_path)
        model_type = backbone_config.model_type
        is_decoder = (
            model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES and model_type not in MODEL_FOR_MASKED_LM_MAPPING_NAMES
        )
        config_overrides.setdefault("pooling", "last" if is_decoder else "mean")
        tokenizer = AutoTokenizer.from_pretrained(name_or_path)
        if tokenizer.pad_token is None:  # decoder tokenizers often have none
            tokenizer.pad_token = tokenizer.eos_token
        if is_decoder and config_overrides["pooling"] == "last":
            _append_eos(tokenizer)
        config = InfEmbedConfig(encoder_config=backbone_config, pad_token_id=tokenizer.pad_token_id, **config_overrides)
        if hasattr(config.encoder_config, "use_cache"):
            config.encoder_config.use_cache = False
        with torch.device("meta"):  # the wrapper's own random encoder would only be thrown away
            model = cls(config)
        model.encoder = _without_pooler(
            AutoModel.from_pretrained(
                name_or_path,
                config=config.encoder_config,
                dtype=dtype or torch.float32,
                attn_implementation=attn_implementation,
            )
        )
        model.tokenizer = tokenizer
        return model

    # -- tokenizer: found in the model's own folder ---------------------------------------------------------------

    @property
    def tokenizer(self) -> PreTrainedTokenizerBase:
        if self._tokenizer is None:
            # This code already runs from the model's folder, so reading that folder's tokenizer needs no new trust.
            self._tokenizer = AutoTokenizer.from_pretrained(self.name_or_path, trust_remote_code=True)
        return self._tokenizer

    @tokenizer.setter
    def tokenizer(self, tokenizer: PreTrainedTokenizerBase) -> None:
        self._tokenizer = tokenizer

    def data_collator(self) -> InfEmbedCollator:
        """The collator for `transformers.Trainer` (use it with `remove_unused_columns=False`)."""
        return InfEmbedCollator(self.tokenizer, self.config)

    def get_input_embeddings(self):
        return self.encoder.get_input_embeddings()

    def set_input_embeddings(self, value):
        self.encoder.set_input_embeddings(value)

    # -- embeddings -----------------------------------------------------------------------------------------------

    def _hidden(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """[n, L] -> [n, L, d] last hidden states of the backbone."""
        return self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

    def _finish(self, embeddings: torch.Tensor) -> torch.Tensor:
        return F.normalize(embeddings, dim=-1) if self.config.normalize else embeddings

    def embed(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """One sequence per row -> [n, d] pooled (and normalised) embedding: passages, and `concat` queries.

        This is also the method sentence-transformers calls (see `sentence_bert_config.json`).
        """
        return self._finish(pool(self._hidden(input_ids, attention_mask), attention_mask, self.config.pooling))

    def embed_attention(
        self,
        instruction_input_ids: torch.Tensor,
        instruction_attention_mask: torch.Tensor,
        query_input_ids: torch.Tensor,
        query_attention_mask: torch.Tensor,
    ) -> torch.Tensor:
        """`attention` mode: row i's instruction attends over row i's query -> [n, d]."""
        h_instr = self._hidden(instruction_input_ids, instruction_attention_mask)
        h_query = self._hidden(query_input_ids, query_attention_mask)
        return self._finish(
            instruction_query_attention(h_instr, instruction_attention_mask, h_query, query_attention_mask)
        )

    # -- training -------------------------------------------------------------------------------------------------

    def forward(
        self,
        query_input_ids: torch.Tensor | None = None,
        query_attention_mask: torch.Tensor | None = None,
        passage_input_ids: torch.Tensor | None = None,
        passage_attention_mask: torch.Tensor | None = None,
        pair_ids: torch.Tensor | None = None,
        passage_ids: torch.Tensor | None = None,
        instruction_ids: torch.Tensor | None = None,
        instruction_input_ids: torch.Tensor | None = None,
        instruction_attention_mask: torch.Tensor | None = None,
        negative_query_input_ids: torch.Tensor | None = None,
        negative_query_attention_mask: torch.Tensor | None = None,
        negative_query_index: torch.Tensor | None = None,
        negative_instruction_index: torch.Tensor | None = None,
        return_loss: bool = True,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
    ) -> InfEmbedOutput:
        """A collated batch of N triples (see `InfEmbedCollator`) -> the contrastive loss and the embeddings.

        The loss is taken over the global batch of all processes: embeddings are gathered, each process keeps the
        gradient of its own part, and the loss is scaled so that DDP's gradient mean is the exact global gradient.

        Called as a plain transformers model instead, on tokenized texts (`input_ids`, `attention_mask`, as
        `pipeline("feature-extraction")` does), it returns `embeddings` [n, d]: each text embedded as one sequence,
        the vectors `encode_passages` gives (and, with `concat`, those of `encode_queries` for a query text already
        formatted with `query_template`).
        """
        if input_ids is not None:
            return self._forward_texts(input_ids, attention_mask, token_type_ids, query_input_ids, passage_input_ids)
        if query_input_ids is None or passage_input_ids is None or pair_ids is None:
            raise ValueError(FORWARD_INPUTS)
        cfg = self.config
        passages = self.embed(passage_input_ids, passage_attention_mask)  # [N, d]
        if cfg.combine == "attention":
            h_instr = self._hidden(instruction_input_ids, instruction_attention_mask)  # [N, Li, d]
            h_query = self._hidden(query_input_ids, query_attention_mask)  # [N, Lq, d]
            queries = self._finish(
                instruction_query_attention(h_instr, instruction_attention_mask, h_query, query_attention_mask)
            )
        else:
            queries = self.embed(query_input_ids, query_attention_mask)  # [N, d]
        if not return_loss:
            return InfEmbedOutput(query_embeds=queries, passage_embeds=passages)

        blocks = []
        all_queries, all_passages = gather(queries), gather(passages)
        copies = copies_of_positive(gather(pair_ids), gather(passage_ids))
        if "P" in cfg.loss_terms:
            blocks.append(passage_block(all_queries, all_passages, copies, cfg.similarity_scale))
        if "IQ" in cfg.loss_terms:
            blocks.append(pair_block(all_queries, all_passages, copies, cfg.similarity_scale))
        if "I" in cfg.loss_terms:
            if cfg.combine == "attention":
                local = self._instruction_block_attention(
                    h_instr,
                    instruction_attention_mask,
                    h_query,
                    query_attention_mask,
                    passages,
                    negative_instruction_index,
                )
            else:
                local = self._instruction_block_concat(
                    queries, passages, negative_query_input_ids, negative_query_attention_mask, negative_query_index
                )
            blocks.append(ScoreBlock(gather(local.logits), gather(local.valid), gather(local.positive)))

        loss = combine_losses(blocks, cfg.loss_mode)
        world_size = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
        # Same value on every process, gradient x world_size: DDP's mean over processes then gives the exact
        # gradient of the global loss, each process contributing through the part it kept the gradient of.
        loss = loss * world_size - loss.detach() * (world_size - 1)
        return InfEmbedOutput(loss=loss, query_embeds=queries, passage_embeds=passages)

    def _forward_texts(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None,
        token_type_ids: torch.Tensor | None,
        *training_inputs: torch.Tensor | None,
    ) -> InfEmbedOutput:
        """`forward(input_ids, attention_mask)`: one embedding per tokenized text. -> `embeddings` [n, d]"""
        if any(t is not None for t in training_inputs):
            raise ValueError("forward takes either input_ids (texts to embed) or a training batch, not both")
        if token_type_ids is not None and bool(token_type_ids.ne(0).any()):
            raise ValueError("InF-Embed embeds one text per row, not text pairs (token_type_ids other than 0)")
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        return InfEmbedOutput(embeddings=self.embed(input_ids, attention_mask))

    def _instruction_block_concat(
        self,
        queries: torch.Tensor,
        passages: torch.Tensor,
        negative_input_ids: torch.Tensor,
        negative_attention_mask: torch.Tensor,
        negative_index: torch.Tensor,
    ) -> ScoreBlock:
        """l_I with `concat`: column 0 is s(e_i, p_i), columns 1..K the sampled (I_k, Q_i) against p_i. -> [N, 1+K]"""
        valid = negative_index >= 0  # [N, K]
        if negative_input_ids is None:  # no other instruction in the batch: every negative is masked
            negative_scores = torch.zeros(valid.shape, dtype=passages.dtype, device=passages.device)
        else:
            negatives = self.embed(negative_input_ids, negative_attention_mask)  # [M, d]
            per_row = negatives[negative_index.clamp(min=0)]  # [N, K, d]
            negative_scores = (per_row * passages.unsqueeze(1)).sum(-1)  # [N, K]
        positive_scores = (queries * passages).sum(-1, keepdim=True)  # [N, 1]
        logits = self.config.similarity_scale * torch.cat([positive_scores, negative_scores], 1)
        valid = torch.cat([torch.ones_like(valid[:, :1]), valid], 1)
        return ScoreBlock(logits, valid, torch.zeros(len(queries), dtype=torch.long, device=queries.device))

    def _instruction_block_attention(
        self,
        h_instr: torch.Tensor,
        mask_instr: torch.Tensor,
        h_query: torch.Tensor,
        mask_query: torch.Tensor,
        passages: torch.Tensor,
        negative_index: torch.Tensor,
    ) -> ScoreBlock:
        """l_I with `attention`: column 0 is s(e_i, p_i), columns 1..K the sampled instructions k (the triples of
        `negative_index` [N, K] that carry them) attending over query i, against p_i. -> [N, 1+K]

        The sequences are encoded once; only the cheap cross-attention runs again, on [N, K, Li, d] hidden states.
        """
        valid = negative_index >= 0  # [N, K]
        index = negative_index.clamp(min=0)
        pairs = instruction_query_attention(
            h_instr[index], mask_instr[index], h_query.unsqueeze(1), mask_query.unsqueeze(1)
        )  # [N, K, d]
        negative_scores = (self._finish(pairs) * passages.unsqueeze(1)).sum(-1)  # [N, K]
        positive = instruction_query_attention(h_instr, mask_instr, h_query, mask_query)  # [N, d]
        positive_scores = (self._finish(positive) * passages).sum(-1, keepdim=True)  # [N, 1]
        logits = self.config.similarity_scale * torch.cat([positive_scores, negative_scores], 1)
        valid = torch.cat([torch.ones_like(valid[:, :1]), valid], 1)
        return ScoreBlock(logits, valid, torch.zeros(len(passages), dtype=torch.long, device=passages.device))

    # -- inference ------------------------------------------------------------------------------------------------

    @torch.inference_mode()
    def encode_queries(
        self, queries: list[str], instructions: list[str] | str | None = None, batch_size: int = 32
    ) -> torch.Tensor:
        """Embed queries, each with its instruction (a list, one string for all, or None) -> float32 [n, d] on CPU.

        With `concat` a query without instruction is encoded alone; with `attention` it gets the configured
        `default_instruction`, as in training.
        """
        queries = _check_texts(queries, "queries")
        if instructions is None or isinstance(instructions, str):
            instructions = [instructions or ""] * len(queries)
        instructions = _check_texts(instructions, "instructions", allow_empty_list=True)
        if len(instructions) != len(queries):
            raise ValueError(f"got {len(queries)} queries but {len(instructions)} instructions")
        cfg = self.config
        if cfg.combine == "concat":

            def tokenize(rows: list[int]) -> list[list[int]]:
                chosen_queries, chosen_instructions = [queries[n] for n in rows], [instructions[n] for n in rows]
                return tokenize_queries(
                    self.tokenizer, cfg.query_template, chosen_queries, chosen_instructions, cfg.query_max_length
                )

            return self._encode(len(queries), tokenize, batch_size)
        instructions = [i or cfg.default_instruction for i in instructions]
        return self._encode(len(queries), self._tokenizer_of(instructions, queries), batch_size, self.embed_attention)

    @torch.inference_mode()
    def encode_passages(self, passages: list[str], batch_size: int = 32) -> torch.Tensor:
        """Embed passages (never with an instruction) -> float32 [n, d] on CPU."""
        passages = _check_texts(passages, "passages")
        return self._encode(len(passages), self._tokenizer_of(passages), batch_size)

    def _tokenizer_of(self, *columns: list[str]):
        """rows -> token ids of those rows, one list per column (all cut at the column's maximum length)."""
        max_length = self.config.query_max_length if len(columns) == 2 else self.config.passage_max_length

        def tokenize(rows: list[int]) -> list[list[int]] | tuple[list[list[int]], ...]:
            out = tuple(
                self.tokenizer([column[n] for n in rows], truncation=True, max_length=max_length)["input_ids"]
                for column in columns
            )
            return out if len(out) > 1 else out[0]

        return tokenize

    def _encode(self, n: int, tokenize, batch_size: int, embed=None) -> torch.Tensor:
        """Embed n inputs a chunk at a time: tokenize the chunk, batch it longest first (the least padding) and write
        each batch's vectors into place, so memory holds the output plus one chunk of tokens. -> float32 [n, d]"""
        embed = embed or self.embed
        out = torch.empty(n, self.config.hidden_size)
        chunk = max(batch_size, ENCODE_CHUNK_BATCHES * batch_size)
        with _eval_mode(self):
            for first in range(0, n, chunk):
                rows = list(range(first, min(first + chunk, n)))
                ids = tokenize(rows)
                columns = ids if isinstance(ids, tuple) else (ids,)
                order = sorted(range(len(rows)), key=lambda r: -sum(len(column[r]) for column in columns))
                for start in range(0, len(rows), batch_size):
                    batch = order[start : start + batch_size]
                    inputs = [t for column in columns for t in self._pad([column[r] for r in batch])]
                    out[[rows[r] for r in batch]] = embed(*inputs).float().cpu()
        return out

    def _pad(self, sequences: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Token id lists -> input_ids and attention_mask [n, L] on the model's device, padded as the tokenizer pads."""
        tokens = self.tokenizer.pad({"input_ids": sequences}, return_tensors="pt")
        return tokens["input_ids"].to(self.device), tokens["attention_mask"].to(self.device)

    # -- saving ---------------------------------------------------------------------------------------------------

    def save_pretrained(self, save_directory: str | os.PathLike, *args, **kwargs) -> None:
        """Weights, config and code as usual, plus the tokenizer and the sentence-transformers files."""
        super().save_pretrained(save_directory, *args, **kwargs)
        if kwargs.get("is_main_process", True):
            self.tokenizer.save_pretrained(save_directory)
            _write_sentence_transformers_files(save_directory, self.config)


def _append_eos(tokenizer: PreTrainedTokenizerBase) -> None:
    """Make the tokenizer end every text with its end-of-sequence token, which a causal decoder pools: the last token
    is the only one that has seen the whole text. Kept in `tokenizer.json`, so every tool that loads the folder
    (sentence-transformers, TEI) appends it too."""
    from tokenizers import processors

    eos, eos_id = tokenizer.eos_token, tokenizer.eos_token_id
    if eos is None:
        raise ValueError("a causal decoder backbone needs an eos_token to pool; set one or pass bidirectional=True")
    if tokenizer("a")["input_ids"][-1] == eos_id:
        return
    backend = tokenizer.backend_tokenizer
    append = processors.TemplateProcessing(
        single=f"$A {eos}", pair=f"$A {eos} $B:1 {eos}:1", special_tokens=[(eos, eos_id)]
    )
    existing = backend.post_processor
    backend.post_processor = append if existing is None else processors.Sequence([existing, append])


def _without_pooler(encoder: torch.nn.Module) -> torch.nn.Module:
    """Drop the backbone's own pooler (BERT's dense + tanh over [CLS]): InF-Embed pools the hidden states itself, and
    parameters that never get a gradient make DistributedDataParallel fail."""
    if getattr(encoder, "pooler", None) is not None:
        encoder.pooler = None
    return encoder


class _eval_mode:
    """Eval mode (no dropout) inside the block, the previous mode after it."""

    def __init__(self, model: torch.nn.Module):
        self.model, self.was_training = model, model.training

    def __enter__(self):
        self.model.eval()

    def __exit__(self, *exc):
        self.model.train(self.was_training)


def _check_texts(texts, name: str, allow_empty_list: bool = False) -> list[str]:
    """A list of strings, or one string as a list of one; else a clear ValueError."""
    if isinstance(texts, str):
        texts = [texts]
    if not isinstance(texts, list | tuple):
        raise ValueError(f"{name} must be a list of strings, got {type(texts).__name__}")
    if not texts and not allow_empty_list:
        raise ValueError(f"{name} is an empty list")
    for n, text in enumerate(texts):
        if not isinstance(text, str):
            raise ValueError(f"{name}[{n}] must be a string, got {type(text).__name__}")
    return list(texts)


def _write_sentence_transformers_files(directory: str | os.PathLike, config: InfEmbedConfig) -> None:
    """Make the folder loadable by `SentenceTransformer(directory, trust_remote_code=True)`.

    sentence-transformers calls `InfEmbedModel.embed`, so pooling and normalisation stay the model's own. A prompt
    holds one string for every text, so a per-query instruction goes in as
    `encode_query(query, prompt=<query_template up to "{query}", instruction filled in>)`.
    """
    files = {
        "modules.json": [
            {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.base.modules.transformer.Transformer"}
        ],
        "sentence_bert_config.json": {
            "transformer_task": "feature-extraction",
            "modality_config": {"text": {"method": "embed", "method_output_name": None}},
            "module_output_name": "sentence_embedding",
            "max_seq_length": config.passage_max_length,
        },
        "config_sentence_transformers.json": {
            "model_type": "SentenceTransformer",
            "prompts": {"query": "", "document": ""},
            "default_prompt_name": None,
            "similarity_fn_name": "cosine" if config.normalize else "dot",
        },
    }
    for name, content in files.items():
        with open(os.path.join(directory, name), "w") as f:
            json.dump(content, f, indent=2)
