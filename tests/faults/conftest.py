"""Fixtures of the fault suite: real size-limited and read-only filesystems (tmpfs),
skipped with the reason where this machine does not let the test mount one."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from fault_helpers import mount_tmpfs, umount


def _mounted(path: Path, size: str, *options: str) -> Path:
    try:
        mount_tmpfs(path, size, *options)
    except (subprocess.CalledProcessError, FileNotFoundError, PermissionError) as err:
        detail = getattr(err, "stderr", b"") or b""
        pytest.skip(f"cannot mount a tmpfs here (needs root or CAP_SYS_ADMIN): {detail.decode().strip() or err}")
    return path


@pytest.fixture
def small_disk(tmp_path):
    """A factory: small_disk("2m") -> a folder on a fresh tmpfs of that size."""
    mounts = []

    def make(size: str) -> Path:
        path = _mounted(tmp_path / f"disk{len(mounts)}", size)
        mounts.append(path)
        return path

    yield make
    for path in mounts:
        umount(path)


@pytest.fixture
def readonly_dir(tmp_path):
    """A folder on a read-only tmpfs: no one, root included, may write there."""
    path = _mounted(tmp_path / "readonly", "1m", "ro")
    yield path
    umount(path)
