"""Server-wide endpoints: help, heartbeat, info, types, load, storage."""

from __future__ import annotations

import html
import os
import platform
import time
from datetime import UTC, datetime

from fastapi import APIRouter
from fastapi.responses import HTMLResponse, PlainTextResponse, Response

from app import __version__
from app.api.common import Svc, json_response
from app.api.routing import LazyRoute
from app.datatypes import get, load_all
from app.datatypes.base import data_root

router = APIRouter(prefix="/api", tags=["server"], route_class=LazyRoute)

GENERAL_HELP = """\
<html><head><title>dvid-cloud API</title></head><body>
<h1>dvid-cloud {version}</h1>
<p>DVID's versioned, image-oriented REST API on object stores. All endpoints are under
<code>/api</code>. Interactive API documentation: <a href="/docs">/docs</a>.</p>
<h2>Server</h2><pre>
GET  /api/help                      this page
GET  /api/help/{{typename}}           help for one datatype
GET  /api/heartbeat                 liveness: "OK"
GET  /api/load                      request and byte counters
GET  /api/storage                   bytes stored per data instance
GET  /api/server/info               server facts
GET  /api/server/note               the configured server note
GET  /api/server/types              datatypes with at least one instance
GET  /api/server/compiled-types     every datatype this server supports
GET  /api/server/whoami             the caller, and its level on each repo (auth)
GET  /                              the web console (/console/)
</pre><h2>Repos</h2><pre>
POST /api/repos                     {{"alias","description","root"}} -> {{"root": uuid}}
GET  /api/repos/info                every repo's JSON
HEAD /api/repo/{{uuid}}               200 if the repo exists
GET  /api/repo/{{uuid}}/info          repo JSON; POST {{"alias","description"}} updates it
GET  /api/repo/{{uuid}}/log           {{"log": [...]}}; POST {{"log": [...]}} appends
GET  /api/repo/{{uuid}}/branch-versions/{{branch}}   leaf first back to the root
POST /api/repo/{{uuid}}/instance      {{"typename","dataname",settings...}}
DELETE /api/repo/{{uuid}}/{{dataname}}?imsure=true   delete an instance and its data
POST /api/repo/{{uuid}}/merge         {{"mergeType":"conflict-free","parents":[...],"note"}}
POST /api/repo/{{uuid}}/resolve       {{"data":[...],"parents":[...],"note"}}
POST /api/repo/{{uuid}}/merge?dryrun=true   every conflict the merge would have
POST /api/repo/{{uuid}}/merge?mode=strict   refuse a merge with any conflict
GET  /api/repo/{{uuid}}/diff/{{from}}/{{to}}  what differs per instance
GET  /api/node/{{to}}/{{dataname}}/diff/{{from}}  what differs in one instance
</pre><h2>Versions</h2><pre>
GET  /api/node/{{uuid}}/status        {{"Locked": bool}} (also GET .../commit)
POST /api/node/{{uuid}}/commit        {{"note","log"}} locks the node
POST /api/node/{{uuid}}/newversion    {{"note","uuid"}} -> {{"child": uuid}}
POST /api/node/{{uuid}}/branch        {{"branch","note","uuid"}} -> {{"child": uuid}}
POST /api/node/{{uuid}}/tag           {{"tag","note"}} -> {{"child": tag}}
GET|POST /api/node/{{uuid}}/note      {{"note": text}}
GET|POST /api/node/{{uuid}}/log       {{"log": [...]}}
</pre><h2>Push and pull (dvid-cloud push/pull)</h2><pre>
GET  /api/repo/{{uuid}}/transfer/repo              the version's repo, node, mutation ids
GET  /api/repo/{{uuid}}/transfer/objects?prefix=   "key size" lines of an instance's data
GET  /api/repo/{{uuid}}/transfer/object?key=       one data object
POST /api/transfer/repo?root=, /owners, /list?prefix=   the receiving side (server admin)
PUT  /api/transfer/object?key=             one data object, inert until published (admin)
POST /api/transfer/merge?key=&amp;typename=    a shared object, by its type's rule (admin)
POST /api/transfer/publish                 adds the pushed nodes to the DAG, last (admin)
</pre><p>A {{uuid}} is any unique prefix of a node UUID, <code>prefix:branch</code>,
<code>:master</code> (one repo only) or <code>prefix:branch~n</code>.</p>
<h2>Datatypes</h2><ul>{types}</ul></body></html>
"""


@router.get("/help", response_class=HTMLResponse)
def general_help() -> str:
    types = "".join(
        f'<li><a href="/api/help/{html.escape(name)}">{html.escape(name)}</a></li>'
        for name in sorted(load_all())
    )
    return GENERAL_HELP.format(version=__version__, types=types)


@router.get("/help/{typename}", response_class=PlainTextResponse)
def type_help(typename: str) -> str:
    return get(typename).help_text


@router.get("/heartbeat", response_class=PlainTextResponse)
async def heartbeat() -> str:
    """A coroutine: FastAPI runs a plain function on its threadpool, and validates its
    answer there too, two thread hops for a liveness probe."""
    return "OK"


@router.get("/server/note", response_class=PlainTextResponse)
def server_note(svc: Svc) -> str:
    return svc.settings.note


@router.get("/server/info")
def server_info(svc: Svc) -> Response:
    uptime = int(time.time() - svc.started)
    info = {
        "Cores": str(os.cpu_count() or 1),
        "Maximum Cores": str(os.cpu_count() or 1),
        "Datastore Version": "1",
        "DVID Version": f"dvid-cloud {__version__}",
        "Storage backend": svc.stores[svc.default_store].description,
        "Server time": datetime.now(UTC).isoformat(),
        "Server uptime": f"{uptime}s",
        "RPC Address": "",
        "Host": f"{platform.node()}:{svc.settings.port}",
        "Note": svc.settings.note,
        "TOML location": str(svc.settings.config_file or ""),
    }
    if svc.settings.read_only:
        info["Mode"] = "read only"
    return json_response(info)


@router.get("/server/compiled-types")
def compiled_types() -> Response:
    return json_response({name: dt.type_url() for name, dt in sorted(load_all().items())})


@router.get("/server/types")
def used_types(svc: Svc) -> Response:
    used = {inst.typename for repo in svc.catalog.repos() for inst in repo.instances.values()}
    return json_response({name: get(name).type_url() for name in sorted(used)})


@router.get("/load")
def load(svc: Svc) -> Response:
    c = svc.counters
    return json_response(
        {
            "file bytes read": c.bytes_read,
            "file bytes written": c.bytes_written,
            "key bytes read": 0,
            "key bytes written": 0,
            "value bytes read": c.bytes_read,
            "value bytes written": c.bytes_written,
            "GET requests": c.get_requests,
            "PUT requests": c.put_requests,
            "handlers active": c.active,
            "goroutines": c.active,
            "active CGo writes": 0,
            "pending log messages": 0,
            "cache hits": svc.value_cache.hits + svc.index_cache.hits,
            "cache misses": svc.value_cache.misses + svc.index_cache.misses,
            "cache bytes": svc.value_cache.weight,
        }
    )


@router.get("/storage")
def storage(svc: Svc) -> Response:
    """Bytes stored per instance (and which store holds them), and per store."""
    instances: dict[str, dict] = {}
    per_store = dict.fromkeys(svc.stores, 0)
    for repo in svc.catalog.repos():
        instances[repo.root] = {}
        for name, inst in repo.instances.items():
            size = svc.store(inst.store).size_of_prefix(f"{data_root(inst)}/")
            per_store[inst.store] += size
            instances[repo.root][name] = {
                "typename": inst.typename,
                "store": inst.store,
                "bytes": size,
            }
    stores = {
        name: {"description": store.description, "data bytes": per_store[name]}
        for name, store in svc.stores.items()
    }
    return json_response({"stores": stores, "instances": instances})
