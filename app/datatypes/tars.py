"""Tar files as DVID's Go ``archive/tar`` writes and reads them, for every datatype that
answers or takes tars (keyvalue and neuronjson batch reads, tarsupervoxels).

Written: each entry is a ustar header (pax only for a name ustar cannot hold), mode 0755,
modification time 0, the bytes, and NUL padding to 512; the archive ends with two zero
blocks and nothing more (Go's ``Writer.Close``; Python's ``tarfile`` pads to a 10 KiB
record). Building entries one at a time lets a body's tar stream as its records arrive.

Read: what Go's reader accepts, stricter where it would load less than was sent: the
archive must end right after an entry, or with a zero block followed by nothing or by
another zero block (after which Go reads no further). Anything else (garbage or a cut
header after an entry, which Python's ``tarfile`` takes for the end) is a 400, so a
``load`` never stores a prefix of a damaged tar.
"""

from __future__ import annotations

import io
import tarfile

from app.errors import BadRequest

BLOCK = tarfile.BLOCKSIZE
#: Go's end of archive: two zero blocks.
END = bytes(2 * BLOCK)


def entry(name: str, data: bytes) -> bytes:
    """One archive member: header, ``data``, padding."""
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o755
    header = info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")
    return header + data + bytes(-len(data) % BLOCK)


def read_entries(body: bytes) -> list[tuple[str, bytes]]:
    """Every entry of an uncompressed tar, in order; an empty body has none. 400 if the
    body is not a whole tar or an entry is not a regular file."""
    if not body:
        return []
    entries = []
    try:
        with tarfile.open(fileobj=io.BytesIO(body), mode="r:") as tar:
            for member in tar:
                if not member.isreg():
                    raise BadRequest(f"tar entry {member.name!r} is not a regular file")
                content = tar.extractfile(member)
                entries.append((member.name, content.read() if content else b""))
            end = tar.offset
    except (tarfile.TarError, EOFError) as e:
        raise BadRequest(f"bad tar file: {e}") from None
    _check_end(body[end:], len(entries))
    return entries


def _check_end(rest: bytes, count: int) -> None:
    """What follows the last entry must end the archive as Go's reader sees an end."""
    first, second = rest[:BLOCK], rest[BLOCK : 2 * BLOCK]
    if not rest or (first == bytes(BLOCK) and (not second or second == bytes(BLOCK))):
        return
    raise BadRequest(f"bad tar file: what follows entry {count} is not a tar header")
