"""Sample i of a dataset, from its own RNG seeded by (seed, i): draw a change type by
weight, a source item, synthesise, check the change is visible, redraw if not.

Because sample i depends on nothing but (config, seed, i), any worker on any machine
makes the same pair; batching inpainting across samples (`make`) only changes how
many images one backend call sees, never a byte of the result.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from metauas.changegen.changes import NEEDS_INSTANCES, SYNTHS, Context, InpaintRequest, Pair, visible
from metauas.changegen.config import PERLIN, GenerateConfig
from metauas.changegen.inpaint import Inpainter
from metauas.changegen.sources import Source, SourceItem
from metauas.data.format import CHANGE_TYPES
from metauas.data.images import SkipSource
from metauas.errors import UserError

log = logging.getLogger("metauas.generate")
MAX_DRAWS = 50  # source draws per need before giving up (a source of only bad images)
MAX_ATTEMPTS = 20  # synthesis attempts per sample before giving up on its change type


class Skips(Counter):
    """Skips by reason, and the first source image skipped for each reason (index.json
    names it, so a user can find the bad file)."""

    def __init__(self) -> None:
        super().__init__()
        self.first: dict[str, str] = {}


@dataclass
class Sample:
    index: int
    pair: Pair
    source: dict
    skips: Counter = field(default_factory=Counter)


class Synthesizer:
    def __init__(self, cfg: GenerateConfig, source: Source, inpainter: Inpainter):
        self.cfg, self.source, self.inpainter = cfg, source, inpainter
        w = np.array([cfg.change_weights.get(c, 0.0) for c in CHANGE_TYPES], np.float64)
        self.weights = w / w.sum()

    def draw_item(self, rng: np.random.Generator, need_instances: bool, skips: Counter) -> SourceItem:
        """A usable source item; skipped images and instances are counted in `skips`."""
        for _ in range(MAX_DRAWS):
            k = self.source.pick(rng)
            try:
                item = self.source.load(k, self.cfg.size)
            except SkipSource as skip:
                skips[skip.reason] += 1
                first = getattr(skips, "first", {})
                first.setdefault(skip.reason, str(skip))
                log.debug("skipping source image: %s", skip)
                continue
            skips.update(item.skips)
            if need_instances and not item.instances:
                skips["redraw_no_instances"] += 1
                continue
            return item
        raise UserError(
            f"source {self.source.name}: no usable image{' with object instances' if need_instances else ''} "
            f"in {MAX_DRAWS} draws (skips so far: {dict(skips)}"
            + "".join(f"; first {detail}" for detail in list(getattr(skips, "first", {}).values())[:1])
            + ")"
        )

    def sample(self, index: int):
        """Generator: yields InpaintRequests, returns the finished Sample."""
        rng = np.random.default_rng([self.cfg.seed, index])
        change = CHANGE_TYPES[int(rng.choice(len(CHANGE_TYPES), p=self.weights))]
        skips = Skips()
        ctx = Context(
            lambda r, need: self.draw_item(r, need, skips),
            self.cfg.max_exchange,
            PERLIN[self.cfg.perlin],
            self.cfg.local_masks,
            self.cfg.local_intensity,
        )
        for _ in range(MAX_ATTEMPTS):
            item = self.draw_item(rng, change in NEEDS_INSTANCES, skips)
            pair = yield from SYNTHS[change](ctx, rng, item)
            if pair is not None and visible(pair):
                return Sample(index, pair, item.ident, skips)
            skips[f"redraw_invisible_{change}"] += 1
        raise RuntimeError(f"sample {index}: no visible {change} change in {MAX_ATTEMPTS} attempts")

    def make(self, indices: list[int]) -> list[Sample]:
        """Samples for `indices`, advancing them together so that their inpainting
        requests go to the backend as one batch."""
        gens = [self.sample(i) for i in indices]
        results: list[Sample | None] = [None] * len(gens)
        replies: dict[int, np.ndarray | None] = {j: None for j in range(len(gens))}
        while replies:
            requests: dict[int, InpaintRequest] = {}
            for j, reply in replies.items():
                try:
                    requests[j] = gens[j].send(reply)
                except StopIteration as done:
                    results[j] = done.value
            filled = self.inpainter.inpaint_many(
                [r.image for r in requests.values()], [r.hole for r in requests.values()]
            )
            replies = dict(zip(requests, filled))
        return results  # type: ignore[return-value]  # every slot is set: each generator returned (StopIteration)
