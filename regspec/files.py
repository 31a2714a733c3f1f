"""Writing the files regspec produces (trainers, plots, sweep results): in one rename, so a reader,
or a run stopped by Ctrl-C, sees the old file or the new one and never half of one."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import BinaryIO, Callable, Union

# what write_atomic writes: text (as UTF-8), bytes, or a function that writes into the open binary
# file (torch.save streams a checkpoint there instead of building it in memory first)
Contents = Union[str, bytes, Callable[[BinaryIO], None]]

from regspec.diagnostics import RegspecError, error


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_atomic(path: str | Path, data: Contents) -> Path:
    """Write ``data`` (text as UTF-8, bytes, or what a writer function writes) to ``path`` through a temporary file in the same folder, fsync,
    then ``os.replace``. The folder is created; an existing file keeps its permissions, a new one
    gets the user's default (0o666 less the umask, as ``open`` would give: a temporary file alone
    would be 0o600); a symbolic link keeps pointing at its target, which is replaced. A path that
    cannot be written raises ``RegspecError`` naming it and why."""
    path = Path(path)
    target = path.resolve() if path.is_symlink() else path
    try:
        _write(target, data)
    except OSError as exc:
        raise cannot_write(path, exc) from None
    return path


def cannot_write(path: str | Path, exc: OSError) -> RegspecError:
    """The error for a file regspec could not write: the path and the reason in words (a parent
    that is a file, a folder where a file should be, a missing permission)."""
    path = Path(path)
    blocking = next((a for a in reversed(path.parents) if a.exists() and not a.is_dir()), None)
    if blocking is not None:
        reason = f"{blocking} is a file, not a folder"
    elif path.is_dir():
        reason = "it is a folder"
    else:
        reason = exc.strerror or str(exc)
    return error(f"cannot write {path}: {reason}")


def _write(target: Path, data: Contents) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    mode = target.stat().st_mode & 0o7777 if target.exists() else 0o666 & ~_umask()
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            if callable(data):
                data(fh)
            else:
                fh.write(data.encode("utf-8") if isinstance(data, str) else data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, target)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
