"""``dvid-cloud serve --workers N``: a supervisor process and N workers forked from it,
each serving the listening socket the supervisor bound.

The supervisor has already imported the whole server when it forks, so every worker
starts from those modules instead of a fresh interpreter: uvicorn's own workers are
spawned and import everything again, which made two workers on two cores take twice as
long as one to answer their first chunk. Each worker builds its own application and
store clients after the fork: replicas are stateless, and no connection or thread is
shared between processes. So the supervisor must serve nothing itself: a thread pool
that has run a task before the fork (the dispatcher's, anyio's) has threads that the
forked workers lack, and would never run their tasks.

Each worker has a listening socket of its own on the one address (``SO_REUSEPORT``,
where the system has it), so the kernel spreads new connections over the workers: on one
shared socket the first worker to wake accepted every connection waiting (uvloop accepts
until none is left), and 16 clients connecting at once were seen split 16/0 and 14/2, one
worker idle. A socket outlives its worker: the supervisor holds it and hands it to the
replacement.

The supervisor starts a new worker when one dies, and on SIGTERM or SIGINT stops them
all (a second signal kills them). A worker that cannot start makes the supervisor stop
the others and exit with uvicorn's start-up failure code, as a single server would.
Workers stop when the supervisor is gone, however it ended (even SIGKILL): each watches
a pipe whose only writer is the supervisor, which the kernel closes when it exits.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
import threading
from collections.abc import Callable
from typing import Any

import uvicorn
from starlette.types import ASGIApp
from uvicorn.config import STARTUP_FAILURE

log = logging.getLogger("dvid_cloud")

#: Signals the supervisor waits for (blocked in it, so that none is lost between waits).
SUPERVISED = frozenset({signal.SIGCHLD, signal.SIGINT, signal.SIGTERM})


def serve_workers(build: Callable[[], ASGIApp], processes: int, options: dict[str, Any]) -> int:
    """Serve ``build()`` from ``processes`` forked workers, with uvicorn ``options``,
    until stopped; returns the exit status (0, or uvicorn's STARTUP_FAILURE)."""
    socks = _listening_sockets(options, processes)
    unblocked = signal.pthread_sigmask(signal.SIG_BLOCK, SUPERVISED)
    watched, held = os.pipe()
    try:
        return _Supervisor(build, options, socks, unblocked, watched, held).run()
    finally:
        for fd in (watched, held):
            os.close(fd)
        for sock in socks:
            sock.close()
        signal.pthread_sigmask(signal.SIG_SETMASK, unblocked)


def _listening_sockets(options: dict[str, Any], processes: int) -> list[socket.socket]:
    """One socket per worker, bound to the address ``options`` name (the first one's
    port for the others when it was 0), or one shared socket without ``SO_REUSEPORT``."""
    reuse = getattr(socket, "SO_REUSEPORT", None)
    if reuse is None:
        return [uvicorn.Config(lambda: None, **options).bind_socket()] * processes
    host = options.get("host", "127.0.0.1")
    port = options.get("port", 8000)
    socks: list[socket.socket] = []
    try:
        for _ in range(processes):
            sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
            socks.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, reuse, 1)
            sock.bind((host, port))
            port = sock.getsockname()[1]
            sock.set_inheritable(True)
    except OSError as error:
        for sock in socks:
            sock.close()
        log.error("cannot listen", extra={"host": host, "port": port, "error": str(error)})
        sys.exit(STARTUP_FAILURE)
    return socks


class _Supervisor:
    """The supervisor's state: the workers' listening sockets (one each), the signal mask
    they get back, and the pipe they watch (``watched``, the read end; ``held``, the write
    end)."""

    def __init__(
        self,
        build: Callable[[], ASGIApp],
        options: dict[str, Any],
        socks: list[socket.socket],
        unblocked: set[int],
        watched: int,
        held: int,
    ) -> None:
        self.build = build
        self.options = options
        self.socks = socks
        self.unblocked = unblocked
        self.watched = watched
        self.held = held
        #: pid -> the socket it serves
        self.workers: dict[int, socket.socket] = {}

    def run(self) -> int:
        for sock in self.socks:
            self._fork(sock)
        status = 0
        stopping = False
        while self.workers:
            signum = signal.sigwait(SUPERVISED)
            if signum != signal.SIGCHLD:
                sent = signal.SIGKILL if stopping else signal.SIGTERM
                log.info(
                    "stopping workers",
                    extra={"signal": signal.Signals(signum).name, "sent": sent.name},
                )
                self._signal_all(sent)
                stopping = True
                continue
            for pid, code, sock in self._reap():
                if stopping:
                    continue
                if code == STARTUP_FAILURE:
                    log.error("worker could not start: stopping", extra={"pid": pid})
                    status = STARTUP_FAILURE
                    stopping = True
                    self._signal_all(signal.SIGTERM)
                else:
                    log.warning("worker exited: starting another", extra={"pid": pid, "code": code})
                    self._fork(sock)
        return status

    def _reap(self) -> list[tuple[int, int, socket.socket]]:
        """(pid, exit code, socket) of every worker that has ended; a negative code is a
        signal."""
        ended = []
        while self.workers:
            pid, status = os.waitpid(-1, os.WNOHANG)
            if pid == 0:
                break
            if pid in self.workers:
                sock = self.workers.pop(pid)
                ended.append((pid, os.waitstatus_to_exitcode(status), sock))
        return ended

    def _signal_all(self, signum: int) -> None:
        for pid in self.workers:
            os.kill(pid, signum)  # an ended worker stays a zombie until reaped: never gone

    def _fork(self, sock: socket.socket) -> None:
        pid = os.fork()
        if pid == 0:
            self._work(sock)
        self.workers[pid] = sock

    def _work(self, sock: socket.socket) -> None:
        """The worker's life; never returns (its exit code tells the supervisor whether
        it had started)."""
        server: uvicorn.Server | None = None
        try:
            os.close(self.held)
            for other in self.socks:
                if other is not sock:
                    other.close()  # the other workers' (a shared socket is the same object)
            signal.pthread_sigmask(signal.SIG_SETMASK, self.unblocked)
            _stop_with_supervisor(self.watched)
            server = uvicorn.Server(uvicorn.Config(self.build(), **self.options))
            server.run(sockets=[sock])
        except (SystemExit, KeyboardInterrupt):
            pass  # uvicorn has logged why it could not start, or the worker was stopped
        except BaseException:
            log.exception("worker failed", extra={"pid": os.getpid()})
        finally:
            try:
                sys.stdout.flush()
                sys.stderr.flush()
            finally:  # even if flushing fails: a worker must never return to the caller
                os._exit(0 if server is not None and server.started else STARTUP_FAILURE)


def _stop_with_supervisor(watched: int) -> None:
    """SIGTERM this worker (uvicorn's graceful stop) once the supervisor has exited: the
    read end of its pipe then sees end-of-file, as nobody else holds the write end."""

    def watch() -> None:
        os.read(watched, 1)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="supervisor-watch", daemon=True).start()
