"""metauas: synthetic change pairs, MetaUAS training and one-prompt anomaly segmentation.

    import metauas
    model = metauas.load("runs/r1/best.pt")                  # or "hf:csgaobb/MetaUAS/metauas-256.ckpt"
    result = model.segment("query.png", prompt="normal.png")  # .map, .score, .mask, .anomalous

`load`, `Segmenter` and `Segmentation` (metauas.inference.api) are imported on first
use, so `import metauas` stays light and works without the torch extra.
"""

from metauas.version import __version__

_API = ("load", "Segmenter", "Segmentation")
__all__ = ["__version__", *_API]


def __getattr__(name: str):
    if name in _API:
        from metauas.inference import api

        return getattr(api, name)
    raise AttributeError(f"module 'metauas' has no attribute {name!r}")
