"""docs/reproduce.md's commands, copied from the page, run at toy scale.

Each `<!-- reproduce: NAME -->` block is run command by command in a shell: torchrun with
2 processes on the CPU (gloo) instead of 8 GPUs, data the test draws (a COCO stand-in,
MVTec-, VisA- and GoodsAD-layout benchmarks), and toy sizes typed after each command
(typed options override the recipe). Then the recorded configs must hold the paper's
values for everything the toy flags did not override, and the trained model must have
the architecture `import-official` builds.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from doc_commands import DOCS, TOY, as_run, cli_args, run_shell, shell_lines
from make_data import make_coco, make_mvtec, make_visa_raw

from metauas.recipes import recipe

DOC = DOCS / "reproduce.md"
# the val split's generation is smaller still (doc_commands.TOY: the other commands' flags)
TOY_HERE = {**TOY, "generate-val": "--num-pairs 8 --size 64 --shard-size 4 --inpainter opencv --no-progress -q"}


def blocks() -> dict[str, list[str]]:
    """The commands of each reproduce block, continuation lines joined."""
    return {
        name: shell_lines(body)
        for name, body in re.findall(r"<!-- reproduce: (\S+) -->\n```bash\n(.*?)```", DOC.read_text(), re.S)
    }


def toy(command: str) -> str:
    """The command as the test runs it: 2 CPU processes, this interpreter, toy sizes."""
    kind = cli_args(command)[0]
    if kind == "generate" and "--coco-split val" in command:
        kind = "generate-val"
    return as_run(command, TOY_HERE[kind])


def run_block(name: str, cwd: Path, env: dict[str, str]) -> None:
    for command in blocks()[name]:
        if re.fullmatch(r"(\w+=\S+\s*)+", command):  # the page's own variables: the test sets them
            continue
        run_shell(toy(command), cwd, env)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("reproduce-data")
    make_coco(root / "coco", images=40)
    make_mvtec(root / "mvtec", {"tile": (200, 160, 120)})
    make_visa_raw(root / "VisA", {"candle": (200, 180, 90)})
    goods = make_mvtec(root / "GoodsAD", {"cigarette_box": (90, 90, 200)})
    for mask in goods.rglob("*_mask.png"):  # GoodsAD names masks <stem>.png
        mask.rename(mask.with_name(mask.name.replace("_mask", "")))
    (root / "big-lama.pt").write_bytes(b"")  # named by the commands; the toy runs inpaint with opencv
    return {
        "COCO": str(root / "coco"),
        "LAMA": str(root / "big-lama.pt"),
        "MVTEC": str(root / "mvtec"),
        "VISA": str(root / "VisA"),
        "GOODS": str(root / "GoodsAD"),
    }


def _env(data: dict[str, str], **more: str) -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", **data, **more}


def _check_generated(folder: Path, name: str, split: str) -> None:
    config = json.loads((folder / "index.json").read_text())["config"]
    expected = {**recipe(name, "generate"), "coco_split": split, "inpainter": "opencv", "size": 64}
    assert {k: config[k] for k in expected} == expected


def _check_trained(run: Path, name: str) -> None:
    from metauas.configs import _nest
    from metauas.model.checkpoint import load_model
    from metauas.model.network import MetaUAS
    from metauas.model.official import OFFICIAL_CONFIG

    config = json.loads((run / "config.json").read_text())
    expected = _nest({k: v for k, v in recipe(name, "train").items() if k not in ("size", "global_batch_size")})
    assert _within(expected, config)
    assert (config["size"], config["global_batch_size"], config["batch_size"]) == (64, 4, 2)  # 4 over 2 processes
    model, meta = load_model(run / "last.pt")
    assert meta["step"] == 2
    imported = MetaUAS(OFFICIAL_CONFIG).state_dict()  # the architecture import-official fills
    ours = model.state_dict()
    assert list(ours) == list(imported) and all(ours[k].shape == imported[k].shape for k in ours)


def _within(expected: dict, actual: dict) -> bool:
    """Every (nested) key of `expected` has its value in `actual`."""
    return all(_within(v, actual[k]) if isinstance(v, dict) else actual[k] == v for k, v in expected.items())


def _metrics(out: Path) -> dict:
    rows = json.loads((out / "metrics.json").read_text())["rows"]
    mean = next(r for r in rows if r["class"] == "mean")
    assert all(np.isfinite(v) for v in mean["metrics"].values())
    return mean


@pytest.mark.xdist_group("processes")  # starts torchrun: run apart, one at a time (Makefile)
@pytest.mark.slow
def test_one_node_256_as_printed(data, tmp_path):
    run_block("one-node-256", tmp_path, _env(data))
    _check_generated(tmp_path / "pairs-256" / "train", "paper", "train")
    _check_generated(tmp_path / "pairs-256" / "val", "paper", "val")
    _check_trained(tmp_path / "runs" / "paper-256", "paper")
    assert _metrics(tmp_path / "eval" / "mvtec")["std"] is not None  # five seeds
    _metrics(tmp_path / "eval" / "mvtec-best")


@pytest.mark.xdist_group("processes")  # starts torchrun: run apart, one at a time (Makefile)
@pytest.mark.slow
def test_one_node_512_as_printed(data, tmp_path):
    run_block("one-node-512", tmp_path, _env(data))
    _check_generated(tmp_path / "pairs-512" / "train", "paper-512", "train")
    _check_trained(tmp_path / "runs" / "paper-512", "paper-512")
    for name in ("visa", "visa-best", "goods"):
        _metrics(tmp_path / "eval" / name)


@pytest.mark.xdist_group("processes")  # starts torchrun: run apart, one at a time (Makefile)
@pytest.mark.slow
def test_several_nodes_as_printed(data, tmp_path):
    """The multi-node commands on one node (NODES=1): the same torchrun form and flags."""
    shared = tmp_path / "shared"
    run_block("multi-node-256", tmp_path, _env(data, NODES="1", NODE="0", HEAD="127.0.0.1", SHARED=str(shared)))
    _check_generated(shared / "pairs-256" / "val", "paper", "val")
    _check_trained(shared / "runs" / "paper-256", "paper")
    assert torch.load(shared / "runs" / "paper-256" / "last.pt", weights_only=True)["meta"]["step"] == 2


def test_every_block_of_the_page_is_run_here():
    assert set(blocks()) == {"one-node-256", "one-node-512", "multi-node-256"}
    assert all(any(" train " in c for c in commands) for commands in blocks().values())
