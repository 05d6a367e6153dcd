"""Writing an output file whole or not at all: the one way palm writes its outputs (CSV, JSON,
BMP/PNG/JPEG, MHA, metrics.json, the leaderboard).

The file is written under a temporary name in its own folder, its size checked against what
was meant to be stored (or its content read back, for files a library writes), then renamed
over the target (``os.replace``: atomic on one file system). A write that fails or falls short
(a full disk, ``ulimit -f``, a network disk that drops bytes) leaves the target as it was
(absent, or the earlier file) and no temporary file, and raises OSError naming the target.
Standard library only: the evaluation container writes through it too.
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from pathlib import Path
from typing import Callable


def write_bytes(path: Path, data: bytes) -> Path:
    """``data`` as the whole of ``path``."""

    def write(temporary: Path) -> None:
        with open(temporary, "wb", buffering=0) as f:
            view, written = memoryview(data), 0
            while written < len(data):
                written += os.write(f.fileno(), view[written:])
            os.fsync(f.fileno())  # a full disk may only say so when the data reach it

    return write_file(path, write, size=len(data))


def write_file(path: Path, write: Callable[[Path], None], size: int | None = None,
               check: Callable[[Path], None] | None = None) -> Path:
    """``write(temporary)`` then, where the temporary file holds ``size`` bytes and passes
    ``check`` (which raises OSError), renamed to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=f".tmp{path.suffix}")  # the suffix: writers choose a format by it
    os.close(fd)
    temporary = Path(name)
    try:
        write(temporary)
        stored = temporary.stat().st_size
        if size is not None and stored != size:
            raise OSError(errno.EIO, f"short write: {stored} of {size} bytes stored", str(path))
        if check is not None:
            check(temporary)
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except OSError as exc:
        _remove(temporary)
        raise OSError(exc.errno or errno.EIO, exc.strerror or str(exc), str(path)) from None
    except BaseException:
        _remove(temporary)
        raise
    return path


def _remove(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink()
