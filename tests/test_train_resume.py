"""Resuming from a checkpoint continues the same loss curve as the uninterrupted run."""

import pytest
from test_train_support import build_dataset_repo, losses, train


def test_resume_from_checkpoint_continues_the_same_loss_curve(backbone_dir, tmp_path):
    repo = build_dataset_repo(tmp_path / "InF-IR", rows=16)
    flags = ["--max_steps", "6", "--per_device_train_batch_size", "4", "--learning_rate", "5e-3", "--seed", "3"]
    flags += ["--logging_steps", "1", "--save_steps", "3"]
    full = losses(train(repo, backbone_dir("bert"), tmp_path / "full", *flags))
    assert (tmp_path / "full" / "checkpoint-3").is_dir()

    checkpoint = str(tmp_path / "full" / "checkpoint-3")
    resumed = losses(
        train(repo, backbone_dir("bert"), tmp_path / "resumed", *flags, "--resume_from_checkpoint", checkpoint)
    )
    assert sorted(full) == [1, 2, 3, 4, 5, 6]
    assert [resumed[step] for step in (4, 5, 6)] == pytest.approx([full[step] for step in (4, 5, 6)], rel=1e-5)
    assert len(set(full.values())) == 6  # the steps differ, so equal values are not a coincidence
