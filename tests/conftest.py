"""Tests never touch the network: offline Hub variables and private caches are set before any HF import."""

import os
import tempfile

_CACHE = tempfile.mkdtemp(prefix="infir-test-cache-")
os.environ.update(
    {
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "HF_HOME": os.path.join(_CACHE, "hf"),
        "HF_MODULES_CACHE": os.path.join(_CACHE, "modules"),
        "MTEB_CACHE": os.path.join(_CACHE, "mteb"),
        "TOKENIZERS_PARALLELISM": "false",
        "WANDB_DISABLED": "true",
    }
)

import pytest  # noqa: E402
from tiny_models import make_rows, write_backbone  # noqa: E402

BACKBONES = ("bert", "modernbert", "qwen2")


@pytest.fixture(scope="session")
def backbone_dir(tmp_path_factory):
    """`backbone_dir(kind)` -> folder of a tiny random backbone (bert, modernbert, qwen2) with its tokenizer."""
    made = {}

    def get(kind: str = "bert"):
        if kind not in made:
            made[kind] = write_backbone(tmp_path_factory.mktemp(f"backbone-{kind}"), kind)
        return made[kind]

    return get


@pytest.fixture
def rows():
    """Eight InF-IR rows of random words."""
    return make_rows(8)


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models run far faster on one thread: OpenMP synchronisation dominates their few small operations."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
