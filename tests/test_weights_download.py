"""Downloads of named weights, tested end to end against an HTTP server on 127.0.0.1 that the
test starts and stops: resumed transfers, hash and parameter checks, offline mode, HTTP errors
and web pages instead of files; nothing unverified is ever left in the cache."""

from __future__ import annotations

import contextlib
import hashlib
import http.server
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest
import torch
from torchvision.models import squeezenet1_1 as tv_squeezenet1_1

import cnnzoo
from cnnzoo.errors import CnnzooError
from cnnzoo.weights import WeightSet

NAME = "squeezenet1_1.test_in1k"


@dataclass
class Served:
    """What the server serves and what it saw."""

    files: dict[str, bytes] = field(default_factory=dict)
    cut_first_at: int | None = None  # the first full response stops after this many bytes
    status: int = 200
    content_type: str = "application/octet-stream"
    requests: list[dict[str, str]] = field(default_factory=list)


class _Handler(http.server.BaseHTTPRequestHandler):
    served: Served

    def log_message(self, *args: object) -> None:  # quiet
        pass

    def do_GET(self) -> None:
        s = self.served
        s.requests.append({"path": self.path, "range": self.headers.get("Range", "")})
        body = s.files.get(self.path.lstrip("/"))
        if s.status != 200 or body is None:
            code = s.status if s.status != 200 else 404
            self.send_error(code)
            return
        start = 0
        if self.headers.get("Range"):
            start = int(self.headers["Range"].split("=")[1].split("-")[0])
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        self.send_header("Content-Type", s.content_type)
        self.send_header("Content-Length", str(len(body) - start))
        self.end_headers()
        part = body[start:]
        if s.cut_first_at is not None and start == 0:
            part = part[: s.cut_first_at]  # then the connection closes: a broken transfer
            s.cut_first_at = None
        # the client may give up first (a refused size or type): nothing left to serve then
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            self.wfile.write(part)


@pytest.fixture
def server() -> Iterator[tuple[str, Served]]:
    served = Served()
    handler = type("Handler", (_Handler,), {"served": served})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", served
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("CNNZOO_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("CNNZOO_OFFLINE", raising=False)
    monkeypatch.delenv("CNNZOO_WEIGHTS_MIRROR", raising=False)
    return tmp_path / "home"


@pytest.fixture(scope="module")
def torchvision_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[bytes, dict]:
    """A torchvision-format .pth (the oracle's own state dict, random weights) and its model."""
    torch.manual_seed(0)
    model = tv_squeezenet1_1(weights=None).eval()
    path = tmp_path_factory.mktemp("tv") / "w.pth"
    torch.save(model.state_dict(), path)
    return path.read_bytes(), {"model": model}


def _entry(url: str, data: bytes, **changes: object) -> WeightSet:
    """The catalog's real squeezenet1_1 entry, pointed at the test server and this file."""
    digest = hashlib.sha256(data).hexdigest()
    real = cnnzoo.weights.get("squeezenet1_1.tv_in1k")
    file = f"squeezenet1_1-{digest[:8]}.pth"
    ws = replace(real, name=NAME, file=file, url=f"{url}/{file}", sha256=digest[:8], size=None)
    return replace(ws, **changes)  # type: ignore[arg-type]


@pytest.fixture
def registered(server, torchvision_file, home) -> Iterator[tuple[WeightSet, Served, bytes]]:
    url, served = server
    data, _ = torchvision_file
    ws = _entry(url, data)
    served.files[ws.file] = data
    cnnzoo.weights.register(ws, replace=True)
    yield ws, served, data
    cnnzoo.weights.unregister(NAME)


def _cache_files(home: Path) -> list[str]:
    folder = home / "weights"
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def test_download_verifies_and_loads_into_cnnzoo_model_with_torchvision_outputs(
    registered, torchvision_file, home
):
    ws, served, data = registered
    model = cnnzoo.create_model("squeezenet1_1", weights="test_in1k").eval()
    cached = home / "weights" / ws.file
    assert cached.read_bytes() == data
    assert not (home / "weights" / f"{ws.file}.part").exists()
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        diff = (model(x) - torchvision_file[1]["model"](x)).abs().max().item()
    assert diff < 1e-4
    # A second use reads the cache: no new request.
    cnnzoo.create_model("squeezenet1_1", weights=NAME)
    assert len(served.requests) == 1


def test_interrupted_transfer_is_resumed_with_a_range_request(registered, home):
    ws, served, data = registered
    served.cut_first_at = len(data) // 3
    with pytest.raises(CnnzooError, match="stopped at .* run the command again to resume"):
        cnnzoo.weights.fetch(ws, progress=False)
    part = home / "weights" / f"{ws.file}.part"
    assert part.stat().st_size == len(data) // 3
    assert not (home / "weights" / ws.file).exists()
    path = cnnzoo.weights.fetch(ws, progress=False)
    assert path.read_bytes() == data
    assert served.requests[-1]["range"] == f"bytes={len(data) // 3}-"
    assert _cache_files(home) == sorted([ws.file, f".{ws.file}.verified"])


def test_wrong_hash_is_refused_and_nothing_is_left_in_the_cache(registered, home):
    ws, _, _ = registered
    bad = replace(ws, sha256="0123abcd")
    with pytest.raises(CnnzooError, match=r"sha256 .* has 0123abcd: the file is damaged"):
        cnnzoo.weights.fetch(bad, progress=False)
    assert _cache_files(home) == []


def test_a_file_with_the_wrong_parameter_count_is_refused(registered, home):
    ws, _, _ = registered
    with pytest.raises(CnnzooError, match="holds 1,235,496 parameters, .* has 5"):
        cnnzoo.weights.fetch(replace(ws, num_params=5), progress=False)
    assert _cache_files(home) == []


class _Payload:
    def __reduce__(self):
        return (print, ("this pickle would have run code",))


def test_a_pickle_that_runs_code_is_refused_in_one_line(server, home, tmp_path):
    url, served = server
    path = tmp_path / "evil.pth"
    torch.save({"weight": _Payload()}, path)
    data = path.read_bytes()
    ws = _entry(url, data)
    served.files[ws.file] = data
    with pytest.raises(CnnzooError) as err:
        cnnzoo.weights.fetch(ws, progress=False)
    message = str(err.value)
    assert "\n" not in message and "refused to unpickle it: it asks for print" in message
    assert _cache_files(home) == []


def test_offline_gives_one_line_naming_the_file_and_where_to_put_it(registered, home, monkeypatch):
    ws, served, _ = registered
    monkeypatch.setenv("CNNZOO_OFFLINE", "1")
    with pytest.raises(CnnzooError) as err:
        cnnzoo.create_model("squeezenet1_1", weights=NAME)
    message = str(err.value)
    assert ws.url in message and str(home / "weights" / ws.file) in message
    assert "CNNZOO_OFFLINE" in message and "\n" not in message
    assert served.requests == []


def test_no_network_gives_one_line_naming_the_file(torchvision_file, home):
    data, _ = torchvision_file
    ws = _entry("http://127.0.0.1:9", data)  # the discard port: connection refused
    with pytest.raises(CnnzooError, match=r"cannot download .* put it at .*squeezenet1_1-"):
        cnnzoo.weights.fetch(ws, progress=False)
    assert _cache_files(home) == []


@pytest.mark.parametrize("status", [404, 500])
def test_http_error_is_one_line(registered, home, status):
    ws, served, _ = registered
    served.status = status
    with pytest.raises(CnnzooError, match=f"answered HTTP {status}"):
        cnnzoo.weights.fetch(ws, progress=False)
    assert _cache_files(home) == []


def test_a_web_page_instead_of_a_file_is_refused(registered, home):
    ws, served, _ = registered
    served.content_type = "text/html"
    with pytest.raises(CnnzooError, match=r"answered with a web page \(text/html\)"):
        cnnzoo.weights.fetch(ws, progress=False)
    assert _cache_files(home) == []


def test_cache_that_is_not_writable_is_one_line(registered, tmp_path, monkeypatch):
    ws, _, _ = registered
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("CNNZOO_HOME", str(blocker / "home"))
    with pytest.raises(CnnzooError, match="is not writable .* set CNNZOO_HOME"):
        cnnzoo.weights.fetch(ws, progress=False)


def test_a_truncated_file_in_the_cache_is_refused_before_use(registered, home):
    ws, _, data = registered
    cached = home / "weights" / ws.file
    cached.parent.mkdir(parents=True)
    cached.write_bytes(data[: len(data) // 2])  # put there by hand, cut short
    with pytest.raises(CnnzooError, match="delete it and run again to re-download"):
        cnnzoo.weights.local_file(ws)


def test_mirror_serves_every_file(server, torchvision_file, home, monkeypatch):
    url, served = server
    data, _ = torchvision_file
    ws = _entry("https://unreachable.invalid/models", data)
    served.files[f"mirror/{ws.file}"] = data
    monkeypatch.setenv("CNNZOO_WEIGHTS_MIRROR", f"{url}/mirror/")
    assert cnnzoo.weights.fetch(ws, progress=False).read_bytes() == data
    assert served.requests[0]["path"] == f"/mirror/{ws.file}"


def test_cli_download_and_verify(registered, home):
    from typer.testing import CliRunner

    from cnnzoo.cli import app

    ws, _, data = registered
    runner = CliRunner()
    done = runner.invoke(app, ["weights", "download", NAME, "--no-progress"])
    assert done.exit_code == 0, done.output
    assert f"{NAME}\tverified\t" in done.output
    ok = runner.invoke(app, ["weights", "verify", NAME])
    assert ok.exit_code == 0 and f"{NAME}\tok" in ok.output
    cached = home / "weights" / ws.file
    cached.write_bytes(data[:-10] + b"0123456789")  # damaged after download
    bad = runner.invoke(app, ["weights", "verify", NAME])
    assert bad.exit_code == 1 and "FAILED" in bad.output and "sha256" in bad.output


def test_backbone_weights_by_name_download_into_a_segmentation_encoder(
    registered, torchvision_file
):
    """`cnnzoo train fcn8s --backbone squeezenet1_1 --backbone-weights NAME`: the encoder is
    fetched by name and holds torchvision's ImageNet features."""
    from cnnzoo.families.backbones import load_backbone_weights

    seg = cnnzoo.create_model("fcn8s", num_classes=5, backbone="squeezenet1_1")
    summary = load_backbone_weights(seg, NAME)
    assert summary["loaded"] > 0 and summary["path"] == NAME
    tv = torchvision_file[1]["model"]
    assert torch.equal(seg.backbone.model.stem.conv.weight, tv.features[0].weight)


def test_only_http_urls_are_fetched(torchvision_file, home):
    data, _ = torchvision_file
    ws = replace(_entry("http://x", data), url="file:///etc/passwd")
    with pytest.raises(CnnzooError, match="is not an http\\(s\\) URL"):
        cnnzoo.weights.fetch(ws, progress=False)
    assert _cache_files(home) == []


def test_a_shipped_file_that_does_not_match_its_hash_is_refused(home):
    """A damaged installation: the package's file is not the one the index names."""
    ws = replace(cnnzoo.weights.get("convnet.fmnist"), name="convnet.damaged", sha256="0" * 64)
    cnnzoo.weights.register(ws)
    try:
        with pytest.raises(CnnzooError, match=r"has sha256 .*\(reinstall cnnzoo\)"):
            cnnzoo.create_model("convnet", weights="damaged")
        missing = replace(ws, name="convnet.missing", file="nothing.safetensors")
        cnnzoo.weights.register(missing)
        with pytest.raises(CnnzooError, match="shipped file of convnet.missing is missing"):
            cnnzoo.weights.local_file("convnet.missing")
    finally:
        cnnzoo.weights.unregister("convnet.damaged")
        cnnzoo.weights.unregister("convnet.missing")


def test_plots_of_a_named_set_in_an_unwritable_home_are_one_line(tmp_path, monkeypatch):
    from cnnzoo.rundir import RunDir

    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("CNNZOO_HOME", str(blocker / "home"))
    with pytest.raises(CnnzooError, match="cannot write .* set CNNZOO_HOME"):
        RunDir.open("convnet.fmnist").plots  # noqa: B018 (the property makes the folder)
