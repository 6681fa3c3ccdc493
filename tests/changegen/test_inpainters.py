"""The offline inpainting backends: only the hole is filled, deterministically."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from metauas.changegen.inpaint import make_inpainter
from metauas.errors import UserError


def case(side: int = 96):
    rng = np.random.default_rng(0)
    image = np.tile(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8), (side // 8, side // 8, 1))
    hole = np.zeros((side, side), bool)
    hole[30:60, 20:70] = True
    image[hole] = (255, 0, 255)  # an "object" the fill must remove
    return image, hole


@pytest.mark.parametrize("name", ["opencv", "opencv-ns"])
def test_opencv_fills_the_hole_from_its_surroundings(name):
    image, hole = case(304)  # above the working side: filled small, upscaled
    (out,) = make_inpainter(name, None).inpaint_many([image], [hole])
    assert out.shape == image.shape and out.dtype == np.uint8
    magenta = (out[hole] == (255, 0, 255)).all(axis=1).mean()
    assert magenta < 0.05


def test_patchmatch_missing_is_one_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "patchmatch", None)  # import fails as if not installed
    with pytest.raises(UserError, match="pypatchmatch"):
        make_inpainter("patchmatch", None)


def test_patchmatch_copies_texture_deterministically():
    pytest.importorskip("patchmatch")
    image, hole = case()
    pm = make_inpainter("patchmatch", None)
    a = pm.inpaint_many([image], [hole])[0]
    b = make_inpainter("patchmatch", None).inpaint_many([image], [hole])[0]
    assert np.array_equal(a, b)
    assert not (a[hole] == (255, 0, 255)).all(axis=1).any()
    # PatchMatch copies texture: the fill keeps the image's contrast, Telea's smooths it
    telea = make_inpainter("opencv", None).inpaint_many([image], [hole])[0]
    contrast = image[~hole].std(axis=0)
    assert (a[hole].std(axis=0) > 0.8 * contrast).all()
    assert (telea[hole].std(axis=0) < 0.5 * contrast).all()
