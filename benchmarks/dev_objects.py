"""Build `objects-dev`: object-like dev classes with nuisance normals and small real-scale
defects, in MVTec layout, from photographs scikit-image ships (none of them in the builtin
training split).

Why: the three real dev classes are two flat textures and binarised PCB crops. A choice
judged on them alone can favour a model that is good at textures and worse on objects
(issue 22 found exactly that on hidden object kinds). These classes add objects, print
and many small parts, each shot as a different *view* every time (a few degrees of
rotation, a few percent of shift and scale, light and focus changes), so a method that
flags every misalignment pays for it, as it would on a real line.

    python benchmarks/dev_objects.py --out DEV/objects-dev

Classes (photo, what it stands for): `coins` (many small parts on a background),
`text` (print: structure like a PCB), `rocket` (an object on a scene), `astronaut`
(a textured object, people and equipment). Defects, one per test image, drawn at the
evaluation size (256 px) with the sizes of real surface defects (docs/quality.md,
"Synthetic data"): `scratch` (a 1-3 px line), `pit` (a 4-14 px spot), `missing` (a
region inpainted away: structure removed, no new colour), `contamination` (a foreign
texture patch), `deform` (a local bulge: content displaced, no new colour). A defect is
redrawn until it is visible (mean absolute change inside its mask >= 15 grey levels).

Honest limits: the defects are synthetic. Three kinds (`scratch`, `pit`, `contamination`)
resemble the `local` change the training data can contain, so the model may find them
easier than real ones; `missing` and `deform` are not made by any training change.
The photos are also used by the builtin held-out split (astronaut, rocket, coins) and
never by its training split. Everything is a pure function of --seed.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import cv2
import numpy as np

CLASSES = {"coins": "coins.png", "text": "text.png", "rocket": "rocket.jpg", "astronaut": "astronaut.png"}
KINDS = ("scratch", "pit", "missing", "contamination", "deform")
SIZE = 256


def load_photo(name: str) -> np.ndarray:
    """The photo as RGB uint8, cropped to its central square."""
    from metauas.changegen.builtin import skimage_data_dir

    image = cv2.imread(str(skimage_data_dir() / name), cv2.IMREAD_COLOR)
    image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    h, w = image.shape[:2]
    side = min(h, w)
    y, x = (h - side) // 2, (w - side) // 2
    return np.ascontiguousarray(image[y : y + side, x : x + side])


def view(photo: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One shot of the part: the central 85% of the photo seen with a few degrees of
    rotation, a few percent of shift and scale, other light, focus and sensor noise."""
    side = photo.shape[0]
    angle = float(rng.uniform(-6, 6))
    scale = float(rng.uniform(0.93, 1.07)) * SIZE / (0.85 * side)
    shift = rng.uniform(-0.04, 0.04, size=2) * SIZE
    matrix = cv2.getRotationMatrix2D((side / 2, side / 2), angle, scale)
    matrix[:, 2] += np.array([SIZE / 2, SIZE / 2]) - np.array([side / 2, side / 2]) + shift
    image = cv2.warpAffine(photo, matrix, (SIZE, SIZE), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    x = image.astype(np.float32) / 255
    x = np.clip((x - 0.5) * rng.uniform(0.85, 1.15) + 0.5, 0, 1) ** rng.uniform(0.85, 1.15)
    x = x * rng.uniform(0.88, 1.12)
    blur = float(rng.uniform(0, 0.8))
    if blur > 0.3:
        x = cv2.GaussianBlur(x, (0, 0), blur)
    x = x * 255 + rng.normal(0, rng.uniform(0, 3), x.shape)
    return np.clip(x, 0, 255).round().astype(np.uint8)


def _polyline(rng: np.random.Generator) -> list[np.ndarray]:
    length = float(rng.uniform(15, 70))
    segments = int(rng.integers(1, 4))
    y, x = rng.uniform(0.15 * SIZE, 0.85 * SIZE, size=2)
    heading = float(rng.uniform(0, 2 * math.pi))
    points = [(x, y)]
    for _ in range(segments):
        heading += float(rng.uniform(-0.7, 0.7))
        x, y = x + math.cos(heading) * length / segments, y + math.sin(heading) * length / segments
        points.append((x, y))
    return [np.round(np.array(points) * 16).astype(np.int32)]


def _ellipse(rng: np.random.Generator, lo: float, hi: float) -> np.ndarray:
    mask = np.zeros((SIZE, SIZE), np.uint8)
    d = float(rng.uniform(lo, hi))
    axes = (max(1, int(d / 2)), max(1, int(d / 2 / rng.uniform(1, 2))))
    centre = tuple(int(v) for v in rng.uniform(0.12 * SIZE, 0.88 * SIZE, size=2))
    cv2.ellipse(mask, centre, axes, float(rng.uniform(0, 180)), 0, 360, 1, -1)
    return mask.astype(bool)


def _shift(image: np.ndarray, mask: np.ndarray, rng: np.random.Generator, soft: float) -> np.ndarray:
    """Darker or brighter by 50-110 grey levels inside the mask, soft-edged inside it."""
    alpha = mask.astype(np.float32)
    if soft > 0:
        alpha = cv2.GaussianBlur(alpha, (0, 0), soft) * alpha
    delta = float(rng.uniform(50, 110)) * (1 if rng.random() < 0.5 else -1)
    return np.clip(image + alpha[..., None] * delta, 0, 255).round().astype(np.uint8)


def scratch(image: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    canvas = np.zeros((SIZE, SIZE), np.uint8)
    cv2.polylines(canvas, _polyline(rng), False, 1, thickness=int(rng.integers(1, 4)), shift=4)
    mask = canvas > 0
    return _shift(image.astype(np.float32), mask, rng, 0.0), mask


def pit(image: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    mask = _ellipse(rng, 4, 14)
    return _shift(image.astype(np.float32), mask, rng, 1.0), mask


def missing(image: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    mask = _ellipse(rng, 12, 30)
    return cv2.inpaint(image, mask.astype(np.uint8), 5, cv2.INPAINT_TELEA), mask


def contamination(image: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    from metauas.changegen.textures import tinted_texture

    mask = _ellipse(rng, 10, 30)
    patch = tinted_texture(rng, SIZE, SIZE).astype(np.float32)
    alpha = cv2.GaussianBlur(mask.astype(np.float32), (0, 0), 1.0) * mask * float(rng.uniform(0.7, 1.0))
    out = image * (1 - alpha[..., None]) + patch * alpha[..., None]
    return out.round().astype(np.uint8), mask


def deform(image: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A local bulge: pixels within radius r pulled towards or pushed from the centre."""
    r = float(rng.uniform(10, 24))
    cy, cx = (np.float32(v) for v in rng.uniform(0.15 * SIZE, 0.85 * SIZE, size=2))
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)
    d = np.sqrt((yy - cy) ** 2 + (xx - cx) ** 2) / r
    strength = float(rng.uniform(0.35, 0.6)) * (1 if rng.random() < 0.5 else -1)
    factor = np.where(d < 1, 1 - strength * (1 - d) ** 2, 1).astype(np.float32)
    out = cv2.remap(
        image, cx + (xx - cx) * factor, cy + (yy - cy) * factor, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT
    )
    moved = np.abs(1 - factor) * d * r > 1.0
    changed = np.abs(out.astype(np.int16) - image).max(axis=2) > 15
    return out, moved & cv2.dilate(changed.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)


DEFECTS = {"scratch": scratch, "pit": pit, "missing": missing, "contamination": contamination, "deform": deform}


def defective(image: np.ndarray, kind: str, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A visible defect of `kind` on `image`, and its mask (redrawn up to 50 times)."""
    for _ in range(50):
        out, mask = DEFECTS[kind](image, rng)
        if mask.sum() >= 4 and np.abs(out.astype(np.int16) - image)[mask].mean() >= 15:
            return out, mask
    raise RuntimeError(f"no visible {kind} defect in 50 draws")


def _save(path: Path, image: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_RGB2BGR))


def build_class(out: Path, name: str, seed: int, normals: int, tests: int, per_kind: int) -> None:
    photo = load_photo(CLASSES[name])
    rng = np.random.default_rng([seed, list(CLASSES).index(name)])
    for split, count in (("train", normals), ("test", tests)):
        for i in range(count):
            _save(out / name / split / "good" / f"{i:03d}.png", view(photo, rng))
    for kind in KINDS:
        for i in range(per_kind):
            image, mask = defective(view(photo, rng), kind, rng)
            _save(out / name / "test" / kind / f"{i:03d}.png", image)
            _save(out / name / "ground_truth" / kind / f"{i:03d}_mask.png", mask.astype(np.uint8) * 255)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="Folder for the MVTec-layout classes.")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--normals", type=int, default=5, help="train/good images per class (the prompts).")
    parser.add_argument("--tests", type=int, default=10, help="test/good images per class.")
    parser.add_argument("--per-kind", type=int, default=4, help="Defective test images per defect kind.")
    args = parser.parse_args()
    for name in CLASSES:
        build_class(args.out, name, args.seed, args.normals, args.tests, args.per_kind)
        print(f"{name}: done", flush=True)


if __name__ == "__main__":
    main()
