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
    sock = uvicorn.Config(build, **options).bind_socket()
    unblocked = signal.pthread_sigmask(signal.SIG_BLOCK, SUPERVISED)
    watched, held = os.pipe()
    try:
        return _Supervisor(build, options, sock, unblocked, watched, held).run(processes)
    finally:
        for fd in (watched, held):
            os.close(fd)
        sock.close()
        signal.pthread_sigmask(signal.SIG_SETMASK, unblocked)


class _Supervisor:
    """The supervisor's state: the workers' shared socket, the signal mask they get back,
    and the pipe they watch (``watched``, the read end; ``held``, the write end)."""

    def __init__(
        self,
        build: Callable[[], ASGIApp],
        options: dict[str, Any],
        sock: socket.socket,
        unblocked: set[int],
        watched: int,
        held: int,
    ) -> None:
        self.build = build
        self.options = options
        self.sock = sock
        self.unblocked = unblocked
        self.watched = watched
        self.held = held
        self.workers: set[int] = set()

    def run(self, processes: int) -> int:
        for _ in range(processes):
            self._fork()
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
            for pid, code in self._reap():
                if stopping:
                    continue
                if code == STARTUP_FAILURE:
                    log.error("worker could not start: stopping", extra={"pid": pid})
                    status = STARTUP_FAILURE
                    stopping = True
                    self._signal_all(signal.SIGTERM)
                else:
                    log.warning("worker exited: starting another", extra={"pid": pid, "code": code})
                    self._fork()
        return status

    def _reap(self) -> list[tuple[int, int]]:
        """(pid, exit code) of every worker that has ended; a negative code is a signal."""
        ended = []
        while self.workers:
            pid, status = os.waitpid(-1, os.WNOHANG)
            if pid == 0:
                break
            if pid in self.workers:
                self.workers.remove(pid)
                ended.append((pid, os.waitstatus_to_exitcode(status)))
        return ended

    def _signal_all(self, signum: int) -> None:
        for pid in self.workers:
            os.kill(pid, signum)  # an ended worker stays a zombie until reaped: never gone

    def _fork(self) -> None:
        pid = os.fork()
        if pid == 0:
            self._work()
        self.workers.add(pid)

    def _work(self) -> None:
        """The worker's life; never returns (its exit code tells the supervisor whether
        it had started)."""
        server: uvicorn.Server | None = None
        try:
            os.close(self.held)
            signal.pthread_sigmask(signal.SIG_SETMASK, self.unblocked)
            _stop_with_supervisor(self.watched)
            server = uvicorn.Server(uvicorn.Config(self.build(), **self.options))
            server.run(sockets=[self.sock])
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
