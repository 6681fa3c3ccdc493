"""inference: prompt -> query maps (model, lookup), prompt choice, the prepared path,
predict and overlays.

The public surface is `__all__`; each name is imported on first use (`metauas.lazy`),
so the CLI starts without torch. `metauas.inference.predict.predict` is the `predict`
command's work (not re-exported: the name is its module's too).
"""

from metauas.lazy import lazy_exports

_EXPORTS = {
    "Segmentation": "api",
    "Segmenter": "api",
    "load": "api",
    "LookupConfig": "config",
    "PredictConfig": "config",
    "lookup_map": "lookup",
    "heatmap": "overlay",
    "overlay_row": "overlay",
    "prepare_for_inference": "prepared",
    "PromptPolicy": "policy",
    "random_prompts": "policy",
    "PromptBank": "prompts",
    "Scorer": "scoring",
    "build_scorer": "scoring",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
