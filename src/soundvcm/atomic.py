"""Write-then-rename: outputs appear complete or not at all; write errors are ``OSError`` in one
line naming the output. :func:`unreadable` says why an input cannot be read, in words.

Temporary files are named ``.STEM.pPID.XXXX.tmpSUFFIX`` beside their target, so that what a
killed process left behind can be told from what a running one is still writing:
:func:`remove_stale` deletes the temporaries (and ``temporary_dir`` folders) whose process is gone.
SIGTERM is handled like Ctrl-C by the command line (:func:`soundvcm.cli.main`), so a terminated
command removes its own temporaries on the way out.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

_OWNER = re.compile(r"[.-]p(\d+)\.")
OLD_FORMAT_AGE = 600.0  # temporaries named before the pid was recorded: stale after 10 minutes


def umask() -> int:
    """The process's umask (read without changing it for good)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: str | Path, write: Callable[[Path], object]) -> Path:
    """Call ``write(tmp)`` on a temporary file next to ``path`` (same suffix), then rename it over
    ``path`` with the usual permissions; on any failure the temporary file is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(
        prefix=f".{path.stem}.p{os.getpid()}.", suffix=f"{path.suffix}.tmp{path.suffix}", dir=path.parent
    )
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~umask())
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM):
            error = OSError(f"{path}: could not be written ({exc.strerror or exc})")
            error.errno = exc.errno  # one line for the user, the cause for code
            raise error from exc
        raise
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def unreadable(path: Path) -> str | None:
    """Why ``path`` cannot be read as a file, in words (None: it can). Opening it is the only test
    that tells a missing file from a forbidden one (``is_file`` is False for both when a folder on
    the way is closed, and safetensors reports a permission error as "No such file")."""
    try:
        with open(path, "rb"):
            return None
    except FileNotFoundError:
        return "not found"
    except PermissionError:
        return "cannot be read: permission denied"
    except IsADirectoryError:
        return "is a folder, not a file"
    except OSError as exc:
        return f"cannot be read: {exc.strerror or exc}"


def md5sum(path: str | Path, chunk: int = 1 << 20) -> str:
    """The md5 of a file's bytes, read in chunks."""
    import hashlib

    h = hashlib.md5()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def save_tensors(path: str | Path, tensors: dict, metadata: dict[str, str] | None = None) -> None:
    """``safetensors.torch.save_file``, with its own error type (a full disk, say) raised as ``OSError``."""
    from safetensors import SafetensorError
    from safetensors.torch import save_file

    try:
        save_file(tensors, str(path), metadata=metadata)
    except SafetensorError as exc:
        raise OSError(f"{path}: could not be written ({exc})") from exc


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    return True


def is_stale(path: Path) -> bool:
    """A temporary whose writing process is gone (or, named without a pid, untouched for 10 minutes)."""
    owner = _OWNER.search(path.name)
    if owner is not None:
        return not _alive(int(owner.group(1)))
    try:
        return time.time() - path.stat().st_mtime > OLD_FORMAT_AGE
    except OSError:
        return False


def remove_stale(folder: str | Path, pattern: str = ".*.tmp*", recursive: bool = False) -> list[Path]:
    """Delete what killed processes left in ``folder`` (and its subfolders if ``recursive``): files
    and folders matching ``pattern`` whose process is gone. Returns what was removed."""
    folder = Path(folder)
    removed = []
    found = (folder.rglob(pattern) if recursive else folder.glob(pattern)) if folder.is_dir() else []
    for path in list(found):
        if is_stale(path):
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def temporary_dir(prefix: str, parent: str | Path | None = None) -> Path:
    """``tempfile.mkdtemp`` with the owner's pid in the name (``PREFIXpPID.XXXX``), so that a later
    run can remove it with :func:`remove_stale` once that process is gone."""
    parent = Path(parent) if parent is not None else Path(tempfile.gettempdir())
    remove_stale(parent, f"{prefix}p*.*")
    return Path(tempfile.mkdtemp(prefix=f"{prefix}p{os.getpid()}.", dir=parent))
