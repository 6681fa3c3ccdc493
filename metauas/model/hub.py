"""Pretrained weights by name: `hf:owner/repo/path/file.ckpt` anywhere a checkpoint is asked for.

The file is fetched with `huggingface_hub` (its cache, `HF_HUB_OFFLINE`, tokens and
mirrors apply as usual). A file that is already one of our checkpoints is used as is;
the paper authors' checkpoint (`csgaobb/MetaUAS` `metauas-256.ckpt` / `metauas-512.ckpt`)
is converted once with `import-official`'s code and the converted file cached under
`$METAUAS_CACHE` (default `~/.cache/metauas`), keyed by the download's content hash, so
a second load costs one file read. Offline without the file in the cache, or any
download failure, is one line saying how to get the file by hand.

Offline is known before asking: with `HF_HUB_OFFLINE` set, or when the hub's host does
not take a connection within a second or two (tried once per process), only the local
cache is read, so a machine without network fails at once with one line instead of
huggingface_hub's retries and their warnings (27 s measured).
"""

from __future__ import annotations

import functools
import hashlib
import os
import socket
import threading
from pathlib import Path
from urllib.parse import urlparse

from metauas.errors import UserError

PREFIX = "hf:"
PROBE_SECONDS = 1.5  # how long the hub's host has to take a connection before we call it offline


def cache_dir() -> Path:
    return Path(os.environ.get("METAUAS_CACHE") or Path.home() / ".cache" / "metauas")


def parse(name: str) -> tuple[str, str]:
    """`hf:owner/repo/path/file` -> ("owner/repo", "path/file")."""
    parts = name[len(PREFIX) :].strip("/").split("/")
    if len(parts) < 3 or not all(parts):
        raise UserError(f"{name!r}: a pretrained name is hf:OWNER/REPO/FILE (e.g. hf:csgaobb/MetaUAS/metauas-256.ckpt)")
    return "/".join(parts[:2]), "/".join(parts[2:])


def offline() -> bool:
    """Whether to read the local cache only: HF_HUB_OFFLINE is set, or no network."""
    flag = os.environ.get("HF_HUB_OFFLINE", "").strip().lower()
    return flag in ("1", "true", "yes", "on") or not _hub_reachable(
        os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    )


@functools.lru_cache(maxsize=None)
def _hub_reachable(endpoint: str) -> bool:
    """Whether `endpoint`'s host takes a TCP connection within PROBE_SECONDS (name lookup
    included: it runs in a thread, since a lookup has no timeout of its own). Once per process."""
    url = urlparse(endpoint)
    address = (url.hostname or "", url.port or (443 if url.scheme == "https" else 80))
    answered: list[bool] = []

    def probe() -> None:
        try:
            socket.create_connection(address, timeout=PROBE_SECONDS).close()
            answered.append(True)
        except OSError:
            answered.append(False)

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(PROBE_SECONDS + 0.5)
    return bool(answered and answered[0])


@functools.lru_cache(maxsize=None)
def download(name: str) -> Path:
    """The named file in the local Hugging Face cache, downloaded if needed and allowed
    (once per process: a command that fetched it first does not ask the hub again)."""
    repo, filename = parse(name)
    try:
        from huggingface_hub import hf_hub_download
    except ImportError:
        raise UserError(
            f"{name}: pretrained names need huggingface_hub (pip install huggingface_hub), "
            "or download the file by hand and pass its path"
        ) from None
    url = f"https://huggingface.co/{repo}/resolve/main/{filename}"
    local_only = offline()
    try:
        return Path(hf_hub_download(repo_id=repo, filename=filename, local_files_only=local_only))
    except Exception as err:  # noqa: BLE001 - network, auth, offline, missing file: all say the same to a user
        if local_only:
            raise UserError(
                f"cannot get {name}: offline (no network, or HF_HUB_OFFLINE) and not in the Hugging Face cache; "
                f"download {url} by hand and pass its path instead"
            ) from None
        reason = str(err).splitlines()[0][:160] if str(err) else type(err).__name__
        raise UserError(
            f"cannot get {name} ({type(err).__name__}: {reason}); download {url} by hand and pass its path instead"
        ) from None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def converted(path: Path, name: str) -> Path:
    """Our checkpoint for a downloaded file: the file itself when it is ours, else the
    cached conversion of the official checkpoint (made on first use, atomically)."""
    from metauas.model.checkpoint import is_checkpoint, save_checkpoint
    from metauas.model.official import load_official, size_from_name

    if is_checkpoint(path):
        return path
    target = cache_dir() / "converted" / f"{_sha256(path)[:16]}-{Path(path).stem}.pt"
    if not target.is_file():
        model = load_official(path)
        extra = {
            "source": name,
            "official": True,
            "origin": "official MetaUAS checkpoint (gaobb/MetaUAS), converted on download",
        }
        save_checkpoint(target, model, size=size_from_name(Path(name)) or 256, step=0, extra=extra)
    return target


def fetch_first(checkpoint: str | Path | None) -> None:
    """Fetch a pretrained name now, before a command imports the model stack: offline,
    a missing file is one line in a moment, not after seconds of loading torch."""
    if checkpoint is not None and str(checkpoint).startswith(PREFIX):
        download(str(checkpoint))


def resolve_checkpoint(checkpoint: str | Path) -> Path:
    """A local checkpoint path as given, or the converted file behind a pretrained name."""
    text = str(checkpoint)
    if not text.startswith(PREFIX):
        return Path(checkpoint)
    return converted(download(text), text)
