"""Bulk work on Dask: ingest, downres, export, meshes and skeletons.

Each command plans its work in the calling process, then runs tasks on a Dask cluster (a
local one by default, or ``--scheduler tcp://...``). Workers open the same stores as the
server, from the same settings, and write through the same datatype code and transactions,
so the store ends exactly as if the data had come through the REST API, and a running
server sees it at once. No server is in the loop.
"""
