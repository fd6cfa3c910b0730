"""InF-Embed: an instruction-aware embedding model trained on InF-IR.

Importing the package registers the model with the transformers Auto classes, so a saved folder loads with
`AutoModel.from_pretrained(path)` with or without `trust_remote_code`.
"""

from transformers import AutoConfig, AutoModel

from .configuration_infembed import InfEmbedConfig
from .modeling_infembed import InfEmbedCollator, InfEmbedModel

AutoConfig.register(InfEmbedConfig.model_type, InfEmbedConfig, exist_ok=True)
AutoModel.register(InfEmbedConfig, InfEmbedModel, exist_ok=True)
# `save_pretrained` writes `auto_map` and copies the two model files, for users who have only transformers.
InfEmbedConfig.register_for_auto_class()
InfEmbedModel.register_for_auto_class("AutoModel")

__all__ = ["InfEmbedCollator", "InfEmbedConfig", "InfEmbedModel"]
