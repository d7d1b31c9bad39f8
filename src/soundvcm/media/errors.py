"""The one error type for unusable media: its message is shown to users as a single line."""

from __future__ import annotations

from pathlib import Path

from soundvcm.atomic import unreadable


class MediaError(ValueError):
    """Input media that cannot be used (missing, not media, no video stream, nothing decodes)."""


def check_input_path(path: str | Path) -> Path:
    """A readable, non-empty regular file, or a MediaError that says what is wrong."""
    path = Path(path)
    if path.is_dir():
        raise MediaError(f"{path}: is a directory, expected a media file")
    problem = unreadable(path)
    if problem == "not found":
        raise MediaError(f"{path}: no such file")
    if problem is not None:
        raise MediaError(f"{path}: {problem}")
    if path.stat().st_size == 0:
        raise MediaError(f"{path}: empty file")
    return path
