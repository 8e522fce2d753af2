"""``/api/repos`` and ``/api/repo/{uuid}/...``: repos, instances, merges."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response

from app import repo_diff
from app.api.common import JsonBody, Svc, json_object, json_response, string_field, string_list
from app.api.routing import LazyRoute
from app.dag import MASTER, Node, node_dag_json
from app.datatypes import bind, get
from app.datatypes.base import parse_bool, parse_compression
from app.errors import BadRequest
from app.repo import Instance, Repo, check_uuid, new_repo, new_uuid, stamp
from app.services import Services
from app.versions import commit, create_child

router = APIRouter(prefix="/api", tags=["repos"], route_class=LazyRoute)

RESOLVE_NOTE = "Version for deleting conflicts before merge"


def repo_json(svc: Services, repo: Repo) -> dict:
    """DVID's repo JSON; version-dependent instance facts are those of the master leaf."""
    leaf = repo.dag.branch_leaf(MASTER) or repo.dag.root
    return {
        "Root": repo.root,
        "Alias": repo.alias,
        "Description": repo.description,
        "Log": repo.log,
        "Properties": repo.properties,
        "DataInstances": {
            name: bind(svc, repo, leaf.uuid, inst).instance_json()
            for name, inst in repo.instances.items()
        },
        "DAG": node_dag_json(repo.dag),
        "MutationID": repo.mutation_id,
        "SavedMutationID": repo.mutation_id,
        "Created": repo.created,
        "Updated": repo.updated,
    }


@router.post("/repos")
def create_repo(body: JsonBody, svc: Svc) -> Response:
    body = json_object(body)
    root = string_field(body, "root")
    root = check_uuid(root, "root UUID") if root else new_uuid()
    repo = new_repo(
        root,
        svc.catalog.next_version_id(),
        string_field(body, "alias"),
        string_field(body, "description"),
    )
    svc.catalog.create(repo)
    return json_response({"root": root})


@router.get("/repos/info")
def repos_info(svc: Svc) -> Response:
    return json_response({repo.root: repo_json(svc, repo) for repo in svc.catalog.repos()})


@router.head("/repo/{uuid}")
def head_repo(uuid: str, svc: Svc) -> Response:
    svc.catalog.resolve(uuid)
    return Response()


@router.get("/repo/{uuid}/info")
def get_repo_info(uuid: str, svc: Svc) -> Response:
    repo, _ = svc.catalog.resolve(uuid)
    return json_response(repo_json(svc, repo))


@router.post("/repo/{uuid}/info")
def post_repo_info(uuid: str, body: JsonBody, svc: Svc) -> Response:
    body = json_object(body)
    alias, description = body.get("alias"), body.get("description")
    for name, value in (("alias", alias), ("description", description)):
        if value is not None and not isinstance(value, str):
            raise BadRequest(f"{name!r} must be a string")
    repo, _ = svc.catalog.resolve(uuid)

    def edit(repo: Repo) -> None:
        if alias is not None:
            repo.alias = alias
        if description is not None:
            repo.description = description
        repo.touch()

    svc.catalog.update(repo.root, edit)
    return Response()


@router.get("/repo/{uuid}/log")
def get_repo_log(uuid: str, svc: Svc) -> Response:
    repo, _ = svc.catalog.resolve(uuid)
    return json_response({"log": repo.log})


@router.post("/repo/{uuid}/log")
def post_repo_log(uuid: str, body: JsonBody, svc: Svc) -> Response:
    lines = string_list(json_object(body), "log")
    repo, _ = svc.catalog.resolve(uuid)

    def edit(repo: Repo) -> None:
        repo.log.extend(stamp(lines))
        repo.touch()

    svc.catalog.update(repo.root, edit)
    return Response()


@router.get("/repo/{uuid}/branch-versions/{branch}")
def branch_versions(uuid: str, branch: str, svc: Svc) -> Response:
    repo, _ = svc.catalog.resolve(uuid)
    return json_response([node.uuid for node in repo.dag.branch_versions(branch)])


@router.post("/repo/{uuid}/instance")
def create_instance(uuid: str, body: JsonBody, svc: Svc) -> Response:
    config = json_object(body, "instance configuration")
    settings = {str(k).lower(): v for k, v in config.items()}
    typename = settings.pop("typename", None)
    dataname = settings.pop("dataname", None)
    if not isinstance(typename, str) or not typename:
        raise BadRequest("instance creation needs a 'typename'")
    if not isinstance(dataname, str):
        raise BadRequest("instance creation needs a 'dataname'")
    datatype = get(typename)
    versioned = parse_bool(settings.pop("versioned", True), "versioned")
    for key, value in settings.items():
        if not isinstance(value, str):
            raise BadRequest(f"setting {key!r} must be a string, not {value!r}")
    compression = parse_compression(settings.pop("compression", datatype.default_compression))
    datatype.check_compression(compression)
    checksum = settings.pop("checksum", "none").lower()
    if checksum not in ("none", "crc32"):
        raise BadRequest(f"unknown checksum {checksum!r}: use none or crc32")
    tags = _parse_tags(settings.pop("tags", ""))
    store = settings.pop("store", None) or svc.default_store
    if store not in svc.stores:
        raise BadRequest(f"unknown store {store!r}: configured stores are {sorted(svc.stores)}")
    type_settings = datatype.parse_settings(settings)
    repo, node = svc.catalog.resolve(uuid)
    type_settings = datatype.complete_settings(svc, type_settings)

    def edit(repo: Repo) -> None:
        target = repo.dag.node(node.uuid)
        repo.require_open(target, f"add instance {dataname!r}")
        repo.check_new_instance(dataname)
        repo.instances[dataname] = Instance(
            name=dataname,
            typename=typename,
            data_uuid=new_uuid(),
            repo_uuid=target.uuid,
            versioned=versioned,
            compression=compression,
            checksum=checksum,
            store=store,
            tags=tags,
            settings=type_settings,
        )
        repo.touch()

    svc.catalog.update(repo.root, edit)
    return json_response({"result": f"Added {dataname} [{typename}] to node {node.uuid}"})


def _parse_tags(text: str) -> dict[str, str]:
    tags = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, eq, value = item.partition("=")
        if not eq or not key:
            raise BadRequest(f"bad tag {item!r}: tags are written 'key=value,key2=value2'")
        tags[key] = value
    return tags


@router.delete("/repo/{uuid}/{dataname}")
def delete_instance(uuid: str, dataname: str, svc: Svc, imsure: bool = False) -> Response:
    if not imsure:
        raise BadRequest("deleting an instance needs the query string 'imsure=true'")
    repo, node = svc.catalog.resolve(uuid)

    def edit(repo: Repo) -> Instance:
        inst = repo.instance(dataname)
        del repo.instances[dataname]
        repo.touch()
        return inst

    removed = svc.catalog.update(repo.root, edit)
    svc.answers.forget_all()
    bind(svc, repo, node.uuid, removed).drop()
    return json_response({"result": f"Deleted data instance {dataname!r} from repo {repo.root}"})


def _merge_parents(svc: Services, repo: Repo, refs: list[str]) -> list[str]:
    if len(refs) < 2:
        raise BadRequest("a merge needs at least two parents")
    uuids = []
    for ref in refs:
        parent_repo, node = svc.catalog.resolve(ref)
        if parent_repo.root != repo.root:
            raise BadRequest(f"parent {ref} is not in repo {repo.root}")
        if node.uuid in uuids:
            raise BadRequest(f"parent {node.uuid} is given twice")
        uuids.append(node.uuid)
    return uuids


def _merge_rule(repo: Repo, parents: list[Node]) -> str:
    """The merged node continues the first parent's branch."""
    return parents[0].branch


MERGE_MODES = ("default", "strict")


@router.post("/repo/{uuid}/merge")
def merge(
    uuid: str, body: JsonBody, svc: Svc, dryrun: str = "false", mode: str = "default"
) -> Response:
    """``dryrun=true`` reports every conflict the merge would have and writes nothing
    (:func:`app.repo_diff.merge_report`); ``mode=strict`` refuses a merge with any; the
    default merges anyway (a conflicting item errors on read until resolved)."""
    body = json_object(body)
    merge_type = string_field(body, "mergeType")
    if merge_type != "conflict-free":
        raise BadRequest(f"unsupported mergeType {merge_type!r}: only 'conflict-free' exists")
    dry = parse_bool(dryrun, "dryrun")
    if mode not in MERGE_MODES:
        raise BadRequest(f"unknown merge mode {mode!r}: use one of {', '.join(MERGE_MODES)}")
    repo, _ = svc.catalog.resolve(uuid)
    parents = _merge_parents(svc, repo, string_list(body, "parents"))
    if dry or mode == "strict":
        report = repo_diff.merge_report(svc, repo, [repo.dag.node(p) for p in parents])
        if dry:
            return json_response(report)
        if report["count"]:
            raise BadRequest(
                f"merge refused (mode=strict): {report['count']} conflicts in instances "
                f"{', '.join(report['conflicts'])}; POST with dryrun=true lists them"
            )
    child = create_child(svc, repo.root, parents, _merge_rule, note=string_field(body, "note"))
    return json_response({"child": child.uuid})


@router.post("/repo/{uuid}/resolve")
def resolve(uuid: str, body: JsonBody, svc: Svc) -> Response:
    """Merge after deleting, in each lower-priority parent, the keys whose visible value
    differs from the one seen through the first parent that has a value (DVID's rule)."""
    body = json_object(body)
    names = string_list(body, "data")
    if not names:
        raise BadRequest("Must specify at least one data instance using 'data' field")
    repo, _ = svc.catalog.resolve(uuid)
    parents = _merge_parents(svc, repo, string_list(body, "parents"))
    nodes = [repo.dag.node(p) for p in parents]
    doomed: dict[str, dict[str, list[str]]] = {}  # parent -> instance -> keys
    for name in names:
        data = bind(svc, repo, repo.dag.root.uuid, repo.instance(name))
        for parent, keys in data.conflicts(nodes).items():
            doomed.setdefault(parent, {})[name] = keys
    final = [
        _tombstone_child(svc, repo.root, parent, doomed[parent]) if parent in doomed else parent
        for parent in parents
    ]
    child = create_child(svc, repo.root, final, _merge_rule, note=string_field(body, "note"))
    return json_response({"child": child.uuid})


def _tombstone_child(svc: Services, root: str, parent: str, doomed: dict[str, list[str]]) -> str:
    """A committed child of ``parent``, on branch ``conflict-<parent>``, deleting keys."""

    def rule(repo: Repo, parents: list[Node]) -> str:
        return repo.check_new_branch(parents[0], f"conflict-{parent}")

    child = create_child(svc, root, [parent], rule, note=RESOLVE_NOTE)
    repo = svc.catalog.repo(root)
    for name, keys in doomed.items():
        bind(svc, repo, child.uuid, repo.instances[name]).tombstone(keys)
    commit(svc, root, child.uuid, RESOLVE_NOTE, [])
    return child.uuid
