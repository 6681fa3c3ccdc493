"""Hostile files made by the tests themselves: a decompression bomb, truncated and
mistyped images, a folder with links that loop or dangle, broken shards."""

from __future__ import annotations

import io
import struct
import tarfile
import zlib
from pathlib import Path

import cv2
import numpy as np


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_bomb(path: Path, side: int) -> Path:
    """A valid grey PNG of side x side black pixels: a few hundred KB on disk, side**2
    bytes once decoded (and three times that as RGB)."""
    squeeze = zlib.compressobj(9)
    rows = (b"\x00" * (side + 1)) * 1000
    body = b"".join(squeeze.compress(rows[: (side + 1) * min(1000, side - r)]) for r in range(0, side, 1000))
    body += squeeze.flush()
    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", body) + _chunk(b"IEND", b""))
    return path


def textured(rng: np.random.Generator, side: int) -> np.ndarray:
    base = rng.integers(0, 255, (side // 8, side // 8, 3), dtype=np.uint8)
    return cv2.resize(base, (side, side), interpolation=cv2.INTER_CUBIC)


def hostile_folder(root: Path, bomb: Path) -> Path:
    """Four good photos, and one of each kind of trouble a folder source meets."""
    rng = np.random.default_rng(0)
    (root / "sub").mkdir(parents=True)
    for i in range(4):
        cv2.imwrite(str(root / f"good{i}.png"), textured(rng, 96))
    (root / "bomb.png").write_bytes(bomb.read_bytes())
    good = (root / "good0.png").read_bytes()
    (root / "truncated.png").write_bytes(good[: len(good) // 3])
    (root / "notes.jpg").write_text("a text file with an image's name")
    _gif(root / "sub" / "frame.gif", textured(rng, 96))
    (root / "readme.txt").write_text("not an image")
    (root / "self.png").symlink_to("self.png")  # a link to itself
    (root / "gone.png").symlink_to("nowhere.png")  # a dangling link
    (root / "sub" / "up").symlink_to("..")  # a folder loop
    (root / "unreadable.png").symlink_to("/proc/self/clear_refs")  # a file no one may read
    return root


def _gif(path: Path, rgb: np.ndarray) -> None:
    from PIL import Image

    Image.fromarray(rgb).save(path)


def sample_members(rng: np.random.Generator, key: str, side: int = 48, mask_side: int | None = None) -> dict:
    prompt = textured(rng, side)
    query = prompt.copy()
    query[8:24, 8:24] = 255
    mask = np.zeros((mask_side or side,) * 2, np.uint8)
    mask[8:24, 8:24] = 255
    return {
        f"{key}.prompt.png": cv2.imencode(".png", prompt)[1].tobytes(),
        f"{key}.query.png": cv2.imencode(".png", query)[1].tobytes(),
        f"{key}.mask.png": cv2.imencode(".png", mask)[1].tobytes(),
        f"{key}.json": b'{"schema": "changepair/1", "change": "local"}',
    }


def write_tar(path: Path, members: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def hostile_shards(root: Path) -> dict[str, Path]:
    """One shard per trouble, and one good shard; returns them by name."""
    rng = np.random.default_rng(1)
    root.mkdir(parents=True, exist_ok=True)
    good = {k: v for i in range(4) for k, v in sample_members(rng, f"{i:09d}").items()}
    shards = {"good": write_tar(root / "good.tar", good)}
    whole = shards["good"].read_bytes()
    (root / "truncated.tar").write_bytes(whole[:1500])  # cut inside the first sample
    shards["truncated"] = root / "truncated.tar"
    (root / "random.tar").write_bytes(rng.integers(0, 256, 20000, dtype=np.uint8).tobytes())
    shards["random"] = root / "random.tar"
    shards["missing"] = write_tar(
        root / "missing.tar", {k: v for k, v in sample_members(rng, "000000009").items() if "mask" not in k}
    )
    shards["wrong_mask"] = write_tar(root / "wrong_mask.tar", sample_members(rng, "000000010", mask_side=32))
    bad_json = sample_members(rng, "000000011")
    bad_json["000000011.json"] = b"[" * 100000
    shards["bad_json"] = write_tar(root / "bad_json.tar", bad_json)
    garbage = sample_members(rng, "000000012")
    garbage["000000012.query.png"] = b"\x89PNG\r\n\x1a\n garbage"
    shards["garbage_image"] = write_tar(root / "garbage_image.tar", garbage)
    return shards


def raw_header(name: str, size_field: bytes, kind: bytes = b"0") -> bytes:
    """A ustar header block whose 12-byte size field is `size_field` as given (octal text
    or GNU base-256), with a valid checksum: what a hostile writer can put in a shard."""
    info = tarfile.TarInfo(name)
    info.type = kind
    block = bytearray(info.tobuf(tarfile.USTAR_FORMAT))
    block[124:136] = size_field
    block[148:156] = b" " * 8
    block[148:156] = b"%06o\0 " % sum(block)
    return bytes(block)


def base256(value: int) -> bytes:
    return b"\x80" + value.to_bytes(11, "big")


def pax_record(key: str, value: str) -> bytes:
    body = f" {key}={value}\n".encode()
    length = len(body) + 1
    while len(str(length)) + len(body) != length:
        length += 1
    return str(length).encode() + body


def _pax_header(records: bytes) -> bytes:
    return raw_header("pax", b"%011o\0" % len(records), b"x") + _block(records)


def _block(data: bytes) -> bytes:
    return data + b"\0" * (-len(data) % 512)


def _plain_tar(members: dict[str, bytes]) -> bytes:
    """Members as tar blocks, without the end-of-archive blocks (more may follow)."""
    out = b""
    for name, data in members.items():
        info = tarfile.TarInfo(name)
        info.size = len(data)
        out += info.tobuf(tarfile.USTAR_FORMAT) + _block(data)
    return out


HUGE_MEMBER = 300 << 20  # bytes of the real member in the gzip shard: over the reader's 256 MB limit


def header_shards(root: Path, bomb: Path) -> dict[str, Path]:
    """Shards whose tar headers lie, one trouble each; every one starts with a good sample
    (000000000), then the hostile member in sample 000000001, then a good 000000002."""
    rng = np.random.default_rng(4)
    root.mkdir(parents=True, exist_ok=True)
    first, last = sample_members(rng, "000000000"), sample_members(rng, "000000002")
    second = sample_members(rng, "000000001")
    head = _plain_tar(first) + _plain_tar({k: v for k, v in second.items() if "query" not in k})
    tail = _plain_tar(last) + b"\0" * 1024
    query = "000000001.query.png"
    lies = {
        "base256_2e80": raw_header(query, base256(2**80)),
        "base256_2e60": raw_header(query, base256(2**60)),
        "octal_8gb": raw_header(query, b"77777777777\0"),
        "pax_size_1e30": _pax_header(pax_record("size", str(10**30))) + raw_header(query, b"%011o\0" % 0),
        "pax_zero_length": _pax_header(b"0 size=1\n"),
    }
    shards = {}
    for name, lie in lies.items():
        shards[name] = root / f"{name}.tar"
        shards[name].write_bytes(head + lie + b"\0" * 4096 + tail)
    bombed = {**second, query: bomb.read_bytes()}
    shards["png_bomb_member"] = write_tar(root / "png_bomb_member.tar", {**first, **bombed, **last})
    shards["gzip_huge_member"] = _gzip_huge(root / "gzip_huge_member.tar.gz", head, query, tail)
    return shards


def _gzip_huge(path: Path, head: bytes, name: str, tail: bytes) -> Path:
    """A gzip shard (about 300 KB) whose member `name` really holds HUGE_MEMBER zero bytes."""
    import gzip

    zeros = b"\0" * (1 << 20)
    with gzip.open(path, "wb", compresslevel=1) as f:
        f.write(head)
        info = tarfile.TarInfo(name)
        info.size = HUGE_MEMBER
        f.write(info.tobuf(tarfile.USTAR_FORMAT))
        for _ in range(HUGE_MEMBER // len(zeros)):
            f.write(zeros)
        f.write(tail)
    return path


def zip_bomb(checkpoint: Path, out: Path, inflated: int = 1536 << 20) -> Path:
    """`checkpoint` (a zip torch.save wrote) with its first tensor's data replaced by a
    deflated member of `inflated` zero bytes: a file of about 1.5 MB that torch's reader
    would inflate whole before finding it is not that tensor. The deflate stream is one
    fully flushed block of 1 MB of zeros repeated (each such block stands alone), so
    making it costs milliseconds, not the seconds of compressing the zeros."""
    import zipfile

    squeeze = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = squeeze.compress(b"\0" * (1 << 20)) + squeeze.flush(zlib.Z_FULL_FLUSH)
    crc = 0
    for _ in range(inflated >> 20):
        crc = zlib.crc32(b"\0" * (1 << 20), crc)
    bomb = block * (inflated >> 20) + squeeze.flush(zlib.Z_FINISH)
    with zipfile.ZipFile(checkpoint) as src:
        names = src.namelist()
        first = next(n for n in names if n.split("/")[-2:-1] == ["data"] and n.split("/")[-1].isdigit())
        members = [
            (n, bomb, 8, crc, inflated) if n == first else (n, d, 0, zlib.crc32(d), len(d))
            for n, d in ((n, src.read(n)) for n in names)
        ]
    out.write_bytes(_zip(members))
    return out


def _zip(members: list[tuple[str, bytes, int, int, int]]) -> bytes:
    """A zip archive of (name, data as stored, method, crc32, inflated size) members."""
    body, central = bytearray(), bytearray()
    for name, data, method, crc, size in members:
        raw = name.encode()
        offset = len(body)
        body += struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, method, 0, 0x21, crc, len(data), size, len(raw), 0)
        body += raw + data
        fields = (0x02014B50, 20, 20, 0, method, 0, 0x21, crc, len(data), size, len(raw), 0, 0, 0, 0, 0, offset)
        central += struct.pack("<IHHHHHHIIIHHHHHII", *fields) + raw
    n = len(members)
    return bytes(body + central + struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, n, n, len(central), len(body), 0))
