"""The base install (no `torch` extra) generates, previews and reads shards.

Each check runs in a real subprocess where the model stack cannot be imported: a
meta-path hook refuses torch, torchvision, timm, webdataset, safetensors and tensorboard
exactly as an environment without them would (ModuleNotFoundError). Commands that need
the stack must say so in one line naming the extra.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

BLOCKER = textwrap.dedent("""
    import sys
    STACK = {"torch", "torchvision", "timm", "webdataset", "safetensors", "tensorboard"}
    class NotInstalled:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in STACK:
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
    sys.meta_path.insert(0, NotInstalled())
""")


def run_without_torch(tmp_path, code: str) -> subprocess.CompletedProcess:
    script = tmp_path / "no_torch.py"
    script.write_text(BLOCKER + textwrap.dedent(code))
    return subprocess.run([sys.executable, str(script)], capture_output=True, text=True, cwd=tmp_path, timeout=300)


def cli(*args: str) -> str:
    return f"from metauas.cli import main\nsys.exit(main({list(args)!r}))\n"


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("notorch")
    proc = run_without_torch(
        tmp,
        cli(
            "generate",
            "--source",
            "builtin",
            "--num-pairs",
            "6",
            "--size",
            "64",
            "--shard-size",
            "3",
            "--out",
            "pairs",
            "--no-progress",
        ),
    )
    assert proc.returncode == 0, proc.stderr
    return tmp


def test_generate_and_preview_run_without_torch(pairs):
    assert sorted(p.name for p in (pairs / "pairs").glob("*.tar")) == ["shard-000000.tar", "shard-000001.tar"]
    proc = run_without_torch(
        pairs, cli("preview", "pairs/shard-000000.tar", "pairs/shard-000001.tar", "--out", "sheet.png")
    )
    assert proc.returncode == 0, proc.stderr
    assert (pairs / "sheet.png").stat().st_size > 1000


def test_the_shard_reader_and_writer_run_without_torch(pairs):
    proc = run_without_torch(
        pairs,
        """
        from metauas.data import ShardWriter, count_samples, expand_urls, iter_pairs
        urls = expand_urls("pairs")
        pairs = list(iter_pairs(urls))
        assert count_samples(urls) == len(pairs) == 6
        assert pairs[0]["prompt"].shape == (64, 64, 3) and pairs[0]["mask"].shape == (64, 64)
        with ShardWriter("copy", "copier", shard_size=4) as writer:
            for pair in pairs:
                writer.write(pair["prompt"], pair["query"], pair["mask"], pair["meta"])
        assert count_samples(expand_urls("copy")) == 6
        assert "torch" not in sys.modules
        print("ok", pairs[0]["meta"]["change"])
    """,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("ok ")


@pytest.mark.parametrize(
    "command",
    [
        ("train", "--train", "pairs", "--out", "run", "--steps", "1"),
        ("evaluate", "--data", ".", "--out", "e", "--method", "lookup"),
        ("bench", "model"),
    ],
)
def test_model_commands_name_the_extra_in_one_line(pairs, command):
    proc = run_without_torch(pairs, cli(*command))
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "pip install 'metauas[torch]'" in lines[0], proc.stderr
    assert f"metauas {' '.join(a for a in command[:2] if not a.startswith('-'))}" in lines[0]
