"""What the Python API accepts and how it says no: array ranges, files and folders,
thresholds, the reason of every unreadable file, and reprs that do not dump arrays."""

from __future__ import annotations

import shutil

import cv2
import numpy as np
import pytest
import skimage.data

import metauas
from metauas.errors import UserError
from metauas.inference.api import as_rgb


@pytest.fixture(scope="module")
def lookup():
    return metauas.load(method="lookup", device="cpu", size=64)


def test_an_array_says_its_range_by_its_type(lookup, mvtec_root):
    tile = mvtec_root / "tile"
    lookup.set_prompts(tile / "train/good/000.png")
    rgb = cv2.cvtColor(cv2.imread(str(tile / "test/blob/000.png")), cv2.COLOR_BGR2RGB)
    by_uint8 = lookup.segment(rgb)
    assert np.abs(lookup.segment(rgb / 255.0).map - by_uint8.map).max() < 1e-5  # float in [0, 1]
    with pytest.raises(UserError, match=r"must hold values in \[0, 1\], got 18\.\.157: divide"):
        lookup.segment(rgb.astype(np.float32))  # 0..255 floats: an error, not a white image
    with pytest.raises(UserError, match=r"\[0, 1\], got nan"):
        lookup.segment(np.full((8, 8, 3), np.nan))
    with pytest.raises(UserError, match="uint8 .* or float in \\[0, 1\\]; got uint16"):
        lookup.segment(rgb.astype(np.uint16) * 256)


def test_folders_are_their_images_and_recursive_finds_subfolders(lookup, mvtec_root, tmp_path):
    tile = mvtec_root / "tile"
    results = lookup.segment(str(tile / "test/blob"), prompt=str(tile / "train/good"))  # folders as strings
    assert [r.path.rsplit("/", 1)[1] for r in results] == ["000.png", "001.png", "002.png"]
    assert len(lookup._prompts) == 3  # the prompt folder's three images
    with pytest.raises(UserError, match=r"no images in folder .*test \(recursive=True searches its subfolders\)"):
        lookup.segment(tile / "test")
    nested = lookup.segment(tile / "test", recursive=True)
    assert len(nested) == 5 and {r.path.split("/")[-2] for r in nested} == {"blob", "good"}
    by_folder = lookup.fit_threshold(normals=str(tile / "test/good"))  # a string is a folder, not characters
    assert by_folder == lookup.fit_threshold(normals=sorted((tile / "test/good").glob("*.png")))


def test_thresholds_are_checked_where_they_are_set(lookup, mvtec_root):
    lookup.set_prompts(mvtec_root / "tile/train/good/000.png")
    for bad in (3, -0.1, float("nan"), True, "0.5"):
        with pytest.raises(UserError, match=r"threshold must be a number in \[0, 1\]"):
            lookup.threshold = bad
        with pytest.raises(UserError, match=r"threshold must be a number in \[0, 1\]"):
            lookup.segment(mvtec_root / "tile/test/good/000.png", threshold=bad)
    lookup.threshold = np.float32(0.25)
    assert lookup.threshold == 0.25 and isinstance(lookup.threshold, float)
    lookup.threshold = None
    with pytest.raises(UserError, match=r"quantile must be in \(0, 1\]"):
        lookup.fit_threshold(normals=[mvtec_root / "tile/test/good/000.png"], quantile=2)


def test_every_unreadable_file_says_why(tmp_path):
    photo = cv2.imencode(".png", skimage.data.chelsea()[..., ::-1])[1].tobytes()
    (tmp_path / "truncated.png").write_bytes(photo[: len(photo) // 2])
    (tmp_path / "notes.png").write_text("not pixels at all")
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "folder.png").mkdir()
    cases = {
        "missing.png": "no such file",
        "truncated.png": "truncated or corrupt PNG file",
        "notes.png": "not an image",
        "empty.jpg": "the file is empty",
        "folder.png": "it is a folder",
    }
    for name, reason in cases.items():
        with pytest.raises(UserError, match=f"cannot read image .*{name}: {reason}"):
            as_rgb(tmp_path / name)


def test_reprs_name_what_matters_and_no_arrays(lookup, mvtec_root):
    lookup.set_prompts(mvtec_root / "tile/train/good/000.png", mvtec_root / "tile/train/good/001.png")
    text = repr(lookup)
    assert text.startswith("Segmenter(method='lookup', runtime='torch', size=64") and "prompts=2" in text
    result = lookup.segment(mvtec_root / "tile/test/blob/000.png", threshold=0.5)
    text = repr(result)
    assert f"score={result.score:.4f}" in text and "map=64x64" in text and "anomalous=" in text
    assert "array" not in text and len(text) < 200


def test_a_folder_of_copies_scores_like_its_files(lookup, mvtec_root, tmp_path):
    """Results come back in the folder's sorted order with their paths, so a caller can
    match them to files without keeping a list of its own."""
    folder = tmp_path / "queries"
    (folder / "sub").mkdir(parents=True)
    shutil.copy(mvtec_root / "tile/test/blob/001.png", folder / "b.png")
    shutil.copy(mvtec_root / "tile/test/blob/000.png", folder / "sub" / "a.png")
    lookup.set_prompts(mvtec_root / "tile/train/good/000.png")
    results = lookup.segment(folder, recursive=True)
    assert [r.path for r in results] == [str(folder / "b.png"), str(folder / "sub" / "a.png")]
    assert results[1].score == pytest.approx(lookup.segment(mvtec_root / "tile/test/blob/000.png").score, abs=1e-6)
