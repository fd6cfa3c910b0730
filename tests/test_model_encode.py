"""Inference API of InF-Embed: what the instruction touches, bad input, config checks and decoder pooling."""

import inspect

import pytest
import torch
from tiny_models import make_rows
from transformers import AutoModel

from infembed_model import InfEmbedConfig, InfEmbedModel

QUERIES = ["w1 w2 w3", "w4 w5", "w6"]
PASSAGES = ["w7 w8 w9 w10", "w11 w12", "w13 w14 w15"]

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def models(backbone_dir):
    """One BERT model per combine mode, built once for the module."""
    return {
        combine: InfEmbedModel.from_backbone(str(backbone_dir("bert")), combine=combine).eval()
        for combine in ("concat", "attention")
    }


@pytest.mark.parametrize("combine", ["concat", "attention"])
def test_instruction_changes_the_query_vector(models, combine):
    model = models[combine]
    plain = model.encode_queries(QUERIES)
    first = model.encode_queries(QUERIES, "w20 w21 w22")
    second = model.encode_queries(QUERIES, ["w30 w31", "w32", "w33 w34 w35"])
    assert plain.shape == first.shape == (3, model.config.hidden_size) and first.dtype == torch.float32
    assert torch.allclose(first.norm(dim=1), torch.ones(3), atol=1e-5)
    for a, b in ((plain, first), (plain, second), (first, second)):
        assert (a - b).abs().max(dim=1).values.min() > 1e-4  # every row moved


@pytest.mark.parametrize("combine", ["concat", "attention"])
def test_a_passage_vector_never_sees_an_instruction(models, combine):
    model = models[combine]
    assert list(inspect.signature(model.encode_passages).parameters) == ["passages", "batch_size"]
    before = model.encode_passages(PASSAGES)
    model.encode_queries(QUERIES, ["w30 w31", "w32", "w33 w34 w35"])
    model.encode_queries(QUERIES, "w20")
    assert torch.equal(model.encode_passages(PASSAGES), before)


@pytest.mark.parametrize("combine", ["concat", "attention"])
def test_training_batch_passages_do_not_depend_on_instructions(models, combine):
    model = models[combine]
    rows = make_rows(3)
    other = [
        dict(row, instruction_positive=f"w{190 + n} w199", instruction_negative=f"w{180 + n}")
        for n, row in enumerate(rows)
    ]
    collate = model.data_collator()
    with torch.no_grad():
        out = model(**collate(rows), return_loss=False)
        out_other = model(**collate(other), return_loss=False)
    assert torch.equal(out.passage_embeds, out_other.passage_embeds)
    assert (out.query_embeds - out_other.query_embeds).abs().max(dim=1).values.min() > 1e-4


@pytest.mark.parametrize("combine", ["concat", "attention"])
def test_training_and_inference_embed_alike(models, combine):
    """The padded training batch gives the vectors `encode_queries` / `encode_passages` give for the same texts."""
    model = models[combine]
    rows = make_rows(3)
    with torch.no_grad():
        out = model(**model.data_collator()(rows), return_loss=False)
    instructions, queries, passages = [], [], []
    for row in rows:
        instructions += [row["instruction_positive"], row["instruction_negative"], row["instruction_positive"]]
        queries += [row["query_positive"], row["query_positive"], row["query_negative"]]
        passages += [row["document_positive"], row["hard_negative_document_1"], row["hard_negative_document_2"]]
    assert torch.allclose(out.query_embeds, model.encode_queries(queries, instructions), atol=1e-5)
    assert torch.allclose(out.passage_embeds, model.encode_passages(passages), atol=1e-5)


@pytest.mark.parametrize("combine", ["concat", "attention"])
def test_mixed_instructions_keep_input_order(models, combine):
    """Texts are sorted by length inside; rows with and without an instruction come back where they were asked."""
    model = models[combine]
    instructions = ["w20 w21", "", "w22 w23 w24"]
    together = model.encode_queries(QUERIES, instructions, batch_size=2)
    one_by_one = torch.cat([model.encode_queries([q], [i]) for q, i in zip(QUERIES, instructions, strict=True)])
    assert torch.allclose(together, one_by_one, atol=1e-5)
    assert torch.allclose(together[1], model.encode_queries([QUERIES[1]])[0], atol=1e-6)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda m: m.encode_queries(["w1", "w2"], ["w3"]), "2 queries but 1 instructions"),
        (lambda m: m.encode_queries(["w1", 7]), r"queries\[1\] must be a string"),
        (lambda m: m.encode_queries(["w1"], [None]), r"instructions\[0\] must be a string"),
        (lambda m: m.encode_queries(["w1"], 3), "instructions must be a list of strings"),
        (lambda m: m.encode_queries([]), "queries is an empty list"),
        (lambda m: m.encode_passages([]), "passages is an empty list"),
        (lambda m: m.encode_passages(["w1", b"w2"]), r"passages\[1\] must be a string"),
        (lambda m: m.encode_passages(None), "passages must be a list of strings"),
    ],
)
def test_bad_input_gets_a_clear_value_error(models, call, message):
    with pytest.raises(ValueError, match=message):
        call(models["concat"])


@pytest.mark.parametrize("combine", ["concat", "attention"])
def test_over_long_text_is_truncated(models, combine):
    model = models[combine]
    long_text = " ".join(f"w{n % 200}" for n in range(3000))  # far past the 512 positions of the backbone
    queries = model.encode_queries([long_text, "w1"], [long_text, "w2"])
    passages = model.encode_passages([long_text, "w1"])
    assert queries.shape == passages.shape == (2, model.config.hidden_size)
    assert torch.isfinite(queries).all() and torch.isfinite(passages).all()
    rows = make_rows(2)
    rows[0]["document_positive"] = rows[1]["query_negative"] = rows[1]["instruction_negative"] = long_text
    batch = model.data_collator()(rows)
    assert batch["passage_input_ids"].shape[1] == model.config.passage_max_length
    assert batch["query_input_ids"].shape[1] == model.config.query_max_length
    assert torch.isfinite(model(**batch).loss)


@pytest.mark.parametrize("field", ["query_negative", "hard_negative_document_2"])
def test_collator_names_a_missing_field(models, field):
    rows = make_rows(2)
    del rows[1][field]
    with pytest.raises(ValueError, match=f"row 1.*{field}"):
        models["concat"].data_collator()(rows)


def test_collator_names_a_non_string_field(models):
    rows = make_rows(2)
    rows[0]["instruction_positive"] = None
    with pytest.raises(ValueError, match="row 0.*instruction_positive"):
        models["attention"].data_collator()(rows)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"pooling": "max"}, "pooling"),
        ({"combine": "sum"}, "combine"),
        ({"loss_terms": ["X"]}, "loss_terms"),
        ({"loss_terms": []}, "loss_terms"),
        ({"loss_mode": "joint"}, "loss_mode"),
        ({"query_template": "{query} only"}, "query_template"),
        ({"similarity_scale": 0.0}, "similarity_scale"),
    ],
)
def test_bad_config_values_are_rejected(backbone_dir, overrides, message):
    with pytest.raises(ValueError, match=message):
        InfEmbedConfig(**overrides)
    with pytest.raises(ValueError, match=message):
        InfEmbedModel.from_backbone(str(backbone_dir("bert")), **overrides)


@pytest.fixture(scope="module")
def qwen(backbone_dir):
    return InfEmbedModel.from_backbone(str(backbone_dir("qwen2"))).eval()


def test_decoder_backbone_defaults_to_last_token_pooling(qwen, models):
    assert qwen.config.pooling == "last"
    assert models["concat"].config.pooling == "mean"


def test_last_token_pooling_ignores_the_padding_side(qwen):
    texts = ["w1 w2", "w3 w4 w5 w6 w7 w8 w9 w10 w11"]
    alone = qwen.encode_passages(texts[:1])
    sides = {}
    for side in ("left", "right"):
        qwen.tokenizer.padding_side = side
        tokens = qwen.tokenizer(texts, padding=True, return_tensors="pt")
        assert tokens["attention_mask"][0].sum() < tokens["attention_mask"].shape[1]  # the short text is padded
        with torch.no_grad():
            sides[side] = qwen.embed(tokens["input_ids"], tokens["attention_mask"])
    qwen.tokenizer.padding_side = "right"
    assert torch.allclose(sides["left"], sides["right"], atol=1e-5)
    assert torch.allclose(sides["left"][0], alone[0], atol=1e-5)


@pytest.mark.parametrize("bidirectional", [True, False])
def test_decoder_backbone_attends_in_both_directions(backbone_dir, bidirectional):
    model = InfEmbedModel.from_backbone(str(backbone_dir("qwen2")), bidirectional=bidirectional).eval()
    ids = model.tokenizer(["w1 w2 w3 w4", "w1 w2 w3 w5"], return_tensors="pt")
    with torch.no_grad():
        hidden = model.encoder(**ids).last_hidden_state
    first_token_moved = (hidden[0, 0] - hidden[1, 0]).abs().max() > 1e-4
    assert first_token_moved == bidirectional  # the causal control shows the check can tell the two apart


def test_remote_code_reads_the_same_fields_as_the_dataset_schema():
    # The remote-code file may import nothing from the package, so it keeps its own copy of the field names.
    from infembed_model import modeling_infembed
    from infir_dataset.schema import RECORD_FIELDS

    assert modeling_infembed.RECORD_FIELDS == RECORD_FIELDS


def test_decoder_backbone_is_causal_by_default_and_pools_an_appended_eos(backbone_dir, tmp_path):
    """The paper's code, e5-mistral, RepLLaMA and Qwen3-Embedding keep a decoder causal and pool its last token, an
    end-of-sequence token that has seen the whole text."""
    model = InfEmbedModel.from_backbone(str(backbone_dir("qwen2"))).eval()
    assert model.config.bidirectional is False and model.config.pooling == "last"
    ids = model.tokenizer(["w1 w2 w3 w4", "w1 w2 w3 w5"], return_tensors="pt")
    eos = model.tokenizer.eos_token_id
    assert ids["input_ids"][:, -1].tolist() == [eos, eos]
    with torch.no_grad():
        hidden = model.encoder(**ids).last_hidden_state
    changed_at = 10  # "w1 w2 w3 w" is byte-identical in both texts; only the last byte differs
    assert torch.allclose(hidden[0, :changed_at], hidden[1, :changed_at], atol=1e-6)
    assert (hidden[0, -1] - hidden[1, -1]).abs().max() > 1e-4

    model.save_pretrained(tmp_path)
    again = AutoModel.from_pretrained(tmp_path, trust_remote_code=True).eval()
    assert again.config.bidirectional is False and getattr(again.config.encoder_config, "is_causal", True)
    assert again.tokenizer("w1 w2")["input_ids"][-1] == eos
    assert torch.allclose(again.encode_passages(PASSAGES), model.encode_passages(PASSAGES), atol=1e-6)


def test_eos_is_appended_once_by_the_training_collator_too(backbone_dir):
    model = InfEmbedModel.from_backbone(str(backbone_dir("qwen2")))
    batch = model.data_collator()(make_rows(2))
    eos = model.tokenizer.eos_token_id
    for prefix in ("query", "passage", "negative_query"):
        ids, mask = batch[f"{prefix}_input_ids"], batch[f"{prefix}_attention_mask"]
        last = [row[m.bool()][-1].item() for row, m in zip(ids, mask, strict=True)]
        assert set(last) == {eos}, prefix
        assert ((ids == eos) & mask.bool()).sum(1).max() == 1


@pytest.mark.parametrize("combine", ["concat", "attention"])
def test_a_long_instruction_never_truncates_the_query_away(backbone_dir, combine):
    model = InfEmbedModel.from_backbone(str(backbone_dir("bert")), combine=combine, query_max_length=16).eval()
    instruction = " ".join(f"w{n}" for n in range(100, 140))  # 40 tokens, far over the limit
    vectors = model.encode_queries(["w1 w2", "w1 w3", "w4 w2"], instruction)
    assert (vectors[0] - vectors[1]).abs().max() > 1e-4 and (vectors[0] - vectors[2]).abs().max() > 1e-4
    if combine == "concat":  # the instruction, not the query, gave up its tokens
        batch = model.data_collator()([dict(make_rows(1)[0], instruction_positive=instruction)])
        ids = batch["query_input_ids"][0][batch["query_attention_mask"][0].bool()].tolist()
        assert len(ids) == 16
        assert model.tokenizer.decode(ids, skip_special_tokens=True).endswith(make_rows(1)[0]["query_positive"])


def test_query_truncation_keeps_the_instruction_when_it_fits(models):
    from infembed_model.modeling_infembed import tokenize_queries

    tokenizer, template = models["concat"].tokenizer, models["concat"].config.query_template
    short = tokenize_queries(tokenizer, template, ["w1 w2"], ["w3 w4"], 64)[0]
    assert short == tokenizer(template.format(instruction="w3 w4", query="w1 w2"))["input_ids"]
    cut = tokenize_queries(tokenizer, template, ["w1 w2"], ["w3 w4 w5 w6"], len(short))[0]
    assert tokenizer.decode(cut, skip_special_tokens=True) == "instruct : w3 w4 query : w1 w2"  # w5 w6 cut
    alone = tokenize_queries(tokenizer, template, [" ".join(["w7"] * 80)], ["w3"], 10)[0]
    assert alone == tokenizer(" ".join(["w7"] * 80), truncation=True, max_length=10)["input_ids"]


def test_attention_query_without_instruction_uses_the_trained_default(models):
    model = models["attention"]
    default = model.config.default_instruction
    assert torch.allclose(model.encode_queries(QUERIES), model.encode_queries(QUERIES, default), atol=1e-6)
    row = dict(make_rows(1)[0], instruction_positive="", instruction_negative="w5 w6")
    batch = model.data_collator()([row])
    first = batch["instruction_input_ids"][0][batch["instruction_attention_mask"][0].bool()]
    assert first.tolist() == model.tokenizer(default)["input_ids"]


def test_from_backbone_loads_float32_without_building_a_random_encoder(backbone_dir, monkeypatch, tmp_path):
    from transformers import AutoModel as HFAutoModel

    folder = tmp_path / "bf16"
    HFAutoModel.from_pretrained(backbone_dir("qwen2"), dtype=torch.bfloat16).save_pretrained(folder)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (folder / name).write_bytes((backbone_dir("qwen2") / name).read_bytes())

    devices = []
    from_config = HFAutoModel.from_config

    def record_device(*args, **kwargs):
        encoder = from_config(*args, **kwargs)
        devices.append(next(encoder.parameters()).device.type)
        return encoder

    monkeypatch.setattr(HFAutoModel, "from_config", record_device)
    assert InfEmbedModel.from_backbone(str(folder)).encoder.dtype == torch.float32
    assert InfEmbedModel.from_backbone(str(folder), dtype=torch.bfloat16).encoder.dtype == torch.bfloat16
    assert devices == ["meta", "meta"]  # the wrapper's own encoder is never allocated
