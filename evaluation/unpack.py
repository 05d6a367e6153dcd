"""A submission or ground truth given as a folder or a .zip file, opened as a folder.

PALM and REFUGE took submissions as zip files, usually made by a desktop's "compress"
command: one team folder inside, macOS's ``__MACOSX/`` and ``._*`` files beside it. A zip is
extracted into a temporary folder (removed afterwards) with every member checked first: no
absolute paths or ``..`` (backslashes count as separators), no links, no encryption, at most
``MAX_FILES`` members and ``MAX_BYTES`` bytes in all, counted while writing as well as from
the zip's own directory. Junk (``__MACOSX/``, dot files, Thumbs.db, desktop.ini) is skipped.
"""

from __future__ import annotations

import shutil
import stat
import tempfile
import zipfile
import zlib
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import Callable, Iterator

from palm_algos.errors import PalmError

MAX_FILES = 20_000  # PALM: 400 masks (+ png copies) and two CSV files
MAX_BYTES = 4 * 2**30  # 400 uncompressed 2124x2056 BMP masks are 1.75 GB
CHUNK = 2**20
JUNK_NAMES = {"__macosx", "thumbs.db", "desktop.ini"}


def is_junk(name: str) -> bool:
    """Files an operating system adds to a folder or zip, never part of a submission."""
    return name.startswith(".") or name.lower() in JUNK_NAMES


@contextmanager
def opened(path: Path, fail: Callable[[str], PalmError], what: str = "submission") -> Iterator[Path]:
    """``path`` itself when it is a folder; a zip extracted to a temporary folder otherwise.

    ``fail(message)`` makes the exception to raise (a participant's or the organiser's problem).
    """
    path = Path(path)
    if path.is_dir():
        yield path
        return
    if not path.exists():
        raise fail(f"{path}: no such file or folder")
    if not zipfile.is_zipfile(path):
        kind = "not a valid zip file" if path.suffix.lower() == ".zip" else f"expected a folder or a .zip file with the {what}"
        raise fail(f"{path}: {kind}")
    folder = Path(tempfile.mkdtemp(prefix="palm-eval-"))
    try:
        extract(path, folder, fail)
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def extract(path: Path, dest: Path, fail: Callable[[str], PalmError]) -> None:
    """Extract a zip into ``dest``, refusing anything unsafe before writing a byte."""
    name = path.name
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise fail(f"{name}: not a valid zip file ({exc})") from None
    with archive:
        members = []
        for info in archive.infolist():
            parts = _safe_parts(info.filename)
            if parts is None:
                raise fail(f"{name}: member {info.filename!r} would be written outside the extraction folder; refused")
            if any(is_junk(part) for part in parts):
                continue
            if stat.S_ISLNK(info.external_attr >> 16):
                raise fail(f"{name}: member {info.filename!r} is a symbolic link; links are refused")
            members.append((info, parts))
        files = [(info, parts) for info, parts in members if not info.is_dir()]
        if len(files) > MAX_FILES:
            raise fail(f"{name}: holds {len(files)} files, more than {MAX_FILES} files; refused")
        declared = sum(info.file_size for info, _ in files)
        if declared > MAX_BYTES:
            raise fail(f"{name}: unpacks to {declared} bytes, more than {MAX_BYTES} bytes; refused")
        written = 0
        seen: set[tuple[str, ...]] = set()
        for info, parts in members:
            target = dest.joinpath(*parts)
            if info.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            if parts in seen:
                raise fail(f"{name}: {info.filename!r} appears twice in the zip")
            seen.add(parts)
            if info.flag_bits & 0x1:
                raise fail(f"{name}: {info.filename} is encrypted; submit a zip without a password")
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                with archive.open(info) as source, open(target, "wb") as out:
                    while chunk := source.read(CHUNK):
                        written += len(chunk)
                        if written > MAX_BYTES:
                            raise fail(f"{name}: unpacks to more than {MAX_BYTES} bytes; refused")
                        out.write(chunk)
            except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
                raise fail(f"{name}: {info.filename} is corrupt ({exc})") from None
            except RuntimeError as exc:  # zipfile: encrypted without a password
                raise fail(f"{name}: {info.filename} cannot be extracted ({exc})") from None
            except NotImplementedError as exc:  # an unsupported compression method
                raise fail(f"{name}: {info.filename} cannot be extracted ({exc}); use plain deflate") from None
            except OSError as exc:
                raise fail(f"{name}: {info.filename} cannot be extracted ({exc.strerror or exc})") from None


def _safe_parts(filename: str) -> tuple[str, ...] | None:
    """The member's path as parts below the extraction folder, or None when it would escape."""
    text = filename.replace("\\", "/")
    if text.startswith("/") or (len(text) > 1 and text[1] == ":") or "\0" in text:
        return None
    parts = tuple(p for p in PurePosixPath(text).parts if p not in ("", "."))
    if any(p == ".." for p in parts):
        return None
    return parts


def submission_folder(path: Path):
    """A participant's folder or zip; its problems are the participant's (exit status 1)."""
    from .validation import invalid

    return opened(path, invalid, "submission")


def truth_folder(path: Path):
    """The organiser's ground truth folder or zip; its problems are the organiser's (exit status 2)."""
    from .validation import GroundTruthError

    return opened(path, GroundTruthError, "ground truth")
