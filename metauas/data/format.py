"""The `changepair/1` shard format: schema, names, a sample's encoding, and the one
reader, torch-free.

Everything a consumer of our shards needs lives here and imports only the standard
library, NumPy and OpenCV, so a generation node, `metauas preview`, a user's own change
model and the trainer's validation pass all read shards with the same code (the trainer
adds webdataset's node/worker splitting and shuffling on top, see `trainer/stream.py`).

A shard is a plain POSIX tar; a sample is the run of members sharing a key (the member
name up to its first dot): `<key>.prompt.<ext>`, `<key>.query.<ext>`, `<key>.mask.png`,
`<key>.json` (docs/shards.md). Corrupt samples and unreadable shards are skipped, logged
and counted in a `ReadStats`, so one bad tar never ends a pass.
"""

from __future__ import annotations

import bz2
import glob
import gzip
import io
import json
import logging
import lzma
import os
import shlex
import subprocess
import tarfile
import typing
import urllib.request
import zlib
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import IO, Any, Literal

import cv2
import numpy as np

from metauas.data.images import SkipSource, decode_bounded, encode
from metauas.errors import UserError

SCHEMA = "changepair/1"
ChangeType = Literal["disappear", "appear", "exchange", "local", "none"]
CHANGE_TYPES: tuple[ChangeType, ...] = typing.get_args(ChangeType)
IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp")
INDEX = "index.json"
# Pixels of one shard image, from its header, before it is decoded: a pair of 8192 px
# squares (600 MB decoded) at most; a PNG bomb as a member is skipped as too_large.
SHARD_PIXELS = 8192 * 8192

log = logging.getLogger("metauas.format")


def shard_name(prefix: str, shard_id: int) -> str:
    """`<prefix>-NNNNNN.tar`, the name every shard of a dataset follows."""
    return f"{prefix}-{shard_id:06d}.tar"


def sample_key(index: int, num_pairs: int) -> str:
    """Zero-padded global index: no dots (a key ends at the first dot of a member name)."""
    return f"{index:0{max(9, len(str(num_pairs - 1)))}d}"


def is_remote(url: str) -> bool:
    return url.startswith("pipe:") or "://" in url


def pipe_commands(spec: str | Iterable[str]) -> list[str]:
    """The shell commands a shard spec would run: its `pipe:` URLs, braces expanded
    (`s3://` URLs become a fixed, quoted `aws s3 cp` and are not counted)."""
    import braceexpand

    specs = [spec] if isinstance(spec, str) else list(spec)
    return [url[5:] for item in specs for url in braceexpand.braceexpand(item) if url.startswith("pipe:")]


def expand_urls(spec: str | Iterable[str]) -> list[str]:
    """Shard URLs from local paths, folders, brace patterns, globs, `pipe:` commands or
    http(s):// / s3:// URLs.

    Braces are expanded for every kind (webdataset's syntax); local patterns are then
    globbed and folders contribute their `*.tar`. Missing local shards are a user error.
    `s3://` URLs become `pipe:aws s3 cp URL -` (the AWS CLI streams the object to stdout),
    so every reader, webdataset's included, opens them the same way.
    """
    import braceexpand

    specs = [spec] if isinstance(spec, str) else list(spec)
    urls: list[str] = []
    for item in specs:
        for url in braceexpand.braceexpand(item):
            if url.startswith("s3://"):
                urls.append(f"pipe:aws s3 cp {shlex.quote(url)} -")
            elif is_remote(url):
                urls.append(url)
            elif os.path.isdir(url):
                urls.extend(sorted(glob.glob(os.path.join(url, "*.tar"))))
            elif glob.has_magic(url):
                urls.extend(sorted(glob.glob(url)))
            elif os.path.isfile(url):
                urls.append(url)
            else:
                raise UserError(f"shard not found: {url}")
    if not urls:
        raise UserError(f"no shards match {spec!r}")
    return urls


def _index_counts(path: str) -> dict[str, int]:
    try:
        with open(path) as f:
            shards = json.load(f).get("shards", [])
    except (OSError, ValueError, AttributeError, RecursionError):
        return {}
    counts = {}
    for shard in shards if isinstance(shards, list) else []:
        if isinstance(shard, dict) and isinstance(shard.get("name"), str) and type(shard.get("count")) is int:
            counts[os.path.basename(shard["name"])] = max(shard["count"], 0)
    return counts


def count_samples(urls: list[str]) -> int:
    """Samples in local shards: from index.json beside them when present, else from the
    member names (the shard reader's own parser, data skipped); a shard that breaks off
    counts the samples before the break, as the stream will read them."""
    total = 0
    for url in urls:
        if is_remote(url):
            raise UserError("`epochs` needs local shards to count samples; use `steps` for URLs")
        counts = _index_counts(os.path.join(os.path.dirname(url), INDEX))
        name = os.path.basename(url)
        if name in counts:
            total += counts[name]
            continue
        try:
            with open_stream(url) as stream:
                for member, _ in _members(stream, data=False):
                    total += member.endswith(".mask.png")
        except READ_ERRORS as err:
            log.warning("counting %s: it breaks off (%s: %s)", url, type(err).__name__, str(err)[:200])
    return total


def split_name(name: str) -> tuple[str, str]:
    """(key, extension) of a member name: the key ends at the basename's first dot."""
    folder, _, base = name.rpartition("/")
    stem, _, ext = base.partition(".")
    return (f"{folder}/{stem}" if folder else stem), ext


@contextmanager
def open_stream(url: str) -> Iterator[IO[bytes]]:
    """A binary stream of one shard: a local file, a `pipe:` command's stdout, or an
    http(s) URL."""
    if url.startswith("pipe:"):
        proc = subprocess.Popen(url[5:], shell=True, stdout=subprocess.PIPE)
        stdout = typing.cast(IO[bytes], proc.stdout)  # stdout=PIPE: always a stream
        try:
            yield stdout
            # the reader is done, the command may not be: a tar parser stops at the first
            # end-of-archive block, and closing the pipe on the rest (the archive's record
            # padding) kills the command with SIGPIPE (status 141) at random, which would
            # count a whole shard as unreadable and lose its last sample
            while stdout.read(1 << 16):
                pass
        except BaseException:  # the reader stopped early or failed: end the command quietly
            proc.kill()
            proc.wait()
            raise
        finally:
            stdout.close()
        if proc.wait() != 0:
            raise OSError(f"{url!r} exited with status {proc.returncode}")
    elif url.startswith(("http://", "https://")):
        with urllib.request.urlopen(url, timeout=60) as response:
            yield response
    else:
        with open(url, "rb") as f:
            yield f


@dataclass
class ReadStats:
    """What a pass over shards skipped, by reason, with the first few details."""

    samples: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    examples: list[str] = field(default_factory=list)
    quiet: bool = False  # count without logging (the caller reports the summary)

    def skip(self, reason: str, detail: str) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1
        if len(self.examples) < 5:
            self.examples.append(detail)
        if not self.quiet:
            log.warning("skipping %s: %s", reason, detail[:300])

    def summary(self) -> str:
        """One line for the end of a run; empty when nothing was skipped."""
        if not self.skipped:
            return ""
        parts = ", ".join(f"{n} {reason}" for reason, n in sorted(self.skipped.items()))
        return f"skipped {parts} (first: {self.examples[0]})"


TAR_BLOCK = 512
# magic bytes -> the opener that decompresses such a stream (binary mode)
COMPRESSED: dict[bytes, Callable[[Any, Literal["rb"]], io.BufferedIOBase]] = {
    b"\x1f\x8b": gzip.open,
    b"BZh": bz2.open,
    b"\xfd7zXZ\x00": lzma.open,
}
# One member read into memory at most: a shard member is one image (or the sample's JSON),
# and a larger one (a hostile size field, a gzip bomb) is skipped by reading past it in
# chunks, never held. Pax and GNU long-name headers describe one name: a megabyte is plenty.
MAX_MEMBER = 256 << 20
MAX_HEADER = 1 << 20
CHUNK = 1 << 20
# What reading a shard may raise for bad data; each makes the rest of that shard unreadable.
READ_ERRORS = (OSError, tarfile.TarError, EOFError, ValueError, OverflowError, zlib.error, lzma.LZMAError)


class _Prefixed:
    """A binary stream with its first bytes (already read) put back in front."""

    def __init__(self, head: bytes, stream: IO[bytes]) -> None:
        self.head, self.stream = head, stream

    def read(self, n: int = -1) -> bytes:
        if not self.head:
            return self.stream.read(n)
        if n < 0:
            out, self.head = self.head + self.stream.read(), b""
            return out
        out, self.head = self.head[:n], self.head[n:]
        return out if len(out) == n else out + self.stream.read(n - len(out))


def _read_exact(stream, n: int) -> bytes:
    """n bytes, fewer only at the end of the stream (pipes and sockets return short reads)."""
    chunks, left = [], n
    while left > 0:
        chunk = stream.read(min(left, CHUNK))
        if not chunk:
            break
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _skip(stream, n: int) -> None:
    """Read past n bytes a chunk at a time (memory stays one chunk whatever n claims);
    EOFError when the stream ends first, as it does for a size larger than the file."""
    while n > 0:
        chunk = stream.read(min(n, CHUNK))
        if not chunk:
            raise EOFError("tar member cut short")
        n -= len(chunk)


def _number(field: bytes) -> int:
    """A tar header number: octal text, or GNU base-256 when the high bit is set."""
    if field[0] & 0x80:
        return int.from_bytes(field[1:], "big")
    text = field.split(b"\0", 1)[0].strip()
    return int(text, 8) if text else 0


def _pax(data: bytes) -> dict[str, str]:
    """The records ("LEN key=value\n") of a pax extended header; a record whose length
    does not fit the header is a ReadError (a zero length would never end)."""
    out, pos = {}, 0
    while pos < len(data):
        space = data.index(b" ", pos)
        length = int(data[pos:space])
        if length <= space - pos or pos + length > len(data):
            raise tarfile.ReadError("bad pax record length")
        key, _, value = data[space + 1 : pos + length - 1].partition(b"=")
        out[key.decode("utf-8", "surrogateescape")] = value.decode("utf-8", "surrogateescape")
        pos += length
    return out


def _size(block: bytes, pax: dict[str, str]) -> int:
    """A member's size: the pax record's, else the header's; junk is a ReadError."""
    text = pax.get("size")
    if text is not None and not (text.isascii() and text.isdigit()):
        raise tarfile.ReadError(f"bad pax size {text[:40]!r}")
    return int(text) if text is not None else _number(block[124:136])


def _name(block: bytes, pax: dict[str, str], long_name: str | None) -> str:
    """The member's path: pax, GNU long name, else ustar prefix + name (bytes that are not
    UTF-8 kept as surrogate escapes, as Python keeps such file names)."""
    prefix = block[345:500].split(b"\0", 1)[0] if block[257:262] == b"ustar" else b""
    name = block[:100].split(b"\0", 1)[0]
    return pax.get("path") or long_name or (prefix + b"/" + name if prefix else name).decode("utf-8", "surrogateescape")


def tar_members(stream, data: bool = True, max_member: int = MAX_MEMBER) -> Iterator[tuple[str, bytes | None]]:
    """(name, bytes) of each regular file of an uncompressed tar stream, parsed directly.

    Reading a 256 px pair through the tarfile module took 0.12-0.27 ms here (webdataset's
    reader 0.14-0.16 ms), this 0.04 ms: a few percent of the loader's per-pair budget, so
    the training stream and every reader here use it: POSIX ustar headers
    (checksums checked), pax extended headers (path, size) and GNU long names; other
    entries (folders, links) are skipped. A member over `max_member` bytes (or every
    member, with `data=False`) comes as (name, None), read past in chunks: memory stays
    bounded whatever a size field claims. A corrupt header raises tarfile.ReadError, a
    cut stream EOFError."""
    pax: dict[str, str] = {}
    long_name = None
    while True:
        block = _read_exact(stream, TAR_BLOCK)
        if len(block) < TAR_BLOCK or block.count(0) == TAR_BLOCK:
            if block.strip(b"\0"):
                raise EOFError("tar header cut short")
            return  # the end-of-archive zero blocks (or the end of the stream)
        if _number(block[148:156]) != sum(block[:148]) + 256 + sum(block[156:]):
            raise tarfile.ReadError("bad tar header checksum")
        kind, size = block[156:157], _size(block, pax)
        padded = size + -size % TAR_BLOCK  # the member and its padding
        if kind in (b"x", b"L"):  # they describe the next member
            if size > MAX_HEADER:
                raise tarfile.ReadError(f"a {size:,}-byte extended header")
            body = _whole(stream, padded)[:size]
            if kind == b"x":
                pax = _pax(body)
            else:
                long_name = body.rstrip(b"\0").decode("utf-8", "surrogateescape")
            continue
        name = _name(block, pax, long_name)
        pax, long_name = {}, None
        if kind not in (b"0", b"\0", b"7"):
            _skip(stream, padded)
        elif size > max_member or not data:
            _skip(stream, padded)
            yield name, None
        else:
            yield name, _whole(stream, padded)[:size]


def _whole(stream, n: int) -> bytes:
    data = _read_exact(stream, n)
    if len(data) < n:
        raise EOFError("tar member cut short")
    return data


def _members(stream: IO[bytes], data: bool = True) -> Iterator[tuple[str, bytes | None]]:
    """(name, bytes) of the regular files of a tar stream, compressed ones (gzip, bzip2,
    xz) decompressed as a stream into the same parser, so the same member limit holds."""
    head = _read_exact(stream, TAR_BLOCK)
    if not head:
        raise tarfile.ReadError("empty file")
    opener = next((o for magic, o in COMPRESSED.items() if head.startswith(magic)), None)
    if opener is None:
        yield from tar_members(_Prefixed(head, stream), data)
        return
    with opener(_Prefixed(head, stream), "rb") as unpacked:
        yield from tar_members(unpacked, data)


def shard_samples(url: str, stats: ReadStats) -> Iterator[dict]:
    """Raw samples of one shard, webdataset-style: {"__key__", "__url__", ext: bytes}.
    An unreadable shard (or its unreadable rest) is counted in `stats` and logged."""
    current: dict = {}
    try:
        with open_stream(url) as stream:
            for name, data in _members(stream):
                key, ext = split_name(name)
                if current and key != current["__key__"]:
                    yield current
                    current = {}
                current.setdefault("__key__", key)
                current["__url__"] = url
                current[ext] = data
    except READ_ERRORS as err:
        current = {}  # a sample cut by the error is part of what the shard lost
        stats.skip("unreadable_shard", f"{url}: {type(err).__name__}: {err}")
    if current:
        yield current


def iter_samples(urls: str | Iterable[str], stats: ReadStats | None = None) -> Iterator[dict]:
    """Raw samples of every shard, in order. Unreadable shards are skipped and counted."""
    stats = stats if stats is not None else ReadStats()
    for url in expand_urls(urls):
        yield from shard_samples(url, stats)


class BadSample(ValueError):
    """A sample that cannot be used; `reason` is what `ReadStats` counts it as."""

    def __init__(self, message: str, reason: str = "corrupt_sample") -> None:
        super().__init__(message)
        self.reason = reason


def _decode_image(sample: dict, ext: str, flags: int) -> np.ndarray:
    """One image member through the project's bounded decoder (`images.decode_bounded`,
    `SHARD_PIXELS`); a member over the byte limit was read as None."""
    what = f"sample {sample.get('__key__', '?')}: {ext}"
    if sample[ext] is None:
        raise BadSample(f"{what} is over {MAX_MEMBER:,} bytes", "too_large")
    try:
        return decode_bounded(sample[ext], what, SHARD_PIXELS, flags)
    except SkipSource as skip:
        raise BadSample(str(skip), "too_large" if skip.reason == "too_large" else "corrupt_sample") from None


def _plain(value):
    """numpy scalars/arrays -> JSON-ready Python values."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def to_json(obj) -> bytes:
    """Compact JSON with sorted keys (NumPy values as Python ones): the same object gives
    the same bytes, which byte-identical shards and index files rest on."""
    return json.dumps(obj, sort_keys=True, default=_plain).encode()


def encode_pair(
    key: str,
    prompt: np.ndarray,
    query: np.ndarray,
    mask: np.ndarray,
    meta: dict,
    image_format: str = "jpg",
    quality: int = 95,
) -> list[tuple[str, bytes]]:
    """The four members of one sample, in the order they go into the tar (the inverse of
    `decode_pair`): RGB uint8 prompt and query of one size, a mask of that size (nonzero =
    changed, stored as 255), and `meta` as the sample's JSON with "schema" set. Raises
    ValueError for sizes that differ or a "change" that is not one of CHANGE_TYPES."""
    if prompt.shape != query.shape or prompt.ndim != 3 or mask.shape != prompt.shape[:2]:
        raise ValueError(
            f"sample {key}: prompt {prompt.shape}, query {query.shape} and mask {mask.shape} "
            "must be H x W x 3, H x W x 3 and H x W"
        )
    if meta.get("change") not in CHANGE_TYPES:
        raise ValueError(f"sample {key}: meta['change'] must be one of {', '.join(CHANGE_TYPES)}")
    return [
        (f"{key}.prompt.{image_format}", encode(prompt, image_format, quality)),
        (f"{key}.query.{image_format}", encode(query, image_format, quality)),
        (f"{key}.mask.png", encode((mask > 0).astype(np.uint8) * 255, "png")),
        (f"{key}.json", to_json({**meta, "schema": SCHEMA})),
    ]


def decode_pair(sample: dict, meta: bool = True) -> dict:
    """A raw sample -> RGB uint8 prompt/query (H x W x 3), uint8 {0,1} mask (H x W) and
    the sample's JSON as `meta` ({} without `meta`: the training stream never reads it).
    Raises BadSample (a ValueError) for a member missing, a member that does not decode
    or is too large (reason `too_large`: over MAX_MEMBER bytes, or SHARD_PIXELS pixels
    from its header) or sizes that differ."""
    key = sample.get("__key__", "?")
    ext = next((e for e in IMAGE_EXTENSIONS if f"prompt.{e}" in sample), None)
    if ext is None or f"query.{ext}" not in sample or "mask.png" not in sample:
        raise BadSample(f"sample {key} lacks prompt/query/mask files")
    prompt = cv2.cvtColor(_decode_image(sample, f"prompt.{ext}", cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    query = cv2.cvtColor(_decode_image(sample, f"query.{ext}", cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    mask = (_decode_image(sample, "mask.png", cv2.IMREAD_GRAYSCALE) > 127).astype(np.uint8)
    if not prompt.shape == query.shape or prompt.shape[:2] != mask.shape:
        raise BadSample(f"sample {key}: prompt, query and mask sizes differ")
    try:
        info = json.loads(sample["json"]) if meta and sample.get("json") is not None else {}
    except (ValueError, RecursionError):  # not JSON, not UTF-8, or nested beyond reason
        raise BadSample(f"sample {key}: its .json member is not JSON") from None
    return {"key": key, "prompt": prompt, "query": query, "mask": mask, "meta": info if isinstance(info, dict) else {}}


def iter_pairs(urls: str | Iterable[str], stats: ReadStats | None = None) -> Iterator[dict]:
    """Decoded pairs (see `decode_pair`) of every shard, in order; corrupt samples and
    shards are skipped and counted in `stats`."""
    stats = stats if stats is not None else ReadStats()
    for sample in iter_samples(urls, stats):
        try:
            pair = decode_pair(sample)
        except ValueError as err:
            stats.skip(getattr(err, "reason", "corrupt_sample"), f"{sample.get('__url__', '?')}: {err}")
            continue
        stats.samples += 1
        yield pair
