"""What a server imports before its first answer: the datatype packages its requests
need, and not the tools and libraries of features it does not use (issue 15's start-up
goal). Each check runs in a fresh interpreter, as ``dvid-cloud serve`` does."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from pathlib import Path

from app.datatypes import _REGISTRY, _declared, load_all

#: Modules that a server without auth, proxies, neuronjson or the CLI tools must not
#: import to start: each took tens of milliseconds.
NOT_AT_START = [
    "app.bulk.ingest",
    "app.transfer.cli",
    "app.tokens",
    "httpx",
    "jwt",
    "cryptography",
    "google.auth.transport.requests",
    "google.oauth2.service_account",
    "jsonschema",
    "neuroglancer",
    "pydantic_settings",
    "prometheus_client",
]


def imported_after(code: str) -> set[str]:
    """The modules imported by a fresh interpreter after running ``code``."""
    script = f"import json, sys\n{code}\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=300
    ).stdout
    return set(json.loads(out.splitlines()[-1]))


def datatype_packages(modules: set[str]) -> set[str]:
    return modules & set(_declared().values())


def test_a_started_server_has_imported_no_datatype_or_unused_feature(tmp_path: Path) -> None:
    modules = imported_after(
        "import app.cli\n"
        "from app.server import create_app\n"
        "from app.settings import load_settings\n"
        f"create_app(load_settings(data_dir={str(tmp_path)!r})).state.services.check()"
    )
    assert "app.server" in modules
    assert datatype_packages(modules) == set()
    assert not modules & set(NOT_AT_START)


def test_a_chunk_read_imports_its_datatype_package_only(tmp_path: Path) -> None:
    modules = imported_after(
        "from fastapi.testclient import TestClient\n"
        "from app.server import create_app\n"
        "from app.settings import load_settings\n"
        f"c = TestClient(create_app(load_settings(data_dir={str(tmp_path)!r})))\n"
        "root = c.post('/api/repos', json={}).json()['root']\n"
        "c.post(f'/api/repo/{root}/instance', json={'typename': 'uint8blk', 'dataname': 'g'})\n"
        "voxels = bytes(range(256)) * 128\n"
        "c.post(f'/api/node/{root}/g/raw/0_1_2/32_32_32/0_0_0', content=voxels)\n"
        "assert c.get(f'/api/node/{root}/g/raw/0_1_2/32_32_32/0_0_0').content == voxels"
    )
    assert datatype_packages(modules) == {"app.datatypes.imageblk"}


def test_typenames_files_name_exactly_the_types_their_packages_register() -> None:
    for package in set(_declared().values()):
        importlib.import_module(package)
    ours = {name: cls for name, cls in _REGISTRY.items() if cls.__module__.startswith("app.")}
    assert set(ours) == set(_declared())
    for name, cls in ours.items():
        assert (cls.__module__ + ".").startswith(_declared()[name] + "."), name
    assert sorted(load_all()) == sorted(_REGISTRY)  # plugins too, once registered
