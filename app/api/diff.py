"""``GET /api/repo/{uuid}/diff/{from}/{to}``: what differs between two versions, per
instance (:mod:`app.repo_diff`); the one-instance form is among every instance's common
endpoints (:mod:`app.api.instances`)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response

from app import repo_diff
from app.api.common import Svc, json_response
from app.api.routing import LazyRoute

router = APIRouter(prefix="/api", tags=["repos"], route_class=LazyRoute)


@router.get("/repo/{uuid}/diff/{from_ref}/{to_ref}")
def diff(uuid: str, from_ref: str, to_ref: str, svc: Svc) -> Response:
    """Versions may be named by any reference (prefix, ``:branch``, ``prefix:branch~n``)."""
    repo, _ = svc.catalog.resolve(uuid)
    was = repo_diff.version_in(svc, repo, from_ref)
    now = repo_diff.version_in(svc, repo, to_ref)
    return json_response(repo_diff.diff(svc, repo, was, now))
