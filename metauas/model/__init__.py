"""model: the MetaUAS network, its frozen encoder, checkpoints and the official import.

The public surface is `__all__`; each name is imported on first use (`metauas.lazy`),
so `import metauas.model` (and the torch-free `model.config`) needs no torch.
"""

from metauas.lazy import lazy_exports

_EXPORTS = {
    "EncoderConfig": "config",
    "ModelConfig": "config",
    "MetaUAS": "network",
    "build_encoder": "encoder",
    "export_safetensors": "checkpoint",
    "load_model": "checkpoint",
    "read_checkpoint": "checkpoint",
    "save_checkpoint": "checkpoint",
    "resolve_checkpoint": "hub",
    "load_official": "official",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
