"""Real ``dvid-cloud serve`` processes for tests that kill, restart or race servers.

Each server runs in its own session (process group), so :meth:`DvidServer.kill` can
SIGKILL exactly it by group id, never by name.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.servers import free_port, wait_for_heartbeat

CLI = shutil.which("dvid-cloud", path=str(Path(sys.executable).parent)) or "dvid-cloud"


class DvidServer:
    """One server process on a config file (or a data folder), restartable."""

    def __init__(
        self,
        log_path: Path,
        env: dict[str, str],
        *,
        config: Path | None = None,
        data_dir: Path | None = None,
    ) -> None:
        self.log_path = log_path
        self.env = env
        self.config = config
        self.data_dir = data_dir
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""

    def _command(self, port: int) -> list[str]:
        command = [CLI, "serve", "--port", str(port), "--log-level", "warning"]
        if self.config is not None:
            command += ["--config", str(self.config)]
        if self.data_dir is not None:
            command += ["--data-dir", str(self.data_dir)]
        return command

    def start(self) -> DvidServer:
        """Start on a free port and wait for the heartbeat (retrying a taken port). A
        server still running is refused: starting again would orphan its process (as
        ``with DvidServer(...).start()`` did, entering starts it)."""
        if self.proc is not None and self.proc.poll() is None:
            raise RuntimeError(f"the server at {self.url} is running: stop or kill it first")
        for _ in range(3):
            port = free_port()
            with open(self.log_path, "ab") as log:
                self.proc = subprocess.Popen(
                    self._command(port),
                    env=self.env,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            self.url = f"http://127.0.0.1:{port}"
            if wait_for_heartbeat(self.url, self.proc):
                return self
            self.stop()
        raise RuntimeError(f"dvid-cloud serve did not start:\n{self.log_tail()}")

    def kill(self) -> None:
        """SIGKILL the server's process group: no cleanup of any kind runs."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()

    def log_tail(self, chars: int = 3000) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return text[-chars:]

    def __enter__(self) -> DvidServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def log_tails(urls: list[str], logs: list[Path], chars: int = 3000) -> str:
    """The end of each server's log, headed by its URL, for a failing test's message."""
    parts = []
    for url, path in zip(urls, logs, strict=True):
        text = path.read_text(errors="replace") if path.exists() else ""
        parts.append(f"--- {url} log tail ---\n{text[-chars:]}")
    return "\n".join(parts)
