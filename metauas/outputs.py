"""Where results go: output places checked before any work, files written whole or not
at all, a full disk told as such, and paths built from data kept under their root.

Every command that writes calls `prepare_dir` (or `check_file`) before its first real
work, so an `--out` that names a file, or a place the user may not write, costs a
second rather than an evaluation's worth of scoring. `write_atomic` writes to a hidden
temporary sibling and renames it, removing the temporary file whatever goes wrong, so a
kill or a full disk never leaves a final-named partial file. `out_of_space` tells a
full disk (or quota) from other I/O errors, so commands can say what is safe and that
rerunning resumes, instead of printing a traceback. `plain_name` and `inside` are the
one check of every path built from data (a class name from meta.json or VisA's csv, a
defect type, an image path in a listing, a COCO `file_name`): a name that would climb
out of its root, or that the file system cannot take, is one line naming it.
"""

from __future__ import annotations

import codecs
import errno
import os
import tempfile
from pathlib import Path, PurePosixPath

from metauas.errors import UserError

OUT_OF_SPACE = (errno.ENOSPC, errno.EDQUOT)


def out_of_space(err: BaseException) -> bool:
    """Whether `err` is an OSError for a full disk or an exhausted quota."""
    return isinstance(err, OSError) and err.errno in OUT_OF_SPACE


def _probe(folder: Path) -> None:
    with tempfile.NamedTemporaryFile(dir=folder, prefix=".probe-"):
        pass


def prepare_dir(path: str | Path, option: str = "--out") -> Path:
    """Create the output folder (and its parents) and prove it writable; a file in the
    way or a folder the user may not write is a UserError now, before any work."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UserError(f"{option} {path} is a file, not a folder: give a folder name (it is created if missing)")
    try:
        path.mkdir(parents=True, exist_ok=True)
        _probe(path)
    except OSError as err:
        raise UserError(f"{option} {path} is not writable ({err.strerror or err})") from None
    return path


def check_file(path: str | Path, suffixes: tuple[str, ...], option: str = "--out") -> Path:
    """An output file's name and folder, checked before any work: one of `suffixes`,
    not a folder, in a folder that exists (or can be made) and is writable."""
    path = Path(path)
    if path.suffix.lower() not in suffixes or path.is_dir():
        raise UserError(f"{option} {path}: give a file name ending in {' or '.join(suffixes)}")
    prepare_dir(path.parent, f"{option} {path}: its folder")
    return path


def write_atomic(path: str | Path, data: bytes | memoryview, fsync: bool = False) -> Path:
    """Write `data` to a hidden temporary sibling, then rename it over `path`. On any
    failure (a full disk, a signal turned exception) the temporary file is removed and
    the error goes on; `path` is either its old self or the whole new file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        tmp.unlink(missing_ok=True)
        if isinstance(err, OSError) and err.filename is None:  # a failed write names no file: name it
            raise OSError(err.errno, err.strerror, str(path)) from err
        raise
    return path


def _bytes_back(err: UnicodeError) -> tuple[str | bytes, int]:
    """Encoding error handler "metauas.names": surrogate escapes (how Python holds the
    bytes of a file name that are not UTF-8) become those bytes again; any other
    character the codec cannot take becomes a backslash escape."""
    if not isinstance(err, UnicodeEncodeError):
        raise err
    text = err.object[err.start : err.end]
    if all("\udc80" <= c <= "\udcff" for c in text):
        return bytes(ord(c) - 0xDC00 for c in text), err.end
    return text.encode("ascii", "backslashreplace").decode("ascii"), err.end


codecs.register_error("metauas.names", _bytes_back)


def text_bytes(text: str, exact_names: bool = False) -> bytes:
    """UTF-8 of a text file we write. File names that are not UTF-8 arrive as surrogate
    escapes: with `exact_names` (CSV, and what commands print, where a name should match
    the file) they become their own bytes again, else (reports for people) a visible
    backslash escape."""
    return text.encode("utf-8", "metauas.names" if exact_names else "backslashreplace")


def remove_stale_temps(folder: str | Path) -> list[Path]:
    """Delete the temporary files `write_atomic` left in `folder` when its process was
    killed mid-write (their pid is gone); a live process's files are left alone."""
    removed = []
    for tmp in Path(folder).glob(".*.tmp-*"):
        pid = tmp.name.rpartition(".tmp-")[2]
        if not pid.isdigit() or _alive(int(pid)):
            continue
        tmp.unlink(missing_ok=True)
        removed.append(tmp)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def _encodable(text: str) -> bool:
    """Whether `text` can be a file name here (a lone surrogate from JSON cannot)."""
    try:
        os.fsencode(text)
    except UnicodeError:
        return False
    return True


def plain_name(name: object, what: str) -> str:
    """`name` when it can be one file or folder name under a root (not empty, not . or
    .., no slash, no control character, at most 255 bytes); else a UserError naming
    `what`. Class names and defect types become folders and file names of the output."""
    if (
        not isinstance(name, str)
        or name in ("", ".", "..")
        or "/" in name
        or os.sep in name
        or any(ord(c) < 32 for c in name)
        or not _encodable(name)
        or len(os.fsencode(name)) > 255
    ):
        raise UserError(
            f"{what} {name!r} cannot be a file name (it must not be empty, . or .., nor hold a slash "
            "or a control character); rename it in the listing"
        )
    return name


def inside(root: Path, relative: object, what: str) -> Path:
    """`root / relative` for a path read from data (an image listed in meta.json, a COCO
    `file_name`): it must be relative and never climb out with `..`; else a UserError
    naming `what`. Links inside the root are the owner's choice and are followed."""
    if not isinstance(relative, str) or not relative or "\0" in relative or not _encodable(relative):
        raise UserError(f"{what} {relative!r} is not a file path")
    parts = PurePosixPath(relative)
    if parts.is_absolute() or ".." in parts.parts or os.path.isabs(relative):
        raise UserError(f"{what} {relative!r} leads outside {root}: give paths relative to it, without ..")
    return Path(root) / parts
