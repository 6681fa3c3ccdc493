"""The training augmentation as batched torch ops on the training device.

On a GPU node the data loader's CPU cores are the scarce resource: warping and
colour-jittering each pair in OpenCV costs several times its decoding. With
`augment_on="device"` the loader workers only decode each pair, draw its random
choices (`augment.draw_params`, the very stream the OpenCV path draws) and apply the
resolution jitter (`augment.resample_sources`, two small OpenCV resizes), and the warps,
visibility masks, prompt-only options and colour jitter run here on whole batches, on
the device that trains. Same draws, same operations in the same order, so the same
augmentation up to rounding (tests/trainer/test_augment_paths.py compares the two
outputs pair by pair).

Conventions follow OpenCV's: a 2x3 matrix maps source pixel centres (integers) to output
pixel centres; bilinear sampling outside the image blends with black; nearest sampling
rounds half up. Images are floats on the 0..255 scale, rounded after each step where
the OpenCV path stores uint8.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from metauas.trainer.augment import IDENTITY, PairParams

MAX_RECTS = 4  # coarse dropout draws 1-4 rectangles
GRAY = (0.299, 0.587, 0.114)


def pack_params(params: list[PairParams], size: int) -> dict[str, torch.Tensor]:
    """The batch's choices as tensors (made in the loader workers, moved with the batch):
    matrices as float64, flags, quarter turns, flips, dropout rectangles, jitter."""
    identity = IDENTITY.astype(np.float64)
    rotations = [
        identity if p.prompt.rotate is None else cv2.getRotationMatrix2D((size / 2, size / 2), p.prompt.rotate, 1.0)
        for p in params
    ]
    rects = np.zeros((len(params), MAX_RECTS, 4), np.int64)
    for i, p in enumerate(params):
        if p.prompt.dropout:
            rects[i, : len(p.prompt.dropout)] = p.prompt.dropout
    jitter = np.array([[j if j is not None else (1.0, 1.0, 1.0, 0.0) for j in p.jitter] for p in params], np.float64)
    return {
        "aug_swap": torch.tensor([p.swap for p in params]),
        "aug_to_prompt": torch.from_numpy(np.stack([identity if p.to_prompt is None else p.to_prompt for p in params])),
        "aug_to_query": torch.from_numpy(np.stack([identity if p.to_query is None else p.to_query for p in params])),
        "aug_query_to_prompt": torch.from_numpy(np.stack([p.query_to_prompt() for p in params])),
        "aug_rotation": torch.from_numpy(np.stack(rotations)),
        "aug_rotated": torch.tensor([p.prompt.rotate is not None for p in params]),
        "aug_rot90": torch.tensor([p.prompt.rot90 for p in params]),
        "aug_flip": torch.tensor([-1 if p.prompt.flip is None else p.prompt.flip for p in params]),
        "aug_rects": torch.from_numpy(rects),
        "aug_jitter": torch.from_numpy(jitter),
        "aug_jittered": torch.tensor([[j is not None for j in p.jitter] for p in params]),
    }


def _invert(m: torch.Tensor) -> torch.Tensor:
    """Inverses of B x 2 x 3 affine matrices."""
    full = torch.cat([m, torch.tensor([0.0, 0.0, 1.0], dtype=m.dtype, device=m.device).expand(len(m), 1, 3)], 1)
    return torch.linalg.inv(full)[:, :2]


def _points(m: torch.Tensor, size: int) -> torch.Tensor:
    """B x size x size x 2: where each output pixel (x, y) maps under the 2x3 matrices `m`."""
    r = torch.arange(size, dtype=m.dtype, device=m.device)
    y, x = torch.meshgrid(r, r, indexing="ij")
    grid = torch.stack([x, y, torch.ones_like(x)], -1).reshape(1, -1, 3)
    return (grid @ m.transpose(1, 2)).reshape(len(m), size, size, 2)


def warp_bilinear(images: torch.Tensor, to_output: torch.Tensor, size: int) -> torch.Tensor:
    """cv2.warpAffine(INTER_LINEAR, black border) of B x C x H x W by `to_output` (2x3 each)."""
    src = _points(_invert(to_output), size)
    h, w = images.shape[-2:]
    scale = torch.tensor([2.0 / w, 2.0 / h], dtype=src.dtype, device=src.device)
    grid = ((src + 0.5) * scale - 1).to(images.dtype)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _nearest_index(src: torch.Tensor, h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Flat indices of the nearest pixels (half up, as OpenCV) and whether they are inside."""
    ix, iy = torch.floor(src[..., 0] + 0.5).long(), torch.floor(src[..., 1] + 0.5).long()
    inside = (ix >= 0) & (ix < w) & (iy >= 0) & (iy < h)
    return (iy.clamp(0, h - 1) * w + ix.clamp(0, w - 1)).flatten(1), inside.flatten(1)


def warp_nearest(images: torch.Tensor, to_output: torch.Tensor, size: int) -> torch.Tensor:
    """cv2.warpAffine(INTER_NEAREST, black border) of B x 1 x H x W masks."""
    h, w = images.shape[-2:]
    index, inside = _nearest_index(_points(_invert(to_output), size), h, w)
    out = images.flatten(1).gather(1, index) * inside
    return out.reshape(len(images), 1, size, size)


def lands_inside(m: torch.Tensor, size: int, out_size: int) -> torch.Tensor:
    """B x 1 x size x size: 1 where a pixel, mapped by `m`, lands (nearest) inside an
    out_size frame: cv2.warpAffine of ones with WARP_INVERSE_MAP, as the OpenCV path."""
    _, inside = _nearest_index(_points(m, size), out_size, out_size)
    return inside.reshape(len(m), 1, size, size)


def _prompt_options(prompt: torch.Tensor, mask: torch.Tensor, p: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotation (with the visibility rule), quarter turns, flips, dropout: `augment.apply_prompt`."""
    size = prompt.shape[-1]
    rotated = p["aug_rotated"].view(-1, 1, 1, 1)
    if rotated.any():  # change whose prompt counterpart the rotation cropped away leaves the mask
        prompt = torch.where(rotated, warp_bilinear(prompt, p["aug_rotation"], size).round(), prompt)
        both = p["aug_rotation"] @ torch.cat([p["aug_query_to_prompt"], _last_row(p)], 1)
        mask = torch.where(rotated, mask * lands_inside(both, size, size), mask)
    turns, flips, rects = p["aug_rot90"].tolist(), p["aug_flip"].tolist(), p["aug_rects"]
    if any(turns) or any(f >= 0 for f in flips):
        prompt = torch.stack([_turn(x, k, f) for x, k, f in zip(prompt, turns, flips)])
    if rects[..., 2:].any():
        prompt = _fill_rects(prompt, rects)
    return prompt, mask


def _last_row(p: dict) -> torch.Tensor:
    m = p["aug_query_to_prompt"]
    return torch.tensor([0.0, 0.0, 1.0], dtype=m.dtype, device=m.device).expand(len(m), 1, 3)


def _turn(image: torch.Tensor, quarter_turns: int, flip: int) -> torch.Tensor:
    """np.rot90(HWC, k) then np.flip(HWC, axis) on one C x H x W image."""
    out = torch.rot90(image, quarter_turns, dims=(1, 2)) if quarter_turns else image
    return torch.flip(out, dims=(flip + 1,)) if flip >= 0 else out


def _fill_rects(prompt: torch.Tensor, rects: torch.Tensor) -> torch.Tensor:
    """Each image's rectangles filled with its mean colour (rounded half to even, as NumPy)."""
    size = prompt.shape[-1]
    r = torch.arange(size, device=prompt.device)
    y, x, h, w = (rects[..., i, None] for i in range(4))  # B x R x 1
    rows = (r >= y) & (r < y + h)  # B x R x size
    cols = (r >= x) & (r < x + w)
    inside = (rows[..., :, None] & cols[..., None, :]).any(1, keepdim=True)  # B x 1 x size x size
    mean = prompt.mean(dim=(2, 3), keepdim=True).round()
    return torch.where(inside, mean, prompt)


def _gray(x: torch.Tensor) -> torch.Tensor:
    w = torch.tensor(GRAY, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x * w).sum(1, keepdim=True)


def jitter(images: torch.Tensor, factors: torch.Tensor) -> torch.Tensor:
    """`augment.apply_jitter` on a batch: brightness, contrast (about the mean gray),
    saturation (about each pixel's gray), clip and truncate to whole levels, then rotate
    the hue by the shift rounded to OpenCV's 2-degree steps. `factors`: B x 4."""
    b, c, s, hue = (factors[:, i].to(images.dtype).view(-1, 1, 1) for i in range(4))
    # the three linear steps are one colour matrix per image: x -> s c b x + (1 - s) c b gray(x)
    # + (1 - c) b mean gray(x), since gray() is linear and sums to one over the channels
    w = torch.tensor(GRAY, dtype=images.dtype, device=images.device)
    eye = torch.eye(3, dtype=images.dtype, device=images.device)
    matrix = s * c * b * eye + (1 - s) * c * b * w.expand(3, 3)  # B x 3 x 3, rows: output channels
    offset = (1 - c) * b * _gray(images).mean(dim=(2, 3))[..., None]  # B x 1 x 1
    x = torch.einsum("boc,bchw->bohw", matrix, images) + offset[..., None]
    return rotate_hue(x.clamp(0, 255).floor(), torch.round(hue[..., None] * 180) * 2)


def rotate_hue(rgb: torch.Tensor, degrees: torch.Tensor) -> torch.Tensor:
    """Rotate the HSV hue of B x 3 x H x W RGB (0..255) by `degrees` (B x 1 x 1 x 1),
    keeping saturation and value."""
    v, _ = rgb.max(1, keepdim=True)
    low, _ = rgb.min(1, keepdim=True)
    delta = v - low
    r, g, b = rgb[:, 0:1], rgb[:, 1:2], rgb[:, 2:3]
    safe = torch.where(delta > 0, delta, torch.ones_like(delta))
    h = torch.where(v == r, (g - b) / safe, torch.where(v == g, (b - r) / safe + 2, (r - g) / safe + 4))
    h = torch.remainder(h + degrees / 60, 6)  # sextants
    sat = torch.where(v > 0, delta / torch.where(v > 0, v, torch.ones_like(v)), torch.zeros_like(v))
    # R, G, B at once: f(n) = V - V S clamp(min(k, 4 - k), 0, 1), k = (n + H/60) mod 6, n = 5, 3, 1
    k = torch.remainder(torch.tensor([5.0, 3.0, 1.0], dtype=rgb.dtype, device=rgb.device).view(1, 3, 1, 1) + h, 6)
    return v - v * sat * torch.minimum(k, 4 - k).clamp(0, 1)


def augment_batch(batch: dict, device: torch.device | str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Prompt, query (B x 3 x S x S floats in [0, 1]) and masks (B x 1 x S x S, 0/1) of a
    loader batch (uint8 NHWC images, NHW masks, `pack_params`' choices), augmented on
    `device`: swap, independent warps of prompt and query+mask with the visibility rule,
    prompt-only options, colour jitter, as `augment.apply_params` does pair by pair."""
    p = {k: v.to(device, non_blocking=True) for k, v in batch.items() if k.startswith("aug_")}
    prompt, query = (batch[k].to(device, non_blocking=True).permute(0, 3, 1, 2).float() for k in ("prompt", "query"))
    mask = batch["mask"].to(device, non_blocking=True)[:, None].float()
    swap = p["aug_swap"].view(-1, 1, 1, 1)
    prompt, query = torch.where(swap, query, prompt), torch.where(swap, prompt, query)
    size = prompt.shape[-1]
    visible = lands_inside(p["aug_to_prompt"], size, size)  # source pixels the warped prompt still shows
    prompt = warp_bilinear(prompt, p["aug_to_prompt"], size).round()
    query = warp_bilinear(query, p["aug_to_query"], size).round()
    mask = warp_nearest(mask * visible, p["aug_to_query"], size)
    prompt, mask = _prompt_options(prompt, mask, p)
    on = p["aug_jittered"]
    if on.any():
        prompt = torch.where(on[:, 0].view(-1, 1, 1, 1), jitter(prompt, p["aug_jitter"][:, 0]), prompt)
        query = torch.where(on[:, 1].view(-1, 1, 1, 1), jitter(query, p["aug_jitter"][:, 1]), query)
    return prompt.round().clamp(0, 255) / 255, query.round().clamp(0, 255) / 255, mask


def add_sensor_noise(batches: list[torch.Tensor], most: float, key: list[int]) -> list[torch.Tensor]:
    """Each B x 3 x H x W batch of images in [0, 1] with Gaussian sensor noise
    (AugmentConfig.sensor_noise): each image its own std, drawn from 0..`most` grey levels,
    then stored as whole grey levels as a camera would. Two shots of one scene differ by
    this much everywhere; a model trained only on noise-free renderings reads a grey level
    of it as change (issue 20). `key` fixes the draw (`train.step` gives the run's seed,
    rank and step, so a resumed run adds the same noise); each batch draws its own.
    `most` 0 (the default: off) returns the batches as they are and draws nothing."""
    if most <= 0:
        return list(batches)
    seeds = np.random.SeedSequence(key).generate_state(len(batches))
    return [_noisy(images, most, int(seed)) for images, seed in zip(batches, seeds)]


def _noisy(images: torch.Tensor, most: float, seed: int) -> torch.Tensor:
    g = torch.Generator(device=images.device).manual_seed(seed)
    std = torch.rand((len(images), 1, 1, 1), generator=g, device=images.device, dtype=images.dtype) * most
    noise = torch.randn(images.shape, generator=g, device=images.device, dtype=images.dtype) * std
    return (images * 255 + noise).round().clamp(0, 255) / 255


def with_second_shot(
    prompt: torch.Tensor, query: torch.Tensor, masks: torch.Tensor, on: bool, key: list[int]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The queries twice: each query then shot a second time (`second_shot`), with the same
    mask, for the consistency loss (`losses.consistency_loss`). The prompts stay once: the
    model pairs query i with prompt i mod B and encodes each prompt once. Not `on` (the
    default: no consistency loss) returns the batch as it is and draws nothing."""
    if not on:
        return prompt, query, masks
    return prompt, torch.cat([query, second_shot(query, key)]), torch.cat([masks, masks])


def second_shot(images: torch.Tensor, key: list[int]) -> torch.Tensor:
    """Each image (B x 3 x H x W in [0, 1]) as a second camera would store it: half of them
    stored again at 0.7-1x (area) and brought back (bilinear), then every one with
    Gaussian noise of a std drawn from 0..3 grey levels, stored as whole levels."""
    g = torch.Generator().manual_seed(int(np.random.SeedSequence(key).generate_state(1)[0]))
    size = images.shape[-2:]
    shots = []
    for image in images:
        if torch.rand(1, generator=g).item() < 0.5:
            f = 0.7 + 0.3 * torch.rand(1, generator=g).item()
            small = F.interpolate(image[None], scale_factor=f, mode="area")
            image = F.interpolate(small, size=size, mode="bilinear", align_corners=False)[0]
        shots.append(image)
    return _noisy(torch.stack(shots).clamp(0, 1), 3.0, int(torch.randint(2**31, (1,), generator=g)))
