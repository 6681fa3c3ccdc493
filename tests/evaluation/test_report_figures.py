"""evaluate's report: per-class ROC / PR / PRO curves (methods on one plot), score
histograms with the fitted threshold, the per-image table, and the same figures as files."""

from __future__ import annotations

import csv
import re
import xml.etree.ElementTree as ET

import pytest

from metauas.cli import main

SVG = "{http://www.w3.org/2000/svg}"


def evaluate_both(mvtec_root, checkpoint, out) -> None:
    """Model and lookup, one seed, one overlay per class and method, thresholds fitted."""
    args = ["--data", str(mvtec_root), "--checkpoint", str(checkpoint), "--method", "both", "--seeds", "1"]
    assert main(["evaluate", *args, "--overlays", "1", "--fit-normals", "2", "--no-progress", "--out", str(out)]) == 0


@pytest.fixture(scope="module")
def report(mvtec_root, checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    evaluate_both(mvtec_root, checkpoint, out)
    return out


def test_every_class_has_curves_of_both_methods_and_histograms_with_the_threshold(report):
    names = sorted(p.name for p in (report / "figures").glob("*.svg"))
    for cls in ("plate", "tile"):
        assert {
            f"{cls}-roc.svg",
            f"{cls}-pr.svg",
            f"{cls}-pro.svg",
            f"{cls}-scores-model.svg",
            f"{cls}-scores-lookup.svg",
        } <= set(names)
        for kind in ("roc", "pr", "pro"):
            svg = ET.parse(report / "figures" / f"{cls}-{kind}.svg").getroot()  # well-formed, standalone
            curves = svg.findall(f"{SVG}polyline")
            assert len(curves) == 2 and all(len(c.get("points").split()) >= 2 for c in curves)
            legend = " ".join(t.text or "" for t in svg.iter(f"{SVG}text"))
            assert "model (" in legend and "lookup (" in legend
        hist = ET.parse(report / "figures" / f"{cls}-scores-lookup.svg").getroot()
        assert len(hist.findall(f"{SVG}polygon")) == 2  # normal and anomalous
        assert hist.find(f"{SVG}line[@class='threshold']") is not None


def test_scores_csv_and_the_per_image_table_cover_every_test_image(report, mvtec_root):
    tests = sorted(str(p) for p in mvtec_root.glob("*/test/*/*.png"))
    rows = list(csv.DictReader(open(report / "scores.csv")))
    assert sorted(r["image"] for r in rows) == tests
    assert all(r["lookup anomalous"] in ("True", "False") for r in rows)  # thresholds were fitted
    page = (report / "report.html").read_text()
    table = page[page.index('<table class="images">') :]
    assert table.count("<tr>") == len(tests) + 1
    for anchor in re.findall(r'href="#(overlay-\d+)"', table):  # each link lands on a drawn overlay
        assert f'id="{anchor}"' in page
    assert "Fitted thresholds" in page and page.count('<svg xmlns="http://www.w3.org/2000/svg"') == 10


def test_overlay_scale_per_map_is_an_option(mvtec_root, tmp_path, capsys):
    out = tmp_path / "per-map"
    assert (
        main(
            [
                "evaluate",
                "--data",
                str(mvtec_root),
                "--method",
                "lookup",
                "--size",
                "64",
                "--seeds",
                "1",
                "--classes",
                "tile",
                "--overlays",
                "1",
                "--overlay-scale",
                "per-map",
                "--fit-normals",
                "0",
                "--no-progress",
                "--out",
                str(out),
            ]
        )
        == 0
    ), capsys.readouterr().err
    assert "each map over its own maximum" in (out / "report.html").read_text()
    assert (
        main(["evaluate", "--data", str(mvtec_root), "--method", "lookup", "--overlay-scale", "log", "--out", str(out)])
        == 2
    )
    assert "'log' is not one of 'shared', 'per-map'" in capsys.readouterr().err
