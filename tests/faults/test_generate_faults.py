"""generate under hostile inputs and broken machines: bombs and broken files are
counted skips, a full disk and a second writer are one line, a SIGKILL at any point is
repaired by rerunning, byte for byte."""

from __future__ import annotations

import hashlib
import json
import random
import resource
import signal
import subprocess
import sys

import pytest
from fault_helpers import CODE, REPO, clean_env, cli, cpu_of, frozen_at, one_line_error, remount, temp_files
from hostile import hostile_folder, png_bomb

ARGS = ["--size", "48", "--seed", "3", "--no-progress"]
MEMORY = 768 * 2**20  # bytes of data a generate run may map here (RLIMIT_DATA)


def shas(out) -> dict:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(out.glob("*.tar"))}


@pytest.fixture(scope="module")
def bomb(tmp_path_factory):
    """16000 x 16000 grey: 256 MB decoded, 768 MB as RGB; about 250 KB on disk."""
    return png_bomb(tmp_path_factory.mktemp("bomb") / "bomb.png", 16000)


def test_hostile_folder_is_counted_reported_and_never_decoded(tmp_path, bomb):
    folder = hostile_folder(tmp_path / "photos", bomb)
    out = tmp_path / "d"

    def memory_bound() -> None:  # decoding the bomb alone would need 1 GB
        resource.setrlimit(resource.RLIMIT_DATA, (MEMORY, MEMORY))

    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            CODE,
            "generate",
            "--source",
            "folder",
            "--images",
            str(folder),
            "--num-pairs",
            "24",
            "--change-weights",
            "local=1,none=1",
            "--out",
            str(out),
            *ARGS,
        ],
        cwd=REPO,
        env=clean_env(),
        capture_output=True,
        text=True,
        preexec_fn=memory_bound,
    )
    stderr = proc.stderr
    assert proc.returncode == 0, stderr
    index = json.loads((out / "index.json").read_text())
    assert index["pairs_written"] == 24
    assert index["skips"]["too_large"] > 0 and index["skips"]["unreadable"] > 0
    assert "256,000,000 pixels" in index["skip_examples"]["too_large"]
    assert index["source_skips"] == {"broken_link": 1, "not_an_image": 1, "symlink_loop": 2}
    assert "Traceback" not in stderr
    warnings = [line for line in stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 2 and "too_large" in warnings[0] and "unreadable" in warnings[0]
    assert "symlink_loop" in warnings[1]
    used = {json.loads(m)["source"]["file"] for m in _members(out, ".json")}
    assert "frame.gif" in used and not used & {"bomb.png", "truncated.png", "notes.jpg", "unreadable.png"}


def _members(out, suffix):
    import tarfile

    for shard in sorted(out.glob("*.tar")):
        with tarfile.open(shard) as tar:
            yield from (tar.extractfile(m).read() for m in tar if m.name.endswith(suffix))


def test_pixel_limit_is_configurable_and_recorded(tmp_path, bomb):
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "big.png").write_bytes(bomb.read_bytes())
    proc = cli(
        "generate",
        "--source",
        "folder",
        "--images",
        folder,
        "--num-pairs",
        "2",
        "--max-pixels",
        "1000",
        "--out",
        tmp_path / "d",
        *ARGS,
    )
    one_line_error(proc, "no usable image", "too_large")


def test_disk_full_removes_the_partial_shard_and_a_rerun_resumes(tmp_path, small_disk):
    args = [*ARGS, "--num-pairs", "48", "--shard-size", "8", "--image-format", "png"]
    ref = tmp_path / "ref"
    assert cli("generate", *args, "--out", ref).returncode == 0
    total = sum(p.stat().st_size for p in ref.glob("*.tar"))
    disk = small_disk(f"{total // 2 // 1024}k")
    out = disk / "d"
    line = one_line_error(cli("generate", *args, "--out", out), "no space left on device", "rerun")
    made = sorted(out.glob("*.tar"))
    assert 0 < len(made) < 6 and f"{len(made)} of 6 shards ({8 * len(made)} pairs) are complete" in line
    assert not temp_files(out)
    assert all(p.read_bytes() == (ref / p.name).read_bytes() for p in made)
    remount(disk, f"size={4 * total // 1024}k")
    assert cli("generate", *args, "--out", out).returncode == 0
    assert shas(out) == shas(ref) and (out / "index.json").read_bytes() == (ref / "index.json").read_bytes()


def test_a_second_writer_is_refused_while_the_first_goes_on(tmp_path):
    """The first run stops itself as it opens shard 0's temporary file: whatever the
    scheduler does, the second run meets a first run that holds the locks of both its
    shards (taken before any shard file) and has written none of them."""
    args = [*ARGS, "--num-pairs", "64", "--shard-size", "32"]
    ref = tmp_path / "ref"
    assert cli("generate", *args, "--out", ref).returncode == 0
    out = tmp_path / "d"
    first = frozen_at(".shard-000000.tar.tmp-", "generate", *args, "--out", out)
    try:
        second = cli("generate", *args, "--out", out)
    finally:
        first.send_signal(signal.SIGCONT)
    one_line_error(second, "another generate run is writing shard-000000.tar", "wait")
    assert first.wait() == 0, first.communicate()
    assert shas(out) == shas(ref) and not temp_files(out)


@pytest.mark.parametrize("marker", [".shard-000001.json.tmp-", ".shard-000001.tar.tmp-"])
def test_sigkill_while_a_shard_is_committed_then_rerun_leaves_no_temporary_file(tmp_path, marker):
    """Killed as shard 1's commit renames its summary, or then its tar, into place: the
    rerun rewrites the shard, byte for byte, and removes what the kill left (a CI run
    once kept the summary's temporary file)."""
    args = [*ARGS, "--num-pairs", "24", "--shard-size", "8"]
    ref, out = tmp_path / "ref", tmp_path / "d"
    assert cli("generate", *args, "--out", ref).returncode == 0
    frozen = frozen_at(marker, "generate", *args, "--out", out, event="os.rename")
    frozen.kill()
    frozen.wait()
    assert temp_files(out), "the kill should leave the temporary file it froze at"
    assert cli("generate", *args, "--out", out).returncode == 0
    assert shas(out) == shas(ref) and (out / "index.json").read_bytes() == (ref / "index.json").read_bytes()
    assert not temp_files(out)


@pytest.mark.slow
def test_sigkill_at_a_random_point_then_rerun_gives_the_same_bytes(tmp_path):
    """The kernel kills the run when it has used a random share of the CPU time the
    whole run needs (RLIMIT_CPU): it cannot have finished, wherever the kill lands."""
    args = [*ARGS, "--num-pairs", "160", "--shard-size", "8"]
    ref, killed = tmp_path / "ref", tmp_path / "killed"
    cpu = cpu_of(lambda: cli("generate", *args, "--out", ref))
    kill_at = random.randint(1, max(1, int(0.75 * cpu)))
    proc = cli("generate", *args, "--out", killed, cpu_seconds=kill_at)
    assert proc.returncode == -signal.SIGKILL, f"killed at {kill_at} of {cpu:.1f} CPU s: {proc.stderr[-2000:]}"
    assert not (killed / "index.json").exists()
    assert all(p.read_bytes() == (ref / p.name).read_bytes() for p in killed.glob("*.tar"))  # no partial *.tar
    assert cli("generate", *args, "--out", killed).returncode == 0
    assert shas(killed) == shas(ref) and (killed / "index.json").read_bytes() == (ref / "index.json").read_bytes()
    assert not temp_files(killed)
