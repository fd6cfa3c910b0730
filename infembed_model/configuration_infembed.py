"""Configuration of InF-Embed, an instruction-aware bi-encoder over any transformers backbone."""

from transformers import AutoConfig, PreTrainedConfig

POOLINGS = ("cls", "mean", "last")
COMBINES = ("concat", "attention")
LOSS_TERMS = ("P", "IQ", "I")
LOSS_MODES = ("multi", "uni")


class InfEmbedConfig(PreTrainedConfig):
    r"""
    Args:
        encoder_config: configuration of the backbone (any `AutoModel` type: BERT, ModernBERT, Qwen2, Llama, ...).
        pooling: `cls`, `mean` (over real tokens) or `last` (last real token, for decoder backbones).
        combine: how the instruction meets the query. `concat` encodes one string, `query_template` filled with both;
            `attention` encodes instruction and query apart and lets every instruction token attend over the query
            tokens (parameter-free cross-attention), then averages over the instruction tokens.
        query_template: the `concat` template. It must contain `{instruction}` and `{query}`; a query without an
            instruction is encoded alone. Keep `{query}` last so that the part before it works as a
            sentence-transformers prompt. Too long a text loses instruction tokens, never query tokens.
        default_instruction: with `attention`, the instruction of a query that has none (in training and in
            `encode_queries` alike), since attention pools from instruction tokens.
        normalize: L2-normalise embeddings, so that the dot product is the cosine similarity.
        similarity_scale: inverse temperature of the contrastive softmax (the paper's 1 / 0.05).
        query_max_length / passage_max_length: truncation lengths in tokens (longer text is cut, never an error).
        loss_terms: objectives among `P` (query to passage), `IQ` (passage to instruction+query) and `I` (the same
            query and passage, other instructions as negatives).
        loss_mode: `multi` sums one InfoNCE term per objective; `uni` takes one softmax over the union of candidates.
        num_instruction_negatives: how many distinct other instructions of the batch are sampled per triple for `I`
            (with `concat` as (instruction, query) texts to encode, with `attention` as cross-attention reruns).
        bidirectional: let a decoder backbone attend in both directions (sets the backbone's `is_causal=False`).
            Off by default: decoders stay causal and pool their last token, an end-of-sequence token that
            `InfEmbedModel.from_backbone` makes the tokenizer append (as e5-mistral, RepLLaMA and Qwen3-Embedding).
    """

    model_type = "infembed"
    sub_configs = {"encoder_config": AutoConfig}

    def __init__(
        self,
        encoder_config=None,
        pooling: str = "mean",
        combine: str = "concat",
        query_template: str = "Instruct: {instruction}\nQuery: {query}",
        default_instruction: str = "Find a passage that answers this query.",
        normalize: bool = True,
        similarity_scale: float = 20.0,
        query_max_length: int = 256,
        passage_max_length: int = 512,
        loss_terms: list[str] | tuple[str, ...] = ("P", "I"),
        loss_mode: str = "multi",
        num_instruction_negatives: int = 5,
        bidirectional: bool = False,
        **kwargs,
    ):
        if encoder_config is None:
            encoder_config = AutoConfig.for_model("bert")
        elif isinstance(encoder_config, dict):
            encoder_config = dict(encoder_config)
            encoder_config = AutoConfig.for_model(encoder_config.pop("model_type"), **encoder_config)
        if bidirectional:
            encoder_config.is_causal = False
        self.encoder_config = encoder_config

        _check_choice("pooling", pooling, POOLINGS)
        _check_choice("combine", combine, COMBINES)
        _check_choice("loss_mode", loss_mode, LOSS_MODES)
        loss_terms = list(loss_terms)
        if not loss_terms or any(term not in LOSS_TERMS for term in loss_terms):
            raise ValueError(f"loss_terms must be a non-empty subset of {LOSS_TERMS}, got {loss_terms}")
        if "{instruction}" not in query_template or "{query}" not in query_template:
            raise ValueError(f"query_template must contain {{instruction}} and {{query}}, got {query_template!r}")
        if similarity_scale <= 0 or num_instruction_negatives < 1:
            raise ValueError("similarity_scale must be > 0 and num_instruction_negatives >= 1")

        self.pooling = pooling
        self.combine = combine
        self.query_template = query_template
        self.default_instruction = default_instruction
        self.normalize = normalize
        self.similarity_scale = similarity_scale
        self.query_max_length = query_max_length
        self.passage_max_length = passage_max_length
        self.loss_terms = loss_terms
        self.loss_mode = loss_mode
        self.num_instruction_negatives = num_instruction_negatives
        self.bidirectional = bidirectional
        super().__init__(**kwargs)

    @property
    def hidden_size(self) -> int:
        return self.encoder_config.hidden_size

    @hidden_size.setter
    def hidden_size(self, value: int) -> None:  # PEFT and AutoPeftModel set it on every config they touch
        self.encoder_config.hidden_size = value


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")
