"""evaluation: benchmark readers, metrics, `evaluate`, held-out pair scoring, reports.

The public surface is `__all__`; each name is imported on first use (`metauas.lazy`),
so the CLI starts without torch. `metauas.evaluation.evaluate.evaluate` runs an
evaluation (not re-exported: the name is its module's too).
"""

from metauas.lazy import lazy_exports

_EXPORTS = {
    "EvalConfig": "config",
    "HeldoutScores": "heldout",
    "heldout_metrics": "heldout",
    "pair_maps": "heldout",
    "METRICS": "metrics",
    "MetricConfig": "metrics",
    "compute_metrics": "metrics",
    "read_benchmark": "readers",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
