"""The direct tar parser reads what the tarfile module reads, in every format a shard
may come in, and fails where it fails."""

from __future__ import annotations

import io
import tarfile

import pytest

from metauas.data.format import ReadStats, shard_samples, tar_members


def _tar(fmt: int, files: dict[str, bytes], mode: str = "w") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode, format=fmt) as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(data), 1234567890.5  # a float mtime makes pax headers
            tar.addfile(info, io.BytesIO(data))
        folder = tarfile.TarInfo("a-folder")
        folder.type = tarfile.DIRTYPE
        tar.addfile(folder)
    return buf.getvalue()


FILES = {
    "000.prompt.jpg": b"p" * 700,
    "000.query.jpg": b"q" * 512,
    "000.mask.png": b"",
    "deep/" * 30 + "001.json": b'{"x": 1}',
    "caf\u00e9/002.json": b"{}",
}


@pytest.mark.parametrize("fmt", [tarfile.USTAR_FORMAT, tarfile.PAX_FORMAT, tarfile.GNU_FORMAT])
def test_every_tar_format_reads_as_tarfile_reads_it(fmt):
    files = FILES if fmt != tarfile.USTAR_FORMAT else {k: v for k, v in FILES.items() if len(k) < 100 and k.isascii()}
    assert list(tar_members(io.BytesIO(_tar(fmt, files)))) == list(files.items())


def test_shards_read_the_same_compressed_or_not_and_broken_ones_are_counted(tmp_path):
    files = {"000.prompt.jpg": b"p", "000.query.jpg": b"q", "001.prompt.jpg": b"r"}
    (tmp_path / "plain.tar").write_bytes(_tar(tarfile.PAX_FORMAT, files))
    (tmp_path / "packed.tar.gz").write_bytes(_tar(tarfile.PAX_FORMAT, files, mode="w:gz"))
    raw = _tar(tarfile.PAX_FORMAT, files)
    (tmp_path / "cut.tar").write_bytes(raw[: 3 * 512 + 100])  # pax header, its data, the header, then cut
    (tmp_path / "garbage.tar").write_bytes(b"not a tar at all" * 64)
    (tmp_path / "empty.tar").write_bytes(b"")
    stats = ReadStats()
    read = {
        name: list(shard_samples(str(tmp_path / name), stats))
        for name in ("plain.tar", "packed.tar.gz", "cut.tar", "garbage.tar", "empty.tar")
    }
    assert [s["__key__"] for s in read["plain.tar"]] == ["000", "001"]
    assert read["plain.tar"][0]["prompt.jpg"] == b"p" and read["packed.tar.gz"] == [
        {**s, "__url__": str(tmp_path / "packed.tar.gz")} for s in read["plain.tar"]
    ]
    assert read["cut.tar"] == [] and read["garbage.tar"] == [] and read["empty.tar"] == []
    assert stats.skipped == {"unreadable_shard": 3}
