"""Every command of README.md and docs/api.md runs as printed, at toy scale.

Every ```bash and ```python block of the two pages is read from the page (no copy here)
and run in document order: a shell block command by command in bash, a Python block
whole in a fresh interpreter, in a tmp folder where the `workspace` fixture has put
stand-in data at the paths the pages name:

- `coco/train2017`, `coco/annotations/instances_train2017.json`: `make_coco`, 40 photos
  of two discs with polygon and RLE instances;
- `mvtec_anomaly_detection/`: `make_mvtec`, one class of 64 px textures with dark blobs;
- `my_factory_photos/`: that class's eight images;
- `good.png`, `normal.png`: a normal image of it (`train/good/000.png`); `normals/`: its
  three train normals;
- `query.png`: a defective test image; `suspect_dir/`, `suspects/`: its five test images;
- `metauas-256.ckpt`: the authors' checkpoint's stand-in (`official_reference`: their
  layout and key names, random weights);
- `runs/r1/best.pt` (docs/api.md): `metauas train`, 2 steps of the default model (random
  encoder weights, 64 px) on the suite's stand-in shards.

README's `runs/b4` is made by the README's own train command; its `--val` writes best.pt.

What the test changes in a command, and only there:

- sizes and counts: the toy flags of `TOY` (`doc_commands.TOY` and the ones here) are
  appended, typed last so they override the page's (`--num-pairs`, `--size`,
  `--shard-size`, `--steps`, `--workers`, batch sizes; the recipe's too, and
  `--encoder-weights none`: the paper recipe's encoder weights come from timm's hub);
- `torchrun --nproc-per-node 8` runs 2 gloo processes on the CPU as
  `python -m torch.distributed.run`; `metauas` is `python -m metauas.cli` of this interpreter;
- README's shard ranges (`SHARD_RANGES`): 450 + 50 of the 500 shards the printed generate
  makes are 3 + 1 of the toy's 4;
- `metauas app` is a server: `--port 0` is appended (7860 may be taken on a shared
  machine), it is started, its page fetched, then it is stopped.

What is not run (`NOT_RUN`, each line checked to be exactly the page's):

- `make demo`, `make test` (README): the two entry points, each building `.venv` and then
  running the demo (tests/test_demo.py) or this suite, which runs this test;
- `pip install ...` (docs/api.md): installs from the package registry; the test's
  environment has those extras (torch, onnx, onnxruntime, openvino) installed.

`hf:` names appear only in comments of the Python blocks (they need the network; the hub
path is tested with a local cache in tests/model/test_official.py); a command line that
used one would fail the fast test below as an unknown line.

The fast test (`make test`) parses every printed command, with its toy flags, by the
command's own options (an unknown option, a wrong value, a missing required option
fails) and checks that the Python blocks name only what `metauas` and `Segmenter` have;
the slow tests run everything: on 2 busy cores about 2 minutes for README.md and 5 for
docs/api.md (its two `--cached-prompt` exports are six dynamo exports).
"""

from __future__ import annotations

import ast
import os
import re
import shlex
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
import typer
from doc_commands import DOCS, README, TOY, as_run, blocks, cli_args, run_shell, shell_lines
from make_data import make_coco, make_mvtec

PAGES = {"README.md": README, "docs/api.md": DOCS / "api.md"}
TOY_HERE = {**TOY, "app": "--port 0"}
SHARD_RANGES = {"{000000..000449}": "{000000..000002}", "{000450..000499}": "{000003..000003}"}
NOT_RUN = {
    "README.md": ["make demo", "make test"],
    "docs/api.md": ["pip install 'metauas[torch,export,openvino]'", "pip install 'metauas[onnx]'"],
}


def page_blocks(page: str) -> list[tuple[str, str | list[str]]]:
    """("bash", its commands) or ("python", its code) of every block of a page, in order."""
    found = blocks(PAGES[page].read_text())
    assert {lang for lang, _ in found} <= {"bash", "python"}, f"{page}: a block in another language"
    return [(lang, shell_lines(body) if lang == "bash" else body) for lang, body in found]


def commands(page: str) -> list[str]:
    return [line for lang, body in page_blocks(page) if lang == "bash" for line in body]


def substituted(command: str) -> str:
    """The printed command with its shard ranges scaled to the toy's shards."""
    for printed, ours in SHARD_RANGES.items():
        command = command.replace(printed, ours)
    return command


def toy_flags(command: str) -> str:
    args = cli_args(command)
    return TOY_HERE.get(args[0], "") if args else ""


def toy(command: str) -> str:
    """The printed command with the substitutions listed in the module's docstring."""
    return as_run(substituted(command), toy_flags(command))


# --- fast: every printed command is one the CLI takes ---------------------------------


@pytest.mark.parametrize("page", PAGES)
def test_every_line_is_a_metauas_command_or_listed_as_not_run(page):
    lines = commands(page)
    assert [line for line in lines if cli_args(line) is None] == NOT_RUN[page]


@pytest.mark.parametrize(
    "page, command",
    [pytest.param(page, c, id=f"{page}:{c[:60]}") for page in PAGES for c in commands(page) if cli_args(c) is not None],
)
def test_every_command_parses_with_its_toy_flags(page, command):
    from metauas.cli import app

    args = cli_args(substituted(command)) + shlex.split(toy_flags(command))
    click_command = typer.main.get_command(app).commands[args[0]]
    ctx = click_command.make_context(args[0], args[1:])  # a bad option or value raises here
    spec = getattr(click_command.callback, "spec", None)
    if spec is not None:  # a config-backed command: the config it would run with builds
        spec.build(ctx, dict(ctx.params))


@pytest.mark.parametrize("page", PAGES)
def test_the_python_blocks_name_what_the_api_has(page):
    import metauas
    from metauas.inference.api import Segmenter

    owners = {"metauas": metauas, "model": Segmenter}
    for lang, code in page_blocks(page):
        if lang != "python":
            continue
        for node in ast.walk(ast.parse(code)):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in owners:
                assert hasattr(owners[node.value.id], node.attr), f"{page}: {node.value.id}.{node.attr}"


# --- slow: everything runs -----------------------------------------------------------


@pytest.fixture
def workspace(tmp_path) -> Path:
    """The stand-in data at the paths the pages name (the table of the module's docstring)."""
    import shutil

    make_coco(tmp_path / "coco", images=40)
    cls = make_mvtec(tmp_path / "mvtec_anomaly_detection", {"tile": (200, 160, 120)}) / "tile"
    train, test = sorted((cls / "train" / "good").glob("*.png")), sorted((cls / "test").rglob("*.png"))
    for folder, files in {
        "my_factory_photos": train + test,
        "normals": train,
        "suspect_dir": test,
        "suspects": test,
    }.items():
        (tmp_path / folder).mkdir()
        for i, f in enumerate(files):
            shutil.copy(f, tmp_path / folder / f"{i:03d}.png")
    shutil.copy(train[0], tmp_path / "good.png")
    shutil.copy(train[0], tmp_path / "normal.png")
    shutil.copy(cls / "test" / "blob" / "000.png", tmp_path / "query.png")
    return tmp_path


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def _serve_once(command: str, cwd: Path) -> str:
    """Start the page, fetch it, stop it; its first page's text."""
    proc = subprocess.Popen(
        ["bash", "-c", command],
        cwd=cwd,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group: stopped whole below
    )
    try:
        line = proc.stdout.readline()
        url = re.search(r"http://\S+", line)
        assert url, f"{command}: no URL\n{line}{proc.stderr.read()[-3000:] if proc.poll() is not None else ''}"
        with urllib.request.urlopen(url.group(0), timeout=60) as response:
            assert response.status == 200
            return response.read().decode()
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=60)


def run_page(page: str, cwd: Path) -> None:
    for lang, body in page_blocks(page):
        if lang == "python":
            proc = subprocess.run([sys.executable, "-c", body], cwd=cwd, env=_env(), capture_output=True, text=True)
            assert proc.returncode == 0, f"{page}:\n{body}\n{proc.stderr[-4000:]}"
            continue
        for command in body:
            if command in NOT_RUN[page]:
                continue
            if cli_args(command)[0] == "app":
                assert "metauas" in _serve_once(toy(command), cwd)
            else:
                run_shell(toy(command), cwd, _env())


@pytest.mark.xdist_group("processes")  # starts torchrun: run apart, one at a time (Makefile)
@pytest.mark.slow
def test_readme_runs_as_printed(workspace):
    from official_reference import official_reference, save_official

    save_official(official_reference(), workspace / "metauas-256.ckpt")
    run_page("README.md", workspace)
    for made in ("shards/coco/index.json", "shards/mine/index.json", "sheet.png", "runs/b4/best.pt"):
        assert (workspace / made).is_file(), made
    for made in ("runs/official.pt", "eval/mvtec/metrics.json", "maps/predictions.csv", "model.onnx"):
        assert (workspace / made).is_file(), made


@pytest.mark.xdist_group("processes")  # minutes of subprocesses (exports, predict): run apart (Makefile)
@pytest.mark.slow
def test_api_md_runs_as_printed(workspace, shard_dir):
    from metauas.cli import main

    train = ["train", "--train", str(shard_dir / "train"), "--val", str(shard_dir / "val"), "--out"]
    assert main([*train, str(workspace / "runs" / "r1"), *TOY["train"].split()]) == 0
    run_page("docs/api.md", workspace)
    for made in (
        "out/predictions.csv",
        "model.onnx",
        "model-encoder.onnx",
        "model.xml",
        "mix.onnx",
        "maps/predictions.csv",
    ):
        assert (workspace / made).is_file(), made
