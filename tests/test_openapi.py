"""What the server says about itself is true: the OpenAPI document declares every path
parameter (so OpenAPI tools can call the datatype endpoints), schemathesis finds no 5xx
through it, and each datatype's help lists exactly the endpoints that datatype serves."""

from __future__ import annotations

import os
import re
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
import numpy as np
import pytest
import schemathesis
from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from starlette.routing import Mount

from app.datatypes import load_all
from app.server import create_app
from app.settings import Settings
from tests.conftest import Api

INSTANCE_PREFIX = "/api/node/{uuid}/{dataname}"
METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> FastAPI:
    return create_app(Settings(data_dir=str(tmp_path_factory.mktemp("data"))))


@pytest.fixture(scope="module")
def schema(app: FastAPI) -> dict[str, Any]:
    with TestClient(app) as client:
        r = client.get("/openapi.json")
    assert r.status_code == 200, r.text
    return r.json()


def _operations(schema: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in schema["paths"].items():
        for method, operation in item.items():
            if method in METHODS:
                yield path, method, operation


# --- the OpenAPI document ----------------------------------------------------------------


def test_datatype_operations_declare_uuid_and_dataname(schema: dict[str, Any]) -> None:
    instance_ops = [(p, m, op) for p, m, op in _operations(schema) if p.startswith(INSTANCE_PREFIX)]
    assert len(instance_ops) > 50
    for path, method, operation in instance_ops:
        declared = {(p["name"], p["in"]): p for p in operation.get("parameters", [])}
        for name in ("uuid", "dataname"):
            parameter = declared.get((name, "path"))
            assert parameter is not None, f"{method.upper()} {path} does not declare {name}"
            assert parameter["required"] is True
            assert parameter["schema"]["type"] == "string"


def test_every_path_parameter_is_declared(schema: dict[str, Any]) -> None:
    for path, method, operation in _operations(schema):
        in_path = re.findall(r"\{([^}]+)\}", path)
        declared = [p["name"] for p in operation.get("parameters", []) if p["in"] == "path"]
        assert sorted(declared) == sorted(in_path), f"{method.upper()} {path}: {declared}"
        assert len(set(in_path)) == len(in_path), path
        for parameter in operation.get("parameters", []):
            if parameter["in"] == "path":
                assert parameter["required"] is True, f"{method.upper()} {path}"


def test_paths_are_distinct_templates(schema: dict[str, Any]) -> None:
    """OpenAPI forbids two templates differing only in parameter names."""
    shapes = [re.sub(r"\{[^}]+\}", "{}", path) for path in schema["paths"]]
    assert len(shapes) == len(set(shapes))


def test_operation_ids_are_unique_and_operations_tagged_by_datatype(
    schema: dict[str, Any],
) -> None:
    ids = [op["operationId"] for _, _, op in _operations(schema)]
    assert len(ids) == len(set(ids))
    datatypes = set(load_all())
    tagged: set[str] = set()
    for path, method, operation in _operations(schema):
        if path.startswith(INSTANCE_PREFIX):
            tags = set(operation["tags"])
            assert tags and tags <= datatypes, f"{method.upper()} {path}: {tags}"
            tagged |= tags
    assert tagged == datatypes
    assert datatypes <= {tag["name"] for tag in schema["tags"]}
    assert set(schema["paths"][f"{INSTANCE_PREFIX}/help"]["get"]["tags"]) == datatypes
    key_tags = schema["paths"][f"{INSTANCE_PREFIX}/key/{{key}}"]["get"]["tags"]
    assert key_tags == ["keyvalue", "neuronjson"]  # the datatypes serving it


def test_validation_errors_are_documented_as_dvid_400s(schema: dict[str, Any]) -> None:
    for path, method, operation in _operations(schema):
        assert "422" not in operation["responses"], f"{method.upper()} {path}"


# --- schemathesis ------------------------------------------------------------------------

#: The instances schemathesis calls datatype endpoints on, by datatype.
FUZZED = {
    "keyvalue": "kv",
    "imagetile": "tiles",
    "uint8blk": "grayscale",
    "labelmap": "segmentation",
    "roi": "roi",
    "annotation": "synapses",
    "labelsz": "sizes",
    "tarsupervoxels": "meshes",
    "neuronjson": "neurons",
}
#: Creation settings a fuzzed datatype requires.
REQUIRED_SETTINGS = {"tarsupervoxels": {"Extension": "drc"}}
#: Generated cases per operation (per datatype and variant for shared ones): a few in
#: ``make test``; ``make reliability`` raises it (DVID_FUZZ_EXAMPLES) past 10,000 cases.
EXAMPLES = int(os.environ.get("DVID_FUZZ_EXAMPLES", "3"))
SEED = 20261202

#: Operations whose fully generated cases are left out because they trip a known server
#: error that would also break the repo for every later case (add a strict xfail test
#: reproducing it); they still run with plausible path segments.
KNOWN_SERVER_ERRORS: set[str] = set()

#: Well-formed values for the datatypes' path parameters, by name.
PLAUSIBLE = {
    "dims": ["0_1_2", "0_1", "xy", "1_2"],
    "size": ["32_32_32", "64_64_64", "16_16", "8_8_8"],
    "offset": ["0_0_0", "32_0_0", "0_0_10"],
    "fmt": ["png", "jpg:80", "raw", "octet-stream", "lz4"],
    "label": ["1", "2", "3"],
    "sv": ["1", "2", "3"],
    "ref": ["0" * 64, "a" * 64],
    "point": ["1_2_3", "40_1_1", "0_0_0"],
    "coord_or_size": ["0_0_0", "1_0_0", "64_64_64"],
    "offset_or_span": ["1", "2", "0_0_0"],
    "begin": ["0", "1"],
    "end": ["2", "100"],
    "first": ["a", "0"],
    "last": ["z", "b"],
    "key": ["a", "b", "7"],
    "filename": ["info", "provenance"],
    "scale_key": ["s0", "s1"],
    "chunk": ["0-32_0-32_0-32", "0-64_0-64_0-64", "32-64_0-32_0-32"],
    "top_left": ["0_0_0", "0.5_0_0"],
    "top_right": ["31_0_0", "10_0_0"],
    "bottom_left": ["0_31_0", "0_10_0"],
    "res": ["1", "0.5"],
    "count": ["1", "10"],
    "label_or_point": ["1", "2", "1_2_3"],
    "tag": ["t1", "a"],
    "coord": ["1_2_3", "40_1_1"],
    "source": ["1_2_3", "40_1_1"],
    "target": ["2_2_3", "1_2_3"],
    "spec": ["roi", "roi,a"],
    "index_type": ["PreSyn", "AllSyn", "Voxels"],
    "n": ["3", "0"],
    "scale": ["0", "1"],
    "t": ["1", "0"],
    "from_ref": [":master", "0"],
}


def populate(client: TestClient) -> str:
    """A repo holding one instance per fuzzed datatype, with a little data; its root."""
    api = Api(client)
    uuid = api.new_repo(alias="fuzz")
    for typename, name in FUZZED.items():
        api.new_instance(uuid, typename, name, **REQUIRED_SETTINGS.get(typename, {}))
    api.put(uuid, "kv", "a", b'{"x": 1}')
    gray = np.arange(32**3, dtype=np.uint8).tobytes()
    r = client.post(f"/api/node/{uuid}/grayscale/raw/0_1_2/32_32_32/0_0_0", content=gray)
    assert r.status_code == 200, r.text
    labels = np.ones((64, 64, 64), dtype="<u8")
    labels[:, :, 32:] = 2
    r = client.post(
        f"/api/node/{uuid}/segmentation/raw/0_1_2/64_64_64/0_0_0", content=labels.tobytes()
    )
    assert r.status_code == 200, r.text
    r = client.post(f"/api/node/{uuid}/roi/roi", json=[[0, 0, 0, 1], [1, 0, 0, 0]])
    assert r.status_code == 200, r.text
    r = client.post(f"/api/node/{uuid}/synapses/sync", json={"sync": "segmentation"})
    assert r.status_code == 200, r.text
    synapse = {"Pos": [1, 2, 3], "Kind": "PreSyn", "Tags": ["t1"], "Prop": {}}
    partner = {"Pos": [40, 1, 1], "Kind": "PostSyn", "Rels": [{"To": [1, 2, 3]}]}
    r = client.post(f"/api/node/{uuid}/synapses/elements", json=[synapse, partner])
    assert r.status_code == 200, r.text
    r = client.post(f"/api/node/{uuid}/sizes/sync", json={"sync": "synapses"})
    assert r.status_code == 200, r.text
    doc = {"bodyid": 7, "type": "LC4", "position": [1, 2, 3]}
    r = client.post(f"/api/node/{uuid}/neurons/key/7", json=doc, params={"u": "fuzz"})
    assert r.status_code == 200, r.text
    r = client.post(f"/api/node/{uuid}/meshes/sync", json={"sync": "segmentation"})
    assert r.status_code == 200, r.text
    r = client.post(f"/api/node/{uuid}/meshes/supervoxel/1", content=b"mesh")
    assert r.status_code == 200, r.text
    level = {"Resolution": [8, 8, 8], "TileSize": [16, 16, 16]}
    r = client.post(f"/api/node/{uuid}/tiles/metadata", json={"Levels": {"0": level}})
    assert r.status_code == 200, r.text
    for name in FUZZED.values():  # any request to a subscriber delivers its syncs' events
        assert client.get(f"/api/node/{uuid}/{name}/info").status_code == 200
    return uuid


@pytest.fixture
def fuzz_target(tmp_path: Path) -> Iterator[tuple[FastAPI, str]]:
    """A server on a local folder with a populated repo (:func:`populate`)."""
    app = create_app(Settings(data_dir=str(tmp_path / "data")))
    with TestClient(app) as client:
        yield app, populate(client)


#: The fuzz run in parts that test workers can run side by side, each on a fresh repo:
#: datatypes (by their instances in :data:`FUZZED`), then the server's own operations.
FUZZ_PARTS = {
    "images": ["uint8blk", "imagetile"],
    "labels": ["labelmap"],
    "keyed": ["keyvalue", "roi", "annotation", "labelsz", "tarsupervoxels", "neuronjson"],
    "server": [],
}

#: Cases the parts of the fuzz reach in all, shared equally (each part runs rounds of
#: :data:`EXAMPLES` per operation, on new seeds, until it has its share): ``make
#: reliability`` asks for the 10,000 of the reliability issue; 0 means one round.
FUZZ_CASES = int(os.environ.get("DVID_FUZZ_CASES", "0"))


def test_fuzz_parts_cover_every_fuzzed_datatype() -> None:
    assert sorted(t for part in FUZZ_PARTS.values() for t in part) == sorted(FUZZED)


@dataclass
class FuzzRun:
    """What one fuzz run sent and got: cases per operation label, answers by status, and
    a description of each server error."""

    calls: dict[str, int] = field(default_factory=dict)
    statuses: Counter[int] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)

    @property
    def cases(self) -> int:
        return sum(self.calls.values())

    def summary(self, name: str, seconds: float) -> str:
        answers = dict(sorted(self.statuses.items()))
        return (
            f"\nschemathesis {name}: {len(self.calls)} operation runs, {self.cases} cases, "
            f"{seconds:.1f} s; answers by status {answers}"
        )


def fuzz_part(
    app: FastAPI,
    uuid: str,
    part: str,
    headers: dict[str, str] | None = None,
    examples: int = EXAMPLES,
    min_cases: int = 0,
) -> FuzzRun:
    """Every operation of ``part``, with generated parameters and bodies on real
    instances, in rounds of up to ``examples`` cases per operation (each round on a new
    seed) until ``min_cases`` cases were sent. Datatype operations run on the instance of
    each datatype that serves them (shared ones once per datatype), each twice: with every
    parameter generated, and with plausible path segments (so that requests get past
    parsing); the server's own operations run in their own part (commit and delete would
    lock or remove what the datatype parts fuzz). ``headers`` go with every request."""
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    cases: list[tuple[Any, str]] = []
    for typename in FUZZ_PARTS[part]:
        dataname = FUZZED[typename]
        for result in schema.include(tag=typename).get_all_operations():
            operation = result.ok()
            bound = {"uuid": uuid, "dataname": dataname}
            label = f"{typename} {operation.label}"
            if operation.label not in KNOWN_SERVER_ERRORS:
                cases.append((operation.as_strategy(path_parameters=bound), label))
            plausible = _plausible_path(operation, bound)
            if plausible is not None:
                cases.append((plausible, f"{label} (plausible path)"))
    if part == "server":
        own = schema.exclude(path_regex=r"^/api/node/\{uuid\}/\{dataname\}/")
        for result in own.get_all_operations():
            operation = result.ok()
            names = {p.name for p in operation.path_parameters}
            bound = {k: v for k, v in {"uuid": uuid, "dataname": "kv"}.items() if k in names}
            cases.append((operation.as_strategy(path_parameters=bound), operation.label))
    run, round_seed = FuzzRun(), SEED
    while True:
        for strategy, label in cases:
            _fuzz(strategy, label, run, headers, examples, round_seed)
        if run.cases >= min_cases:
            return run
        round_seed += 1


@pytest.mark.scalable
@pytest.mark.timeout(1800)
@pytest.mark.parametrize("part", list(FUZZ_PARTS))
def test_schemathesis_finds_no_server_errors(fuzz_target: tuple[FastAPI, str], part: str) -> None:
    """Every generated request of the part answers below 500, and the server still answers
    afterwards; the parts reach :data:`FUZZ_CASES` together."""
    app, uuid = fuzz_target
    started = time.monotonic()
    share = -(-FUZZ_CASES // len(FUZZ_PARTS))
    run = fuzz_part(app, uuid, part, min_cases=share)
    print(run.summary(part, time.monotonic() - started))
    assert not run.failures, "\n\n".join(run.failures)
    assert len(run.calls) > 30
    assert run.cases >= share
    with TestClient(app) as client:
        assert client.get("/api/heartbeat").text == "OK"
        assert client.get("/api/repos/info").status_code == 200


def _plausible_path(operation: Any, bound: dict[str, str]) -> Any:
    """Cases whose path segments are drawn from :data:`PLAUSIBLE` (the rest generated);
    None for operations without other path parameters."""
    names = [p.name for p in operation.path_parameters if p.name not in bound]
    if not names:
        return None
    missing = set(names) - set(PLAUSIBLE)
    assert not missing, f"add plausible values for {missing} ({operation.label})"
    segments = st.fixed_dictionaries({n: st.sampled_from(PLAUSIBLE[n]) for n in names})
    return segments.flatmap(
        lambda values: operation.as_strategy(path_parameters={**bound, **values})
    )


def _fuzz(
    strategy: Any,
    label: str,
    run: FuzzRun,
    headers: dict[str, str] | None,
    examples: int,
    round_seed: int,
) -> None:
    """Up to ``examples`` cases from ``strategy``; every answer of 500 or more (or an
    exception out of the app, which a real server answers with 500) is a failure."""
    run.calls.setdefault(label, 0)
    seen: set[str] = set()

    @seed(round_seed)
    @settings(
        max_examples=examples,
        database=None,
        deadline=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=strategy)
    def generated(case: schemathesis.Case) -> None:
        run.calls[label] += 1
        try:
            response = case.call(headers=headers)
        except Exception as e:
            problem = f"500 (raised {type(e).__name__}: {e})"
        else:
            run.statuses[response.status_code] += 1
            try:
                case.validate_response(response, checks=[not_a_server_error])
                return
            except Exception:
                problem = f"{response.status_code} {response.text[:300]}"
        request = case.as_curl_command()
        if request not in seen:
            seen.add(request)
            run.failures.append(f"{label}: {problem}\n{request}")

    generated()


# --- the fuzz with auth on ------------------------------------------------------------------

AUTH_SECRET = "fuzz-test-secret-of-at-least-32-bytes!"
#: Generated cases per operation for each credential (three runs of every part).
AUTH_EXAMPLES = 8


def bearer(repos: dict[str, str] | None = None, admin: bool = False) -> dict[str, str]:
    """Headers with an HS256 JWT granting ``repos`` levels (or everything, as an admin)."""
    claims = {"sub": "fuzzer", "exp": int(time.time()) + 3600, "dvid": {"admin": admin}}
    if repos is not None:
        claims["dvid"] = {"repos": repos}
    return {"Authorization": f"Bearer {jwt.encode(claims, AUTH_SECRET, algorithm='HS256')}"}


def store_snapshot(folder: Path) -> dict[str, bytes]:
    """Every object of a local store, by path: what a request could have changed."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@pytest.mark.reliability
@pytest.mark.timeout(1800)
@pytest.mark.parametrize("credential", ["no token", "read token", "write token"])
def test_fuzz_with_auth_on(tmp_path: Path, credential: str) -> None:
    """With auth required, every part is fuzzed again with no token, a token reading the
    repo and one writing it: nothing answers 500, and nothing sent without write access
    changes a byte of the store."""
    data = tmp_path / "data"
    settings = Settings(data_dir=str(data), auth_required=True, auth_jwt_key=AUTH_SECRET)
    app = create_app(settings)
    with TestClient(app, headers=bearer(admin=True)) as client:
        uuid = populate(client)
    level = credential.split()[0]
    headers = {} if level == "no" else bearer({uuid: level})
    before = store_snapshot(data)
    started = time.monotonic()
    runs = {part: fuzz_part(app, uuid, part, headers, AUTH_EXAMPLES) for part in FUZZ_PARTS}
    for part, run in runs.items():
        print(run.summary(f"{part} with {credential}", time.monotonic() - started))
    assert not [f for run in runs.values() for f in run.failures]
    answered = sum((run.statuses for run in runs.values()), Counter[int]())
    if level == "write":
        assert any(200 <= status < 300 for status in answered), answered
    else:
        after = store_snapshot(data)
        changed = {k for k in before.keys() | after.keys() if before.get(k) != after.get(k)}
        assert not changed, sorted(changed)


#: Scenarios of the stateful run (sequences of up to 8 linked calls): ``make reliability``
#: raises it (DVID_FUZZ_SEQUENCES).
SEQUENCES = int(os.environ.get("DVID_FUZZ_SEQUENCES", "10"))


@pytest.mark.scalable
@pytest.mark.timeout(1800)
def test_stateful_sequences_find_no_server_errors(fuzz_target: tuple[FastAPI, str]) -> None:
    """Sequences of calls linked by what earlier answers returned (schemathesis infers the
    links from the document: a repo's root from ``POST /api/repos`` used by the repo and
    node operations that follow, keys written then read...): every answer is below 500."""
    app, _ = fuzz_target
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    statuses: Counter[int] = Counter()
    operations: Counter[str] = Counter()

    class Sequences(schema.as_state_machine()):
        def validate_response(self, response: Any, case: Any, *_: Any, **__: Any) -> None:
            statuses[response.status_code] += 1
            operations[case.operation.label] += 1
            case.validate_response(response, checks=[not_a_server_error])

    Sequences.run(
        settings=settings(
            max_examples=SEQUENCES,
            stateful_step_count=8,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
    )
    print(
        f"\nstateful: {SEQUENCES} sequences, {sum(statuses.values())} calls to "
        f"{len(operations)} operations; answers by status {dict(sorted(statuses.items()))}"
    )
    assert "POST /api/repos" in operations and len(operations) > 3, operations


def test_nextlabel_beyond_uint64_is_refused(fuzz_target: tuple[FastAPI, str]) -> None:
    app, uuid = fuzz_target
    with TestClient(app, raise_server_exceptions=False) as client:
        r = client.post(f"/api/node/{uuid}/segmentation/nextlabel/{2**70}")
        assert r.status_code < 500, r.text
        assert client.get("/api/repos/info").status_code == 200


# --- help texts --------------------------------------------------------------------------

#: An endpoint line of a help text: method, then the path after the instance.
HELP_ENDPOINT = re.compile(
    r"^\s*(GET|POST|PUT|DEL|DELETE|HEAD)\s+<api URL>/node/<UUID>/<data name>/([A-Za-z0-9_-]+)",
    re.MULTILINE,
)


def _datatype_apps(app: FastAPI) -> dict[str, FastAPI]:
    mounts = [r for r in app.routes if isinstance(r, Mount) and r.path == INSTANCE_PREFIX]
    assert len(mounts) == 1
    return mounts[0].app.datatype_apps()  # type: ignore[attr-defined]


def _served(sub: FastAPI) -> set[tuple[str, str]]:
    """(method, first path keyword) of every route of a datatype's sub-application."""
    paths = get_openapi(title="served", version="0", routes=sub.routes)["paths"]
    return {
        (method.upper(), path.strip("/").split("/")[0])
        for path, item in paths.items()
        for method in item
    }


#: Where a DVID help text starts listing endpoints DVID only plans (roi's ``erode``).
PLANNED = re.compile(r"^TODO \(API endpoints that are planned", re.MULTILINE)


#: A method alone on the line after an endpoint line: the same endpoint (imagetile's
#: ``GET  .../tile/...`` then ``POST``).
HELP_SECOND_METHOD = re.compile(
    r"^\s*(?:GET|POST|PUT|DEL|DELETE|HEAD)\s+<api URL>/node/<UUID>/<data name>/([A-Za-z0-9_-]+)"
    r".*\n\s*(GET|POST|PUT|DEL|DELETE|HEAD)\s*$",
    re.MULTILINE,
)


#: Placeholders a help text puts where a keyword goes, and the keywords they stand for
#: (neuronjson's ``<schema type>``).
HELP_PLACEHOLDERS = {"<schema type>": ("json_schema", "schema", "schema_batch")}


def _expand_placeholders(text: str) -> str:
    for placeholder, keywords in HELP_PLACEHOLDERS.items():
        text = re.sub(
            rf"^.*<data name>/{re.escape(placeholder)}.*$",
            lambda line, p=placeholder, k=keywords: "\n".join(
                line.group(0).replace(p, keyword) for keyword in k
            ),
            text,
            flags=re.MULTILINE,
        )
    return text


def _advertised(help_text: str) -> set[tuple[str, str]]:
    listed = _expand_placeholders(PLANNED.split(help_text)[0])
    pairs = HELP_ENDPOINT.findall(listed)
    pairs += [(method, keyword) for keyword, method in HELP_SECOND_METHOD.findall(listed)]
    return {("DELETE" if method == "DEL" else method, keyword) for method, keyword in pairs}


#: Endpoints every instance serves (app/api/instances.py) that some of DVID's help texts,
#: kept verbatim, do not list (labelsz's; roi's omits sync too; imagetile's POST info;
#: ``diff`` is dvid-cloud's own, listed in the server's help).
COMMON_UNLISTED = {
    ("GET", "tags"),
    ("POST", "tags"),
    ("POST", "sync"),
    ("POST", "info"),
    ("GET", "diff"),
}


@pytest.mark.parametrize("typename", sorted(load_all()))
def test_help_lists_exactly_the_served_endpoints(app: FastAPI, typename: str) -> None:
    with TestClient(app) as client:
        r = client.get(f"/api/help/{typename}")
    assert r.status_code == 200, r.text
    advertised = _advertised(r.text)
    served = _served(_datatype_apps(app)[typename]) - (COMMON_UNLISTED - advertised)
    assert advertised, f"no endpoint lines parsed from the {typename} help"
    not_served = sorted(advertised - served)
    assert not not_served, f"{typename} help lists endpoints it does not serve: {not_served}"
    undocumented = sorted(served - advertised)
    assert not undocumented, f"{typename} serves endpoints its help omits: {undocumented}"
    keywords = {keyword for _, keyword in served}
    assert keywords == {keyword for _, keyword in advertised}


def test_help_parser_reads_dvid_endpoint_lines() -> None:
    text = """
GET  <api URL>/node/<UUID>/<data name>/raw/<dims>/<size>/<offset>[/<format>][?queryopts]
 GET <api URL>/node/<UUID>/<data name>/blocks/<block coord>/<spanX>
DEL  <api URL>/node/<UUID>/<data name>/key/<key>
POST <api URL>/node/<UUID>/<data name>/sync?<options>
GET  <api URL>/node/<UUID>/<data name>/tile/<dims>/<scaling>/<tile coord>[?noblanks=true]
POST
    GET <api URL>/node/3f8c/grayscale/raw/0_1/512_256/0_0_100/jpg:80
POST <api URL>/repo/<UUID>/instance
TODO (API endpoints that are planned in near future)
GET  <api URL>/node/<UUID>/<data name>/erode/<element size>
"""
    assert _advertised(text) == {
        ("GET", "raw"),
        ("GET", "blocks"),
        ("DELETE", "key"),
        ("POST", "sync"),
        ("GET", "tile"),
        ("POST", "tile"),
    }
