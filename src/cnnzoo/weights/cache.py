"""Getting a weight set's file onto this machine, verified: the package's shipped folder, or
the download cache (``$CNNZOO_HOME/weights``, default ``~/.cache/cnnzoo/weights``).

A download streams into ``FILE.part`` (resumed with an HTTP ``Range`` request when a part is
already there), is checked (SHA-256, then for a state dict its parameter count) and only then
renamed to ``FILE``: the cache never holds a file under its real name that was not verified.
A failed check deletes the part. ``CNNZOO_OFFLINE=1`` forbids the network; a file missing then
(or on a machine without network) is one error line that names the file and where to put it.
``CNNZOO_WEIGHTS_MIRROR=URL`` fetches every download from ``URL/FILE`` instead (a mirror or
an air-gapped server).
"""

from __future__ import annotations

import contextlib
import json
import os
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from torch import Tensor

from cnnzoo.errors import CnnzooError
from cnnzoo.files import atomic_write_text, publish, sha256_file
from cnnzoo.weights.catalog import SHIPPED, get
from cnnzoo.weights.entry import WeightSet
from cnnzoo.weights.storage import read_state_dict

_CHUNK = 1 << 16
_TIMEOUT_S = 30.0
_BUFFERS = ("running_mean", "running_var", "num_batches_tracked")
_verified: set[tuple[str, int, int, str]] = set()  # (path, size, mtime_ns, sha256) checked


def cnnzoo_home() -> Path:
    """``$CNNZOO_HOME``, else ``~/.cache/cnnzoo``."""
    home = os.environ.get("CNNZOO_HOME")
    return Path(home).expanduser() if home else Path.home() / ".cache" / "cnnzoo"


def cache_dir() -> Path:
    """The folder downloaded weights are kept in: ``cnnzoo_home() / "weights"``."""
    return cnnzoo_home() / "weights"


def offline() -> bool:
    """True when ``CNNZOO_OFFLINE`` is set to anything but ``0``/``false``/empty."""
    return os.environ.get("CNNZOO_OFFLINE", "").strip().lower() not in ("", "0", "false", "no")


def file_path(weight_set: WeightSet) -> Path:
    """Where the weight set's file is (or will be, once downloaded)."""
    return (SHIPPED if weight_set.shipped else cache_dir()) / weight_set.file


def source_url(weight_set: WeightSet) -> str:
    """The URL a download reads (the mirror's when ``CNNZOO_WEIGHTS_MIRROR`` is set)."""
    mirror = os.environ.get("CNNZOO_WEIGHTS_MIRROR")
    if mirror:
        return f"{mirror.rstrip('/')}/{weight_set.file}"
    assert weight_set.url is not None
    return weight_set.url


def local_file(name: str | WeightSet, download: bool = True, progress: bool = True) -> Path:
    """Return the verified local file of a weight set, downloading it first if needed.

    Args:
        name: ``MODEL.TAG`` or the entry itself.
        download: fetch a missing file (False: raise instead).
        progress: show a progress bar while downloading (on stderr).

    Returns:
        The file's path (in the package for shipped weights, else in the cache).

    Raises:
        CnnzooError: unknown name; a missing file that may not or cannot be downloaded
            (offline, no network, HTTP error, a web page instead of a file); a file that
            fails verification (a download is deleted; a shipped file means a damaged
            installation).
    """
    ws = get(name) if isinstance(name, str) else name
    path = file_path(ws)
    if path.is_file():
        _check_once(ws, path)
        return path
    if ws.shipped:
        raise CnnzooError(
            f"the shipped file of {ws.name} is missing ({path}): the installation is "
            "damaged; reinstall cnnzoo"
        )
    if not download or offline():
        why = "CNNZOO_OFFLINE is set" if offline() else "downloads are off"
        raise CnnzooError(
            f"{ws.name} is not in the cache and {why}: download {source_url(ws)} on a machine "
            f"with network and put it at {path}"
        )
    fetch(ws, progress=progress)
    return path


def load_state_dict(name: str | WeightSet) -> dict[str, Tensor]:
    """Return a weight set's tensors (float32; torchvision's under torchvision's names),
    fetching and verifying the file first.

    Raises:
        CnnzooError: as :func:`local_file`; also for an ONNX weight set (not a state dict).
    """
    ws = get(name) if isinstance(name, str) else name
    if ws.storage == "onnx":
        raise CnnzooError(
            f"{ws.name} is an int8 ONNX model, not PyTorch weights: use it with `cnnzoo bench` "
            "or `cnnzoo export`"
        )
    return read_state_dict(local_file(ws))


# -- downloading ----------------------------------------------------------------------------
def fetch(weight_set: WeightSet, progress: bool = True) -> Path:
    """Download a weight set's file into the cache (resuming a partial download), verify it,
    and return its path.

    Raises:
        CnnzooError: for an unwritable cache, offline mode, no network, an HTTP error, a web
            page instead of a file, an interrupted transfer (the part is kept: run again to
            resume) or a failed verification (the part is deleted).
    """
    ws = weight_set
    if ws.shipped:
        return local_file(ws)
    dest = file_path(ws)
    url = source_url(ws)
    if not url.startswith(("https://", "http://")):
        raise CnnzooError(f"cannot download {ws.name}: {url} is not an http(s) URL")
    if offline():
        raise CnnzooError(
            f"{ws.name} is not in the cache and CNNZOO_OFFLINE is set: download {url} on a "
            f"machine with network and put it at {dest}"
        )
    _ensure_writable(dest.parent)
    part = dest.with_name(dest.name + ".part")
    offset = part.stat().st_size if part.is_file() else 0
    headers = {"User-Agent": "cnnzoo", **({"Range": f"bytes={offset}-"} if offset else {})}
    try:
        response = urllib.request.urlopen(
            urllib.request.Request(url, headers=headers), timeout=_TIMEOUT_S
        )
    except urllib.error.HTTPError as err:
        if err.code == 416 and offset:  # the part is already whole: check it
            return _finish(ws, part, dest)
        raise CnnzooError(
            f"cannot download {ws.name}: {url} answered HTTP {err.code} {err.reason}"
        ) from None
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        raise CnnzooError(
            f"cannot download {ws.name} from {url} ({reason}): without network, download it "
            f"elsewhere and put it at {dest}"
        ) from None
    with response:
        if response.headers.get_content_type() == "text/html":
            raise CnnzooError(
                f"cannot download {ws.name}: {url} answered with a web page (text/html), not a "
                "weights file"
            )
        resumed = response.status == 206 and _range_start(response) == offset
        start = offset if resumed else 0
        length = response.headers.get("Content-Length")
        total = start + int(length) if length and length.isdigit() else None
        got = _stream(response, part, start, total, ws.name, progress)
    if total is not None and got < total:
        raise CnnzooError(
            f"download of {ws.name} stopped at {got:,} of {total:,} bytes; run the command "
            f"again to resume ({part})"
        )
    return _finish(ws, part, dest)


def _range_start(response: object) -> int | None:
    value = response.headers.get("Content-Range", "")  # type: ignore[attr-defined]
    try:  # "bytes START-END/TOTAL"
        return int(value.split()[1].split("-")[0])
    except (IndexError, ValueError):
        return None


def _stream(response: object, part: Path, start: int, total: int | None, name: str,
            progress: bool) -> int:  # fmt: skip
    """Append (``start`` > 0) or write the response body to ``part``; return its final size.
    A connection that breaks mid-way keeps what arrived, for the next attempt to resume."""
    got = start
    with open(part, "ab" if start else "wb") as f, _progress(name, total, start, progress) as bar:
        try:
            while chunk := response.read(_CHUNK):  # type: ignore[attr-defined]
                f.write(chunk)
                got += len(chunk)
                bar(len(chunk))
        except (OSError, urllib.error.URLError, ValueError):
            pass  # judged by the caller from the size that arrived
    return got


@contextmanager
def _progress(name: str, total: int | None, start: int, show: bool) -> Iterator:
    if not show:
        yield lambda n: None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TransferSpeedColumn,  # fmt: skip
    )

    columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
               TransferSpeedColumn())  # fmt: skip
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task(name, total=total, completed=start)
        yield lambda n: bar.advance(task, n)


def _finish(ws: WeightSet, part: Path, dest: Path) -> Path:
    """Verify the finished part and give it its real name; delete it if it fails."""
    try:
        verify_file(ws, part)
    except CnnzooError:
        part.unlink(missing_ok=True)
        raise
    publish(part, dest)
    _remember(ws, dest)
    return dest


def _ensure_writable(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise CnnzooError(
            f"the weights cache {folder} is not writable ({err.strerror or err}): set "
            "CNNZOO_HOME to a writable folder"
        ) from None


# -- verification ---------------------------------------------------------------------------
@dataclass
class Verified:
    """What :func:`verify` found for one cached or shipped file."""

    name: str
    path: Path
    ok: bool
    message: str


def verify_file(weight_set: WeightSet, path: Path) -> None:
    """Check ``path`` against the entry: its SHA-256 (all of it, or the published prefix),
    its size when known, and for a state dict that it loads without unpickling code and has
    the entry's parameter count.

    Raises:
        CnnzooError: naming the file and what did not match.
    """
    ws = weight_set
    if ws.size is not None and ws.storage != "pth" and path.stat().st_size != ws.size:
        raise CnnzooError(
            f"{path} has {path.stat().st_size:,} bytes, {ws.name} has {ws.size:,}: "
            "truncated or another file"
        )
    digest = sha256_file(path)
    if not digest.startswith(ws.sha256.lower()):
        raise CnnzooError(
            f"{path} has sha256 {digest[: max(len(ws.sha256), 16)]}..., {ws.name} has "
            f"{ws.sha256}: the file is damaged or not the published one"
        )
    if ws.num_params is not None:
        state = read_state_dict(path)
        n = sum(v.numel() for k, v in state.items() if not k.endswith(_BUFFERS))
        if n != ws.num_params:
            raise CnnzooError(
                f"{path} holds {n:,} parameters, {ws.name} has {ws.num_params:,}: not the "
                "published file"
            )


def verify(names: list[str] | None = None) -> list[Verified]:
    """Re-hash weight files: the given names, or every file in the cache and every shipped
    one. A file in the cache that no entry names is reported, not deleted.

    Returns:
        One :class:`Verified` per file, in name order.
    """
    from cnnzoo.weights.catalog import list_weights

    entries = [get(n) for n in names] if names else list_weights()
    out = []
    known = set()
    for ws in entries:
        path = file_path(ws)
        known.add(path.name)
        if not path.is_file():
            if names:
                out.append(Verified(ws.name, path, False, "not downloaded"))
            continue
        try:
            verify_file(ws, path)
            out.append(Verified(ws.name, path, True, "ok"))
        except CnnzooError as err:
            out.append(Verified(ws.name, path, False, str(err)))
    if not names and cache_dir().is_dir():
        for path in sorted(cache_dir().iterdir()):
            if path.is_file() and path.name not in known and not path.name.startswith("."):
                what = "partial download" if path.suffix == ".part" else "no weight set names it"
                out.append(Verified("?", path, True, what))
    return out


def _key(path: Path, sha256: str) -> tuple[str, int, int, str]:
    st = path.stat()
    return (str(path.resolve()), st.st_size, st.st_mtime_ns, sha256.lower())


def _remember(ws: WeightSet, path: Path) -> None:
    _verified.add(_key(path, ws.sha256))
    if not path.is_relative_to(SHIPPED):
        _write_record(path, ws.sha256)


def _check_once(ws: WeightSet, path: Path) -> None:
    """Verify a file before its first use in this process (against this entry's hash); a
    cached file whose size, modification time and expected hash match the record written
    when it was verified is not re-hashed."""
    key = _key(path, ws.sha256)
    if key in _verified or _read_record(path) == list(key[1:]):
        return
    try:
        verify_file(ws, path)
    except CnnzooError as err:
        hint = "reinstall cnnzoo" if ws.shipped else "delete it and run again to re-download"
        raise CnnzooError(f"{err} ({hint})") from None
    _remember(ws, path)


def _record(path: Path) -> Path:
    return path.with_name(f".{path.name}.verified")


def _read_record(path: Path) -> list[int] | None:
    try:
        return json.loads(_record(path).read_text())
    except (OSError, ValueError, RecursionError):
        return None


def _write_record(path: Path, sha256: str) -> None:
    # A read-only cache keeps no record: the file is verified again next time.
    with contextlib.suppress(OSError):
        atomic_write_text(_record(path), json.dumps(list(_key(path, sha256)[1:])))
