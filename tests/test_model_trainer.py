"""Plain `transformers.Trainer` trains InF-Embed on InF-IR rows with the model's own collator."""

import math

import pytest
import torch
from datasets import Dataset
from tiny_models import make_rows
from transformers import Trainer, TrainingArguments

from infembed_model import InfEmbedModel

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.parametrize("combine", ["concat", "attention"])
@pytest.mark.parametrize("kind", ["bert", "modernbert", "qwen2"])
def test_one_trainer_step(backbone_dir, tmp_path, kind, combine):
    model = InfEmbedModel.from_backbone(str(backbone_dir(kind)), combine=combine, loss_terms=["P", "IQ", "I"])
    rows = make_rows(4)
    collator = model.data_collator()
    # The tokenizer must tell the texts apart, or the step below would train on identical inputs.
    assert len({tuple(ids) for ids in collator(rows)["passage_input_ids"].tolist()}) == 3 * len(rows)
    args = TrainingArguments(
        output_dir=str(tmp_path),
        use_cpu=True,
        remove_unused_columns=False,  # the raw text fields must reach the collator
        report_to="none",
        save_strategy="no",
        max_steps=1,
        per_device_train_batch_size=len(rows),
        learning_rate=1e-2,
    )
    before = {name: param.detach().clone() for name, param in model.encoder.named_parameters()}
    trainer = Trainer(model=model, args=args, train_dataset=Dataset.from_list(rows), data_collator=collator)
    result = trainer.train()
    assert math.isfinite(result.training_loss) and result.training_loss > 0
    changed = {name for name, param in model.encoder.named_parameters() if not torch.equal(param, before[name])}
    assert model.get_input_embeddings().weight.requires_grad
    assert any("embed" in name for name in changed)
    assert len(changed) > len(before) // 2
