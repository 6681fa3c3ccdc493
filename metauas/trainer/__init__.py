"""trainer: training MetaUAS on streamed change pairs (one process, or DDP).

The public surface is `__all__`; each name is imported on first use (`metauas.lazy`),
so the CLI starts without torch. Training itself is `metauas.trainer.train.train`
(not re-exported: the name is its module's too).
"""

from metauas.lazy import lazy_exports

_EXPORTS = {
    "AugmentConfig": "augment",
    "TrainConfig": "config",
    "StreamConfig": "stream",
    "resized_pairs": "stream",
    "train_loader": "stream",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
