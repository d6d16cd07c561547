"""Writing and hashing files safely: the lowest floor of the house (imports only
:mod:`cnnzoo.errors`).

Every file cnnzoo writes goes through a temporary name in the same folder and a rename, so an
interrupted write never leaves half a file under the real name. A disk that fills up while a
file is written becomes one clear :class:`~cnnzoo.errors.CnnzooError`; the temporary file is
removed and the previous file under the real name (if any) is left as it was.
"""

from __future__ import annotations

import errno
import hashlib
import os
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from cnnzoo.errors import CnnzooError

_CHUNK = 1 << 20
_FULL = {
    errno.ENOSPC: "no space left on device",
    getattr(errno, "EDQUOT", -1): "disk quota exceeded",
}


@contextmanager
def atomic_writer(path: str | Path) -> Iterator[BinaryIO]:
    """Open a temporary file next to ``path`` for writing (binary) and publish it under
    ``path`` when the block ends without an exception.

    The data is flushed to the disk (``fsync``) before the rename, so a full disk is noticed
    before anything is published. On any exception the temporary file is removed and ``path``
    keeps its previous content. Usage::

        with atomic_writer(run / "checkpoints" / "last.ckpt") as f:
            torch.save(checkpoint, f)

    Yields:
        The open binary file to write to.

    Raises:
        CnnzooError: if the disk (or the user's quota) is full: one line naming ``path`` and
            saying whether a previous version of it is intact.
        OSError: any other failure to create, write or rename the file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as err:  # no room even for an empty file (e.g. no inodes left)
        if err.errno in _FULL:
            raise disk_full_error(path, err) from None
        raise
    tmp = Path(name)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        publish(tmp, path)
    except BaseException as err:
        tmp.unlink(missing_ok=True)
        full = _disk_full(err)
        if full is not None:
            raise disk_full_error(path, full) from None
        raise


def _disk_full(err: BaseException | None) -> OSError | None:
    """The full-disk error in ``err`` or the errors it arose from (``torch.save`` answers a
    failed write with its own RuntimeError, raised while handling the OSError), or None."""
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, OSError) and err.errno in _FULL:
            return err
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return None


def disk_full_error(path: Path, err: OSError) -> CnnzooError:
    """Return the one-line error for ``err`` (a full disk or quota) while writing ``path``.

    Returns:
        ``"no space left on device while writing PATH; the previous NAME is intact"`` (or
        ``"no partial NAME was left"`` when there was no previous file), with what to do.
    """
    what = _FULL.get(err.errno or 0, err.strerror or str(err))
    kept = (f"the previous {path.name} is intact" if path.is_file()
            else f"no partial {path.name} was left")  # fmt: skip
    return CnnzooError(
        f"{what} while writing {path}; {kept}: free some space on {path.parent} and run again"
    )


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder and a rename.

    The file gets the permissions of an ordinary new file (0666 less the umask), not the
    temporary file's private 0600.

    Raises:
        CnnzooError: if the disk is full (``path`` keeps its previous content, no temporary
            file is left).
        OSError: any other failure to write the file.
    """
    with atomic_writer(path) as f:
        f.write(data)


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically (see :func:`atomic_write_bytes`).

    Raises:
        CnnzooError: if the disk is full.
        OSError: any other failure to write the file.
    """
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


def check_recorded_sha256(path: Path, recorded: Mapping[str, str] | None, record: str) -> None:
    """Refuse ``path`` when ``recorded`` (file name -> SHA-256, as a run's ``model.json``
    keeps them under ``"sha256"``) holds another hash for its name.

    Files that ``recorded`` does not name (or no ``recorded`` at all: runs written before
    hashes were kept) are accepted as they are.

    Args:
        path: the file to check.
        recorded: the hashes by file name, or None.
        record: how messages name the document that keeps them (e.g. ``RUN/model.json``).

    Raises:
        CnnzooError: if the file's hash differs: one line naming the file, both hashes (short)
            and that it was changed after training.
        OSError: if the file cannot be read.
    """
    if recorded is not None and not isinstance(recorded, Mapping):  # a hand-edited record
        raise CnnzooError(f"{record} records sha256 as {recorded!r:.40}: expected file -> hash")
    expected = (recorded or {}).get(path.name)
    if not expected:
        return
    if not isinstance(expected, str):
        raise CnnzooError(f"{record} records sha256 {expected!r:.40} for {path.name}: expected hex")
    found = sha256_file(path)
    if found != expected:
        raise CnnzooError(
            f"{path} was changed after training: {record} records sha256 {expected[:12]}, "
            f"the file has {found[:12]}; refusing to use it: restore the original file or "
            "train again"
        )
