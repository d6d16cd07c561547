"""Writing and hashing files safely: the lowest floor of the house (imports nothing of cnnzoo).

Every file cnnzoo writes goes through a temporary name in the same folder and a rename, so an
interrupted write never leaves half a file under the real name.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

_CHUNK = 1 << 20


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder and a rename.

    The file gets the permissions of an ordinary new file (0666 less the umask), not the
    temporary file's private 0600.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        publish(Path(tmp), path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    atomic_write_bytes(path, text.encode())


def publish(tmp: Path, path: Path) -> None:
    """Give the finished temporary file ``tmp`` ordinary permissions and rename it to ``path``
    (atomic within one file system)."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    os.replace(tmp, path)


def sha256_file(path: Path) -> str:
    """Return the SHA-256 of the file at ``path`` as 64 lowercase hex digits.

    Raises:
        OSError: if the file cannot be read.
    """
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()
