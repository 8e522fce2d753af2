"""Running ``dvid-cloud`` commands in the test process (click's runner): faster than a
process per case where the test is about the command's answer, not its process."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

from click.testing import CliRunner, Result

from app.cli import main


@contextmanager
def kept_logging() -> Iterator[None]:
    """Put back the root logger a command configures (it would leak into later tests)."""
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        yield
    finally:
        root.handlers[:], root.level = saved


def invoke(*args: str) -> Result:
    """Run ``dvid-cloud ARGS`` here; its result (exit code, stdout, stderr)."""
    with kept_logging():
        return CliRunner().invoke(main, list(args))


def refused(*args: str) -> tuple[int, str]:
    """A command expected to fail before it needs a cluster or a server: (exit code,
    stderr)."""
    result = invoke(*args)
    return result.exit_code, result.stderr
