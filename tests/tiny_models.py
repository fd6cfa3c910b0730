"""Tiny random backbones and a word-level tokenizer, written to folders as a Hub checkpoint would be."""

import random
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
from transformers import AutoModel, BertConfig, ModernBertConfig, PreTrainedTokenizerFast, Qwen2Config

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
WORDS = [f"w{i}" for i in range(200)] + ["instruct", "query", ":", ",", "."]


def make_tokenizer(vocab_words: list[str] = WORDS) -> PreTrainedTokenizerFast:
    vocab = {token: i for i, token in enumerate(SPECIALS + vocab_words)}
    tokenizer = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        pad_token="[PAD]",
        unk_token="[UNK]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_max_length=512,
    )


def make_byte_level_tokenizer() -> PreTrainedTokenizerFast:
    """A byte-level BPE over single bytes, the kind `AutoTokenizer` insists on for Qwen2 (it rebuilds `Qwen2Tokenizer`
    from the vocab and merges, whatever `tokenizer_class` says, so a WordPiece vocab would lose every word)."""
    vocab = {token: i for i, token in enumerate(SPECIALS + sorted(pre_tokenizers.ByteLevel.alphabet()))}
    tokenizer = Tokenizer(models.BPE(vocab, []))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, pad_token="[PAD]", unk_token="[UNK]", eos_token="[SEP]", model_max_length=512
    )


def backbone_config(kind: str, vocab_size: int):
    if kind == "bert":
        return BertConfig(
            vocab_size=vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64
        )
    if kind == "modernbert":
        return ModernBertConfig(
            vocab_size=vocab_size,
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=64,
            pad_token_id=0,
            cls_token_id=2,
            sep_token_id=3,
            bos_token_id=2,
            eos_token_id=3,
        )
    if kind == "qwen2":
        return Qwen2Config(
            vocab_size=vocab_size,
            hidden_size=64,
            intermediate_size=96,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            pad_token_id=0,
            bos_token_id=2,
            eos_token_id=3,
        )
    raise ValueError(kind)


def write_backbone(folder: Path, kind: str, seed: int = 0) -> Path:
    """A random `kind` backbone with its tokenizer, saved like a pretrained checkpoint."""
    tokenizer = make_byte_level_tokenizer() if kind == "qwen2" else make_tokenizer()
    torch.manual_seed(seed)
    AutoModel.from_config(backbone_config(kind, len(tokenizer))).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def make_rows(n: int, seed: int = 0) -> list[dict[str, str]]:
    """`n` InF-IR rows (the seven public fields) of random words; every text differs."""
    rng = random.Random(seed)

    def text(k: int) -> str:
        return " ".join(f"w{rng.randrange(200)}" for _ in range(k))

    def as_long_as(words: str, like: str) -> str:
        """`words` cut or repeated to as many words as `like`: InF-IR's hard negatives are as long as P+."""
        n = len(like.split())
        return " ".join((words.split() * n)[:n])

    rows = []
    for _ in range(n):
        instruction, query = text(rng.randint(4, 8)), text(rng.randint(2, 5))
        passage = text(rng.randint(6, 12))
        rows.append(
            {
                "query_positive": query,
                "instruction_positive": instruction,
                "document_positive": passage,
                "query_negative": query + " " + text(1),
                "instruction_negative": instruction + " " + text(2),
                "hard_negative_document_1": as_long_as(text(rng.randint(6, 12)), passage),
                "hard_negative_document_2": as_long_as(text(rng.randint(6, 12)), passage),
            }
        )
    return rows
