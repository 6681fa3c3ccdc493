"""Fuzz pass over what users hand us: image files, COCO JSON, shard members, benchmark
layouts and checkpoint metadata. The rule, for every input Hypothesis draws: a clear
error (UserError) or a counted skip; never another exception, never a hang (a generous deadline
per example), memory bounded (the pixel limit; no example may decode a bomb)."""

from __future__ import annotations

import io
import json
import math
import tarfile
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

pytest.importorskip("hypothesis", reason="the fuzz pass needs hypothesis (pip install -e '.[dev]')")
from hostile import sample_members
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from metauas.changegen.sources import CocoSource
from metauas.data.format import ReadStats, iter_pairs
from metauas.data.images import SkipSource, read_rgb
from metauas.errors import UserError
from metauas.evaluation.readers import read_benchmark
from metauas.model.checkpoint import load_model

# deadlines catch a hang, not slowness: far above an example's time on an idle box
# (under 2 s), so a loaded machine does not fail them (5 s was exceeded at 7 s under load)
HANG = 60_000
FUZZ = settings(
    max_examples=60,
    deadline=HANG,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids, max_size=4),
    max_leaves=12,
)
GOOD = cv2.imencode(".png", np.random.default_rng(0).integers(0, 255, (80, 80, 3), dtype=np.uint8))[1].tobytes()


def mutate(data: bytes, edits: list[tuple[int, int]], cut: int) -> bytes:
    buf = bytearray(data[: max(1, cut)])
    for where, value in edits:
        buf[where % len(buf)] = value
    return bytes(buf)


EDITS = st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), max_size=8)


@FUZZ
@given(edits=EDITS, cut=st.integers(1, len(GOOD)), suffix=st.sampled_from([".png", ".jpg", ".gif", ".webp"]))
def test_image_files(tmp_path_factory, edits, cut, suffix):
    path = tmp_path_factory.mktemp("img") / f"x{suffix}"
    path.write_bytes(mutate(GOOD, edits, cut))
    try:
        rgb = read_rgb(path, 16, max_pixels=10**6)
    except SkipSource as skip:
        assert skip.reason in ("unreadable", "too_small", "too_large")
    else:
        assert rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[2] == 3


VALID_COCO = {
    "images": [{"id": 1, "file_name": "a.png", "height": 80, "width": 80}],
    "annotations": [
        {"id": 1, "image_id": 1, "category_id": 1, "iscrowd": 0, "segmentation": [[10, 10, 60, 10, 60, 60, 10, 60]]},
        {"id": 2, "image_id": 1, "category_id": 1, "iscrowd": 0, "segmentation": {"size": [80, 80], "counts": "0`1"}},
    ],
    "categories": [{"id": 1, "name": "x"}],
}
PATHS = st.lists(
    st.sampled_from(
        [
            "images",
            "annotations",
            "categories",
            0,
            1,
            "id",
            "image_id",
            "file_name",
            "height",
            "width",
            "segmentation",
            "size",
            "counts",
            "iscrowd",
        ]
    ),
    max_size=4,
)


def replace_at(data, path, value):
    """`data` with the value at `path` (keys/indices, as far as they lead) replaced."""
    node = data
    for key in path[:-1]:
        try:
            node = node[key]
        except (KeyError, IndexError, TypeError):
            return data
    try:
        node[path[-1]] = value
    except (IndexError, TypeError):
        pass
    return data


@FUZZ
@given(path=PATHS, value=JSON)
def test_coco_json(tmp_path_factory, path, value):
    root = tmp_path_factory.mktemp("coco")
    cv2.imwrite(str(root / "a.png"), np.full((80, 80, 3), 90, np.uint8))
    data = replace_at(json.loads(json.dumps(VALID_COCO)), path, value) if path else value
    (root / "ann.json").write_text(json.dumps(data))
    try:
        source = CocoSource(root, root / "ann.json", min_side=16, min_area=0.01, max_area=0.9)
        for k in range(len(source)):
            try:
                item = source.load(k, 32)
            except SkipSource:
                continue
            assert all(m.shape == (32, 32) for m in item.instances)
    except UserError as err:
        assert "\n" not in str(err)


MEMBERS = st.dictionaries(
    st.sampled_from(["prompt.png", "query.png", "mask.png", "json", "prompt.jpg", "extra"]),
    st.binary(max_size=64) | st.sampled_from([GOOD, b"{}", b"[1]"]),
    max_size=5,
)


@FUZZ
@given(members=MEMBERS, cut=st.integers(0, 4096) | st.none())
def test_shard_members(tmp_path_factory, members, cut):
    root = tmp_path_factory.mktemp("shard")
    good = sample_members(np.random.default_rng(2), "000000000")
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in [*good.items(), *((f"000000001.{k}", v) for k, v in members.items())]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    data = buffer.getvalue()
    (root / "s.tar").write_bytes(data if cut is None else data[:cut])
    stats = ReadStats(quiet=True)
    pairs = list(iter_pairs(str(root / "s.tar"), stats))
    assert len(pairs) + sum(stats.skipped.values()) >= 1
    for pair in pairs:
        assert pair["prompt"].shape == pair["query"].shape and pair["mask"].shape == pair["prompt"].shape[:2]


def _tar_blocks(members: dict[str, bytes]) -> list[bytes]:
    """Header block, then data blocks, of each member (no end-of-archive blocks)."""
    out = []
    for name, data in members.items():
        info = tarfile.TarInfo(name)
        info.size = len(data)
        out += [info.tobuf(tarfile.USTAR_FORMAT), data + b"\0" * (-len(data) % 512)]
    return out


PAX = st.dictionaries(
    st.sampled_from(["size", "path", "mtime", "linkpath", "x"]),
    st.text(max_size=24) | st.integers(-(2**70), 2**100).map(str),
    max_size=3,
)


@FUZZ
@given(
    member=st.integers(0, 11),
    at=st.integers(0, 511),
    value=st.binary(min_size=1, max_size=12),
    checksum=st.booleans(),
    pax=st.none() | PAX,
)
def test_tar_headers(tmp_path_factory, member, at, value, checksum, pax):
    """A header block of a three-sample shard overwritten anywhere (the size field, the
    type, the name...), its checksum fixed or not, a pax header of any records before it:
    pairs that decode, or counted skips, in the memory of one member."""
    from hostile import pax_record

    rng = np.random.default_rng(3)
    members = {k: v for i in range(3) for k, v in sample_members(rng, f"{i:09d}").items()}
    blocks = _tar_blocks(members)
    header = bytearray(blocks[2 * member])
    header[at : at + len(value)] = value[: 512 - at]
    if checksum:
        header[148:156] = b" " * 8
        header[148:156] = b"%06o\0 " % sum(header)
    blocks[2 * member] = bytes(header)
    if pax is not None:
        records = b"".join(pax_record(k, v) for k, v in pax.items())
        info = tarfile.TarInfo("pax")
        info.type, info.size = tarfile.XHDTYPE, len(records)
        blocks.insert(2 * member, info.tobuf(tarfile.USTAR_FORMAT) + records + b"\0" * (-len(records) % 512))
    path = tmp_path_factory.mktemp("tar") / "s.tar"
    path.write_bytes(b"".join(blocks) + b"\0" * 1024)
    stats = ReadStats(quiet=True)
    pairs = list(iter_pairs(str(path), stats))
    assert len(pairs) + sum(stats.skipped.values()) >= 1
    for pair in pairs:
        assert pair["prompt"].shape == pair["query"].shape and pair["mask"].shape == pair["prompt"].shape[:2]


LAYOUT = st.lists(
    st.tuples(
        st.sampled_from(
            [
                "a",
                "a/test",
                "a/test/good",
                "a/test/bad",
                "a/train/good",
                "a/ground_truth/bad",
                "split_csv",
                "a/normal",
                "a/anomaly",
                "a/masks",
            ]
        ),
        st.sampled_from(["x.png", "1cls.csv", "meta.json", "x_mask.png", "test", "train"]),
        st.sampled_from(
            [
                GOOD,
                b"",
                b"object,split\na,test\n",
                b"{}",
                b"[]",
                b'{"test": {"a": [{"img_path": 1}]}}',
                b"[" * 100000,  # nested beyond reason
                b"object,split,label,image\n" + b"x" * 200000,  # a field over the csv module's limit
            ]
        ),
    ),
    max_size=8,
)


@FUZZ
@given(files=LAYOUT, fmt=st.sampled_from(["mvtec", "visa", "meta", "folder"]))
def test_benchmark_layouts(tmp_path_factory, files, fmt):
    root = tmp_path_factory.mktemp("bench")
    for folder, name, data in files:
        (root / folder).mkdir(parents=True, exist_ok=True)
        target = root / folder / name
        if not target.is_dir():
            target.write_bytes(data)
    try:
        bench = read_benchmark(root, fmt)
    except UserError as err:
        assert "\n" not in str(err)
    else:
        assert bench.classes and all(c.test for c in bench.classes)


NAMES = st.text(max_size=10) | st.sampled_from(
    ["..", ".", "../../../../ESC", "/tmp/abs", "a/b", "a\nb", "\ud800", "caf\udce9", "x" * 300, ""]
)


@FUZZ
@given(cls=NAMES, defect=NAMES | st.none(), image=NAMES)
def test_meta_json_class_names(tmp_path_factory, cls, defect, image):
    """Any class name, defect type and image path in a meta.json: one line, or an
    overlay written (through evaluate's own path and writer) under --out and nowhere else."""
    from metauas.evaluation.evaluate import overlay_path
    from metauas.inference.overlay import write_png

    root = tmp_path_factory.mktemp("meta")
    item = {"img_path": image, "mask_path": "m.png", "anomaly": 1, "specie_name": defect}
    (root / "meta.json").write_text(json.dumps({"test": {cls: [item]}}))
    try:
        bench = read_benchmark(root, "meta")
    except UserError as err:
        assert "\n" not in str(err)
        return
    out = root / "out"
    for data in bench.classes:
        for sample in data.test:
            path = write_png(overlay_path(out, "lookup", data.name, "best", sample), np.zeros((4, 4, 3), np.uint8))
            assert path.resolve().is_relative_to(out.resolve())
            assert sample.path.resolve().is_relative_to(root.resolve())
    assert {p for p in root.rglob("*") if p.is_file()} <= {root / "meta.json", *out.rglob("*")}


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    from make_data import tiny_model_config

    from metauas.model.checkpoint import save_checkpoint
    from metauas.model.network import MetaUAS

    path = save_checkpoint(tmp_path_factory.mktemp("ck") / "c.pt", MetaUAS(tiny_model_config()), size=64, step=0)
    return torch.load(path, weights_only=True)


META_KEYS = st.sampled_from(
    [
        "format",
        "config",
        "size",
        "step",
        "encoder",
        "fusion",
        "alignment",
        "decoder_channels",
        "topk",
        "name",
        "layout",
        "aligned_stages",
    ]
)


@settings(
    max_examples=40,
    deadline=HANG,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(path=st.lists(META_KEYS, min_size=1, max_size=3), value=JSON)
def test_checkpoint_metadata(tmp_path_factory, saved, path, value):
    payload = {"meta": json.loads(json.dumps(saved["meta"])), "model": saved["model"]}
    for head in (["meta"], ["meta", "config"], ["meta", "config", "encoder"]):
        replace_at(payload, [*head, *path], value)
    out = Path(tmp_path_factory.mktemp("ck")) / "fuzzed.pt"
    torch.save(payload, out)
    try:
        model, meta = load_model(out)
    except UserError as err:
        assert "\n" not in str(err)
    else:
        assert meta["size"] >= 32 and not model.training


@settings(
    max_examples=30,
    deadline=HANG,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    which=st.integers(0, 10**6),
    at=st.integers(0, 10**9),
    value=st.sampled_from([math.nan, math.inf, -math.inf, 1e30, -1e30, 0.0]),
)
def test_nan_weights(tmp_path_factory, saved, which, at, value):
    """A NaN or an infinity in any weight of a checkpoint: one line from the loader. A
    finite but absurd weight loads; its maps are then finite, or one line from the scorer."""
    from metauas.inference.api import Segmenter
    from metauas.inference.scoring import Scorer, TorchBackend

    weights = {k: v.clone() for k, v in saved["model"].items()}
    floats = [k for k, v in weights.items() if v.is_floating_point() and v.numel()]
    name = floats[which % len(floats)]
    weights[name].view(-1)[at % weights[name].numel()] = value
    out = Path(tmp_path_factory.mktemp("ck")) / "edited.pt"
    torch.save({"meta": saved["meta"], "model": weights}, out)
    try:
        model, meta = load_model(out)
    except UserError as err:
        assert "NaN or infinity" in str(err) and not math.isfinite(value) and "\n" not in str(err)
        return
    assert math.isfinite(value)
    segmenter = Segmenter(TorchBackend(Scorer(model.encoder, model, ("model",)), meta, 64, str(out)))
    image = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    try:
        result = segmenter.segment(image, prompt=image)
    except UserError as err:
        assert "NaN or infinity" in str(err)
    else:
        assert np.isfinite(result.map).all() and math.isfinite(result.score)
