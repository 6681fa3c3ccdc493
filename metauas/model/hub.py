"""Pretrained weights by name: `hf:owner/repo/path/file.ckpt` anywhere a checkpoint is asked for.

The file is fetched with `huggingface_hub` (its cache, `HF_HUB_OFFLINE`, tokens and
mirrors apply as usual). A file that is already one of our checkpoints is used as is;
the paper authors' checkpoint (`csgaobb/MetaUAS` `metauas-256.ckpt` / `metauas-512.ckpt`)
is converted once with `import-official`'s code and the converted file cached under
`$METAUAS_CACHE` (default `~/.cache/metauas`), keyed by the download's content hash, so
a second load costs one file read. Offline without the file in the cache, or any
download failure, is one line saying how to get the file by hand.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from metauas.errors import UserError

PREFIX = "hf:"


def cache_dir() -> Path:
    return Path(os.environ.get("METAUAS_CACHE") or Path.home() / ".cache" / "metauas")


def parse(name: str) -> tuple[str, str]:
    """`hf:owner/repo/path/file` -> ("owner/repo", "path/file")."""
    parts = name[len(PREFIX) :].strip("/").split("/")
    if len(parts) < 3 or not all(parts):
        raise UserError(f"{name!r}: a pretrained name is hf:OWNER/REPO/FILE (e.g. hf:csgaobb/MetaUAS/metauas-256.ckpt)")
    return "/".join(parts[:2]), "/".join(parts[2:])


def download(name: str) -> Path:
    """The named file in the local Hugging Face cache, downloaded if needed and allowed."""
    repo, filename = parse(name)
    try:
        from huggingface_hub import hf_hub_download
    except ImportError:
        raise UserError(
            f"{name}: pretrained names need huggingface_hub (pip install huggingface_hub), "
            "or download the file by hand and pass its path"
        ) from None
    try:
        return Path(hf_hub_download(repo_id=repo, filename=filename))
    except Exception as err:  # noqa: BLE001 - network, auth, offline, missing file: all say the same to a user
        url = f"https://huggingface.co/{repo}/resolve/main/{filename}"
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


def resolve_checkpoint(checkpoint: str | Path) -> Path:
    """A local checkpoint path as given, or the converted file behind a pretrained name."""
    text = str(checkpoint)
    if not text.startswith(PREFIX):
        return Path(checkpoint)
    return converted(download(text), text)
