"""InF-Embed: an instruction-aware embedding model trained on InF-IR.

Importing the package registers the model with the transformers Auto classes, so a saved folder loads with
`AutoModel.from_pretrained(path)` with or without `trust_remote_code`.
"""

from transformers import AutoConfig, AutoModel, PreTrainedConfig

from .configuration_infembed import InfEmbedConfig
from .modeling_infembed import InfEmbedCollator, InfEmbedModel

AutoConfig.register(InfEmbedConfig.model_type, InfEmbedConfig, exist_ok=True)
AutoModel.register(InfEmbedConfig, InfEmbedModel, exist_ok=True)
# `save_pretrained` writes `auto_map` and copies the two model files, for users who have only transformers.
InfEmbedConfig.register_for_auto_class()
InfEmbedModel.register_for_auto_class("AutoModel")


def is_infembed(name_or_path: str) -> bool:
    """Whether a folder or Hub id holds an InF-Embed model: its config.json says `"model_type": "infembed"`.

    Reads only config.json (fetched from the Hub when not cached); OSError when a Hub id cannot be reached.
    """
    config, _ = PreTrainedConfig.get_config_dict(name_or_path)
    return config.get("model_type") == InfEmbedConfig.model_type


__all__ = ["InfEmbedCollator", "InfEmbedConfig", "InfEmbedModel", "is_infembed"]
