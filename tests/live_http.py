"""Requests to the real server processes that tests start, with a generous timeout.

httpx's default 5 s read timeout is a timing assertion in disguise: on a loaded 2-core CI
machine, a server process's first answers (lazy imports, a cold page cache, four test
workers beside browsers and Dask clusters) have taken longer than that. A stuck server is
still noticed, just not mistaken for a slow one."""

import functools

import httpx

TIMEOUT = httpx.Timeout(60.0, connect=10.0)

get = functools.partial(httpx.get, timeout=TIMEOUT)
post = functools.partial(httpx.post, timeout=TIMEOUT)
put = functools.partial(httpx.put, timeout=TIMEOUT)
delete = functools.partial(httpx.delete, timeout=TIMEOUT)
head = functools.partial(httpx.head, timeout=TIMEOUT)
request = functools.partial(httpx.request, timeout=TIMEOUT)
stream = functools.partial(httpx.stream, timeout=TIMEOUT)
