"""Helpers for tests/test_neuroglancer.py: a real ``dvid-cloud serve`` process whose JSON
access log is collected, the neuroglancer client (from the PyPI ``neuroglancer`` package)
on a tiny static server, and Debian's chromium driven headless by playwright.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from tests.servers import wait_for_heartbeat

CLI = shutil.which("dvid-cloud", path=str(Path(sys.executable).parent)) or "dvid-cloud"

#: Chromium rendering WebGL2 through SwiftShader, with no network of its own. Playwright
#: adds ``--headless`` and a fresh temporary ``--user-data-dir`` itself.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--use-angle=swiftshader",
    "--enable-unsafe-swiftshader",
    "--ignore-gpu-blocklist",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def chromium_path() -> str | None:
    return shutil.which("chromium")


def neuroglancer_client_dir() -> Path | None:
    """The built viewer that the PyPI ``neuroglancer`` package ships, if installed."""
    try:
        import neuroglancer
    except ImportError:
        return None
    path = Path(neuroglancer.__file__).parent / "static" / "client"
    return path if (path / "index.html").is_file() else None


# --- the dvid-cloud server and its access log ---------------------------------------------


@dataclass
class ServerLog:
    """Lines a server process wrote, collected by a thread; access lines parsed."""

    lines: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, line: str) -> None:
        with self.lock:
            self.lines.append(line)

    def text(self) -> str:
        with self.lock:
            return "".join(self.lines)

    def requests(self) -> list[dict[str, Any]]:
        """The access log entries (``method``, ``path``, ``status``, ...) so far."""
        with self.lock:
            lines = list(self.lines)
        entries = []
        for line in lines:
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if isinstance(entry, dict) and {"method", "path", "status"} <= entry.keys():
                entries.append(entry)
        return entries

    def count_through(self, method: str, path: str, timeout: float = 10) -> int:
        """How many access entries there are up to and including the last ``method path``,
        once that one is logged. The line is written just after the response is sent, so a
        client that got its response may see it only a moment later: use this to mark where
        a test's own setup requests end."""

        def last() -> int:
            found = [
                i
                for i, e in enumerate(self.requests())
                if e["method"] == method and e["path"] == path
            ]
            return found[-1] + 1 if found else 0

        return wait_for(last, timeout, f"{method} {path} in the server log")


@contextmanager
def dvid_server(
    data_dir: Path, port: int, config: Path | None = None
) -> Iterator[tuple[str, ServerLog]]:
    """Run ``dvid-cloud serve`` on a local folder until the block ends; yields its base URL
    and its log. The output is drained by a thread, so the pipe never fills. ``config`` is
    a TOML file for what flags cannot say (``[proxy.boss]``); the flags win over it."""
    command = [CLI, "serve", "--data-dir", str(data_dir), "--port", str(port)]
    if config is not None:
        command += ["--config", str(config)]
    proc = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    log = ServerLog()

    def drain() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            log.add(line)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    url = f"http://127.0.0.1:{port}"
    try:
        if not wait_for_heartbeat(url, proc):
            raise RuntimeError(f"dvid-cloud did not start:\n{log.text()}")
        yield url, log
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
        reader.join(timeout=5)


# --- the neuroglancer client on a static server -------------------------------------------


@contextmanager
def neuroglancer_static(client_dir: Path, token: str = "test") -> Iterator[str]:
    """Serve the built client under ``/v/<token>/`` and answer ``POST /credentials/<token>``
    as neuroglancer's own Python server does; yields the viewer's base URL (ending in /)."""
    prefix = f"/v/{token}/"

    class Handler(SimpleHTTPRequestHandler):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, directory=str(client_dir), **kwargs)

        def translate_path(self, path: str) -> str:
            path = urllib.parse.urlsplit(path).path
            if not path.startswith(prefix):
                return str(client_dir / "__missing__")
            return super().translate_path("/" + path[len(prefix) :])

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                self.rfile.read(length)
            if urllib.parse.urlsplit(self.path).path != f"/credentials/{token}":
                self.send_error(404)
                return
            body = b'{"generation":1,"credentials":{}}'
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def end_headers(self) -> None:
            self.send_header("Cache-Control", "no-store")
            super().end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    Handler.extensions_map = {**Handler.extensions_map, ".wasm": "application/wasm"}
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}{prefix}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


@dataclass
class BrowserRecord:
    """What a page said on its console, and the responses it got from one server: method,
    full URL (with the query string, which the access log leaves out) and status."""

    console: list[str] = field(default_factory=list)
    seen: list[tuple[str, str, int]] = field(default_factory=list)

    def said(self, last: int = 30) -> str:
        return "\n".join(self.console[-last:])


@contextmanager
def chromium_page(pw: Any, chromium: str, server_url: str) -> Iterator[tuple[Any, BrowserRecord]]:
    """A fresh headless chromium (``pw`` is playwright's sync API object) with one 800x600
    page, recording its console and the responses it gets from ``server_url``."""
    browser = pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS, timeout=30_000)
    try:
        page = browser.new_page(viewport={"width": 800, "height": 600})
        record = BrowserRecord()
        page.on("console", lambda m: record.console.append(f"{m.type}: {m.text}"))
        page.on("pageerror", lambda e: record.console.append(f"pageerror: {e}"))
        page.on(
            "response",
            lambda r: (
                record.seen.append((r.request.method, r.url, r.status))
                if r.url.startswith(server_url)
                else None
            ),
        )
        yield page, record
    finally:
        browser.close()


def viewer_url(base: str, state: dict[str, Any]) -> str:
    """The viewer URL for ``state``: its JSON after ``#!``."""
    fragment = json.dumps(state, separators=(",", ":"))
    return base + "#!" + urllib.parse.quote(fragment, safe="")


# --- waiting -------------------------------------------------------------------------------


def wait_for(check: Callable[[], Any], timeout: float, what: str, interval: float = 0.1) -> Any:
    """Poll ``check`` until it returns something truthy; fail with ``what`` after timeout."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() not in ("", "0", "false", "no")
