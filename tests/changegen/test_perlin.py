"""Perlin noise: the fast numpy version is DRAEM's function; the `noise`-package
versions agree with each other; masks follow the recipe."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from metauas.changegen.perlin import METHODS, perlin_coarse, perlin_mask, perlin_noise, perlin_numpy, perlin_pnoise2


def draem_rand_perlin_2d(rng, shape, res):
    """DRAEM's rand_perlin_2d_np, written out with np.repeat as the paper's code does."""
    delta = (res[0] / shape[0], res[1] / shape[1])
    d = (shape[0] // res[0], shape[1] // res[1])
    grid = np.mgrid[0 : res[0] : delta[0], 0 : res[1] : delta[1]].transpose(1, 2, 0) % 1
    angles = 2 * math.pi * rng.random((res[0] + 1, res[1] + 1))
    gradients = np.stack((np.cos(angles), np.sin(angles)), axis=-1)

    def tile(s1, s2):
        return np.repeat(np.repeat(gradients[s1[0] : s1[1], s2[0] : s2[1]], d[0], axis=0), d[1], axis=1)

    def dot(grad, shift):
        g = np.stack((grid[: shape[0], : shape[1], 0] + shift[0], grid[: shape[0], : shape[1], 1] + shift[1]), axis=-1)
        return (g * grad[: shape[0], : shape[1]]).sum(axis=-1)

    n00 = dot(tile([0, -1], [0, -1]), [0, 0])
    n10 = dot(tile([1, None], [0, -1]), [-1, 0])
    n01 = dot(tile([0, -1], [1, None]), [0, -1])
    n11 = dot(tile([1, None], [1, None]), [-1, -1])
    t = 6 * grid**5 - 15 * grid**4 + 10 * grid**3
    lerp = lambda a, b, w: (b - a) * w + a  # noqa: E731 - the reference's own one-liner
    return math.sqrt(2) * lerp(lerp(n00, n10, t[..., 0]), lerp(n01, n11, t[..., 0]), t[..., 1])


@pytest.mark.parametrize("res", [(1, 1), (2, 8), (32, 4), (16, 16)])
def test_numpy_version_is_draems_function(res):
    ours = perlin_numpy(np.random.default_rng(5), 64, res)
    theirs = draem_rand_perlin_2d(np.random.default_rng(5), (64, 64), res)
    assert np.abs(ours - theirs).max() < 1e-5


def test_coarse_grid_follows_per_pixel_pnoise2():
    fine = perlin_pnoise2(np.random.default_rng(1), 64, (4, 4))
    coarse = perlin_coarse(np.random.default_rng(1), 64, (4, 4))
    assert np.corrcoef(fine.ravel(), coarse.ravel())[0, 1] > 0.99


@pytest.mark.parametrize("method", METHODS)
def test_masks_threshold_rotated_noise_and_are_reproducible(method):
    field, params = perlin_noise(np.random.default_rng(3), 40, 56, method)
    assert field.shape == (40, 56) and -2 < field.min() and field.max() < 2
    assert set(params) == {"scale", "angle", "method"} and -90 <= params["angle"] <= 90
    assert all(s in (1, 2, 4, 8, 16, 32) for s in params["scale"])
    a, _ = perlin_mask(np.random.default_rng(3), 40, 56, method)
    b, _ = perlin_mask(np.random.default_rng(3), 40, 56, method)
    assert a.dtype == bool and np.array_equal(a, b) and np.array_equal(a, field > 0.5)


def test_generate_can_draw_local_masks_with_the_noise_package(tmp_path):
    from changegen_helpers import read_back, run_cli

    for name, extra in (("numpy", []), ("noise", ["--perlin", "noise"])):
        run_cli(
            "generate",
            "--out",
            str(tmp_path / name),
            "--num-pairs",
            "3",
            "--size",
            "64",
            "--change-weights",
            "local=1",
            "--no-progress",
            *extra,
        )
    numpy_cfg, noise_cfg = (json.loads((tmp_path / n / "index.json").read_text())["config"] for n in ("numpy", "noise"))
    assert "perlin" not in numpy_cfg and noise_cfg["perlin"] == "noise"  # old datasets keep resuming
    a, b = read_back(tmp_path / "numpy"), read_back(tmp_path / "noise")
    assert all(s["mask.png"].any() for s in a + b)
    assert any(not np.array_equal(x["mask.png"], y["mask.png"]) for x, y in zip(a, b))
