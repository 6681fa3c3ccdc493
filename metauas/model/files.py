"""Weight files a user names (a checkpoint, `--encoder-weights`, the official file),
read in bounded memory: every one goes through `load_weights_file`.

torch.save writes a zip whose members are stored, not compressed, so no member of a
file torch wrote is larger than the file. A zip with a compressed member (a zip bomb: a
2 MB file whose member inflates to gigabytes, which torch's reader would allocate whole
before it looks at it) is refused from its central directory, read by Python, before
torch opens it. Files in torch's legacy format (not a zip) hold raw storages, as large
as the file. safetensors checks its own header against the file's size. Whatever the
libraries raise for a file that is not theirs becomes one UserError naming the file.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

from metauas.errors import UserError


def check_zip(path: Path, kind: str = "a torch file") -> None:
    """A UserError when `path` is a zip that torch.save cannot have written: a member
    compressed, or members larger together than the file (a central directory that lies)."""
    if not zipfile.is_zipfile(path):
        return  # torch's legacy format, or no zip at all: torch.load says which
    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as err:
        raise UserError(f"{path} is corrupt or not {kind} (zip: {err})") from None
    packed = [m.filename for m in members if m.compress_type != zipfile.ZIP_STORED]
    if packed:
        raise UserError(
            f"{path} is corrupt or not {kind}: its member {packed[0]!r} is compressed, which torch.save never does "
            "(a compressed member may inflate to any size)"
        )
    if sum(m.file_size for m in members) > path.stat().st_size:
        raise UserError(f"{path} is corrupt or not {kind}: its members claim more bytes than it holds")


def load_weights_file(path: str | Path, what: str, kind: str = "a checkpoint") -> Any:
    """The object in a torch file (`weights_only`: a pickle in it never runs) or the
    tensors of a .safetensors file, from a file `what` names; one UserError for a file
    that is missing, corrupt, a bomb, or not `kind` at all."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{what} not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as err:  # noqa: BLE001 - SafetensorError, OSError, ...: all a bad file
            raise UserError(f"{path} is corrupt or not {kind} (safetensors: {str(err)[:150]})") from None
    import torch

    check_zip(path, kind)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any file can be passed, and torch raises many kinds
        # torch's own message spans lines and suggests weights_only=False: not for a user
        raise UserError(f"{path} is corrupt or not {kind} (torch.load: {type(err).__name__})") from None
