"""infra/: the container image's entry command and the Lambda entry point, run for real.

No container engine runs here, so the image is checked in the parts that can go wrong
without one: the Dockerfile is parsed, the command its ENTRYPOINT names is run exactly as
the image would run it (same script, same ENV lines, config by env or by a TOML file)
against a moto S3 bucket, and the build context that ``.dockerignore`` lets through is built
into a wheel as ``pip install .`` in the image would. The Lambda handler is invoked with API
Gateway HTTP API (payload 2.0) events, as Lambda would, against moto S3 too.
"""

from __future__ import annotations

import base64
import fnmatch
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests import live_http as live
from tests.fixtures_stores import AWS_TEST_KEY, AWS_TEST_REGION, make_s3_store, new_bucket_name
from tests.servers import free_port

REPO = Path(__file__).resolve().parent.parent
DOCKERFILE = REPO / "infra" / "Dockerfile"
VENV_BIN = str(Path(sys.executable).parent)


# --------------------------------------------------------------------------- Dockerfile


def dockerfile_instructions(path: Path = DOCKERFILE) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        keyword, _, rest = line.partition(" ")
        instructions.append((keyword.upper(), rest.strip()))
    return instructions


def dockerfile_env() -> dict[str, str]:
    """The ENV the image sets (``ENV A=1 B=2`` form)."""
    env: dict[str, str] = {}
    for keyword, rest in dockerfile_instructions():
        if keyword == "ENV":
            for item in rest.split():
                name, eq, value = item.partition("=")
                assert eq, f"ENV {rest!r}: use the NAME=VALUE form"
                env[name] = value.strip('"')
    return env


def entry_command() -> list[str]:
    """The image's ENTRYPOINT + CMD, with image paths mapped back to the repo files that
    COPY put there: the command the container runs, runnable here."""
    copies: dict[str, Path] = {}
    entrypoint: list[str] = []
    cmd: list[str] = []
    for keyword, rest in dockerfile_instructions():
        if keyword == "COPY":
            *sources, dest = rest.split()
            if len(sources) == 1:
                copies[dest] = REPO / sources[0]
        elif keyword == "ENTRYPOINT":
            entrypoint = json.loads(rest)
        elif keyword == "CMD":
            cmd = json.loads(rest)
    command = entrypoint + cmd
    assert command, "the Dockerfile has no exec-form ENTRYPOINT or CMD"
    return [str(copies.get(arg, arg)) for arg in command]


def test_dockerfile_is_slim_non_root_and_serves_on_port() -> None:
    instructions = dockerfile_instructions()
    keywords = [keyword for keyword, _ in instructions]
    assert instructions[0] == ("FROM", "python:3.11-slim")
    users = [rest for keyword, rest in instructions if keyword == "USER"]
    assert users and users[-1] not in ("root", "0")
    # The USER comes after every RUN: nothing runs as root at run time.
    assert keywords.index("USER") > max(i for i, k in enumerate(keywords) if k == "RUN")
    assert ("EXPOSE", "8080") in instructions
    assert dockerfile_env()["PORT"] == "8080"
    command = entry_command()
    script = Path(command[0])
    assert script.is_file() and script.is_relative_to(REPO / "infra"), command
    assert os.access(script, os.X_OK), f"{script} must be executable (mode 755 in git)"


def _dockerignore_admits(relpath: str, patterns: list[str]) -> bool:
    """Docker's rule, simplified: the last pattern matching the path or one of its parent
    folders decides; ``!`` re-admits."""
    admitted = True
    parts = relpath.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for pattern in patterns:
        negate = pattern.startswith("!")
        body = pattern.removeprefix("!").strip("/")
        globs = [body, body.removeprefix("**/")] if body.startswith("**/") else [body]
        for candidate in candidates:
            names = [candidate, candidate.split("/")[-1]] if body.startswith("**/") else [candidate]
            if any(fnmatch.fnmatchcase(n, g) for n in names for g in globs):
                admitted = negate
                break
    return admitted


def test_build_context_installs_the_package(tmp_path: Path) -> None:
    """What ``.dockerignore`` lets through is enough for every COPY and for ``pip install .``,
    and the wheel built from it holds the server, the Lambda handler and the data files."""
    patterns = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    context = tmp_path / "context"
    readmitted = [p.removeprefix("!").strip("/") for p in patterns if p.startswith("!")]
    for folder, dirs, files in os.walk(REPO):
        rel_folder = Path(folder).relative_to(REPO).as_posix().removeprefix(".")
        # Skip folders nothing inside can be admitted from (.git, .venv, data...).
        dirs[:] = [
            d
            for d in dirs
            if _dockerignore_admits(f"{rel_folder}/{d}".lstrip("/"), patterns)
            or any(r.startswith(f"{rel_folder}/{d}/".lstrip("/")) for r in readmitted)
        ]
        for name in files:
            rel = f"{rel_folder}/{name}".lstrip("/")
            if _dockerignore_admits(rel, patterns):
                (context / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(REPO / rel, context / rel)
    assert not (context / "tests").exists() and not (context / ".git").exists()
    for keyword, rest in dockerfile_instructions():
        if keyword == "COPY":
            for source in rest.split()[:-1]:
                assert (context / source).exists(), f"COPY {source}: kept out by .dockerignore"
    wheels = tmp_path / "wheels"
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(wheels), str(context)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    (wheel,) = wheels.glob("dvid_cloud-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for needed in ("app/server.py", "app/serverless.py", "app/metrics.py", "backends/s3.py"):
        assert needed in names
    assert any(n.startswith("app/proto/") and n.endswith(".proto") for n in names)
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "dvid-cloud = app.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()


def test_entry_command_port_choice(tmp_path: Path) -> None:
    """$DVID_CLOUD_PORT wins over $PORT; arguments given to the container are passed on."""
    fake = tmp_path / "bin" / "dvid-cloud"
    fake.parent.mkdir()
    fake.write_text('#!/bin/sh\necho "$@"\n')
    fake.chmod(0o755)

    def run(*args: str, **env: str) -> str:
        base = {k: v for k, v in os.environ.items() if not k.startswith("DVID_CLOUD_")}
        full = {**base, **dockerfile_env(), "PATH": f"{fake.parent}:{base['PATH']}", **env}
        out = subprocess.run(
            [*entry_command(), *args], env=full, capture_output=True, text=True, timeout=30
        )
        assert out.returncode == 0, out.stderr
        return out.stdout.strip()

    assert run() == "serve --host 0.0.0.0 --port 8080"
    assert run(PORT="9000") == "serve --host 0.0.0.0 --port 9000"
    assert run(PORT="9000", DVID_CLOUD_PORT="9100") == "serve --host 0.0.0.0 --port 9100"
    assert run("--log-level", "debug") == "serve --host 0.0.0.0 --port 8080 --log-level debug"


# --------------------------------------------------------------------------- the server


def aws_env(tmp_path: Path) -> dict[str, str]:
    """Test credentials, and no profile or config file of the developer's."""
    missing = str(tmp_path / "no-aws-config")
    return {
        "AWS_ACCESS_KEY_ID": AWS_TEST_KEY,
        "AWS_SECRET_ACCESS_KEY": AWS_TEST_KEY,
        "AWS_DEFAULT_REGION": AWS_TEST_REGION,
        "AWS_REGION": AWS_TEST_REGION,
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_CONFIG_FILE": missing,
        "AWS_SHARED_CREDENTIALS_FILE": missing,
    }


@contextmanager
def container(env: dict[str, str], port: int) -> Iterator[tuple[str, list[str]]]:
    """Run the image's entry command as the image would; yields its URL and, once the
    block ends and the server has stopped on SIGTERM, its output lines."""
    base = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DVID_CLOUD_", "AWS_")) and k != "PORT"
    }
    # In the image, dvid-cloud is on the PATH; here it is in the test's venv.
    full = {**base, "PATH": f"{VENV_BIN}:{base.get('PATH', '')}", **dockerfile_env(), **env}
    # One server process, so that /api/load's counters are those of every request.
    full.setdefault("DVID_CLOUD_WORKERS", "1")
    proc = subprocess.Popen(
        entry_command(), env=full, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    url = f"http://127.0.0.1:{port}"
    lines: list[str] = []
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if live.get(f"{url}/api/heartbeat", timeout=1).text == "OK":
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                output = proc.stdout.read().decode() if proc.stdout else ""
                raise RuntimeError(f"the entry command did not start:\n{output}")
            time.sleep(0.1)
        yield url, lines
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            output, _ = proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            output, _ = proc.communicate()
        lines.extend(output.decode().splitlines())
    # A graceful stop: uvicorn finishes its requests, then re-raises SIGTERM to exit with it.
    assert proc.returncode in (0, -signal.SIGTERM), "\n".join(lines)
    assert "Application shutdown complete." in "\n".join(lines)


def test_entry_command_serves_from_s3_configured_by_env_then_by_file(
    s3_endpoint: str, tmp_path: Path
) -> None:
    bucket = new_bucket_name()
    s3 = make_s3_store(s3_endpoint, bucket=bucket).client
    s3.create_bucket(Bucket=bucket)
    port = free_port()
    env = {
        **aws_env(tmp_path),
        "PORT": str(port),
        "DVID_CLOUD_STORE_URL": f"s3://{bucket}/dvid",
        "DVID_CLOUD_STORE_ENDPOINT": s3_endpoint,
    }
    with container(env, port) as (url, lines):
        r = live.post(f"{url}/api/repos", json={"alias": "in-a-container"})
        assert r.status_code == 200, r.text
        root = r.json()["root"]
        r = live.post(
            f"{url}/api/repo/{root}/instance", json={"typename": "keyvalue", "dataname": "kv"}
        )
        assert r.status_code == 200, r.text
        r = live.post(f"{url}/api/node/{root}/kv/key/k", content=b"\x00value\xff")
        assert r.status_code == 200, r.text
        r = live.get(f"{url}/api/node/{root}/kv/key/k", headers={"X-Request-Id": "probe-1"})
        assert r.content == b"\x00value\xff"
        assert r.headers["x-request-id"] == "probe-1"
        assert live.get(f"{url}/api/load").json()["PUT requests"] >= 3
        metrics = live.get(f"{url}/metrics").text
        assert 'route="/api/node/{uuid}/{dataname}/key/{key}"' in metrics
        assert root not in metrics
    # It served from the bucket, under the prefix the URL names.
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]]
    assert keys and all(k.startswith("dvid/") for k in keys)
    assert any(k.startswith("dvid/meta/repos/") for k in keys)
    # Its output is JSON lines; the access line of the probe carries its id.
    entries = [json.loads(line) for line in lines]
    probe = [e for e in entries if e.get("request_id") == "probe-1"]
    assert [e["message"] for e in probe] == ["request"]
    assert probe[0]["status"] == 200 and probe[0]["path"] == f"/api/node/{root}/kv/key/k"

    # A second container on the same bucket, configured by a TOML file and DVID_CLOUD_PORT
    # (which wins over PORT), serves the same data: the servers keep no state. Instances
    # record the name of their store, and DVID_CLOUD_STORE_URL's store is "default".
    config = tmp_path / "dvid.toml"
    config.write_text(
        '[server]\nnote = "from toml"\n\n'
        f'[store.default]\npath = "s3://{bucket}/dvid"\nendpoint = "{s3_endpoint}"\n'
        f'region = "{AWS_TEST_REGION}"\n'
    )
    port = free_port()
    env = {
        **aws_env(tmp_path),
        "PORT": str(free_port()),
        "DVID_CLOUD_PORT": str(port),
        "DVID_CLOUD_CONFIG": str(config),
    }
    with container(env, port) as (url, _):
        assert live.get(f"{url}/api/server/note").text == "from toml"
        assert live.get(f"{url}/api/node/{root}/kv/key/k").content == b"\x00value\xff"


# --------------------------------------------------------------------------- Lambda


class LambdaContext:
    """What the Lambda runtime passes as ``context`` (the attributes Mangum may read)."""

    def __init__(self) -> None:
        self.aws_request_id = str(uuid.uuid4())
        self.function_name = "dvid-cloud"
        self.function_version = "$LATEST"
        self.invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:dvid-cloud"
        self.memory_limit_in_mb = 1024
        self.log_group_name = "/aws/lambda/dvid-cloud"
        self.log_stream_name = "2024/01/01/[$LATEST]0123456789abcdef"

    def get_remaining_time_in_millis(self) -> int:
        return 30_000


def api_gateway_event(
    method: str,
    path: str,
    body: bytes | None = None,
    *,
    query: str = "",
    content_type: str | None = None,
) -> dict[str, Any]:
    """An API Gateway HTTP API event, payload format 2.0, as Lambda receives it."""
    host = "a1b2c3d4e5.execute-api.us-east-1.amazonaws.com"
    headers = {
        "accept": "*/*",
        "host": host,
        "user-agent": "curl/8.5.0",
        "x-amzn-trace-id": "Root=1-65a0b1c2-0123456789abcdef01234567",
        "x-forwarded-for": "203.0.113.7",
        "x-forwarded-port": "443",
        "x-forwarded-proto": "https",
    }
    if body is not None:
        headers["content-length"] = str(len(body))
    if content_type:
        headers["content-type"] = content_type
    now = time.time()
    event: dict[str, Any] = {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": path,
        "rawQueryString": query,
        "headers": headers,
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "a1b2c3d4e5",
            "domainName": host,
            "domainPrefix": "a1b2c3d4e5",
            "http": {
                "method": method,
                "path": path,
                "protocol": "HTTP/1.1",
                "sourceIp": "203.0.113.7",
                "userAgent": "curl/8.5.0",
            },
            "requestId": "Jx7a2hQ3IAMEVxw=",
            "routeKey": "$default",
            "stage": "$default",
            "time": time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(now)),
            "timeEpoch": int(now * 1000),
        },
        "isBase64Encoded": False,
    }
    if query:
        event["queryStringParameters"] = dict(p.split("=", 1) for p in query.split("&"))
    if body is not None:
        # API Gateway passes text bodies as they are and binary ones base64-encoded.
        try:
            event["body"] = body.decode()
        except UnicodeDecodeError:
            event["body"] = base64.b64encode(body).decode()
            event["isBase64Encoded"] = True
    return event


def response_body(response: dict[str, Any]) -> bytes:
    body = response.get("body", "")
    return base64.b64decode(body) if response.get("isBase64Encoded") else body.encode()


def test_importing_the_lambda_handler_touches_nothing() -> None:
    """A cold start imports the module before any configuration could be wrong."""
    code = "import app.serverless as s; assert s._adapter is None; print('ok')"
    env = {**os.environ, "DVID_CLOUD_STORE_URL": "s3://no-such-bucket/x"}
    env["DVID_CLOUD_STORE_ENDPOINT"] = f"http://127.0.0.1:{free_port()}"
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    assert out.stdout.strip() == "ok", out.stderr


def test_lambda_handler_serves_api_gateway_events_from_s3(
    s3_endpoint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from app import serverless

    bucket = new_bucket_name()
    s3 = make_s3_store(s3_endpoint, bucket=bucket).client
    s3.create_bucket(Bucket=bucket)
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "DVID_CLOUD_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    for name, value in aws_env(tmp_path).items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("DVID_CLOUD_STORE_URL", f"s3://{bucket}/lambda")
    monkeypatch.setenv("DVID_CLOUD_STORE_ENDPOINT", s3_endpoint)
    monkeypatch.setattr(serverless, "_adapter", None)

    def invoke(event: dict[str, Any]) -> tuple[int, bytes, dict[str, Any]]:
        context = LambdaContext()
        response = serverless.handler(event, context)
        # Lambda's own request id is the request's id, in the logs and the response.
        assert response["headers"]["x-request-id"] == context.aws_request_id
        return response["statusCode"], response_body(response), response

    try:
        body = json.dumps({"alias": "on-lambda", "description": "via API Gateway"}).encode()
        status, data, _ = invoke(
            api_gateway_event("POST", "/api/repos", body, content_type="application/json")
        )
        assert status == 200, data
        root = json.loads(data)["root"]
        status, data, _ = invoke(api_gateway_event("GET", "/api/repos/info"))
        assert status == 200 and json.loads(data)[root]["Alias"] == "on-lambda"
        instance = json.dumps({"typename": "keyvalue", "dataname": "kv"}).encode()
        status, data, _ = invoke(api_gateway_event("POST", f"/api/repo/{root}/instance", instance))
        assert status == 200, data

        value = bytes(range(256)) * 4
        event = api_gateway_event(
            "POST", f"/api/node/{root}/kv/key/blob", value, content_type="application/octet-stream"
        )
        assert event["isBase64Encoded"]
        status, data, _ = invoke(event)
        assert status == 200, data
        status, data, response = invoke(api_gateway_event("GET", f"/api/node/{root}/kv/key/blob"))
        assert status == 200 and data == value and response["isBase64Encoded"]
        status, data, _ = invoke(
            api_gateway_event(
                "GET", f"/api/node/{root}/kv/key/blob", query="byte_start=2&byte_end=6"
            )
        )
        assert status == 200 and data == value[2:7]  # byte_end is inclusive, as in DVID
        status, data, _ = invoke(api_gateway_event("GET", f"/api/node/{root}/kv/keys"))
        assert status == 200 and json.loads(data) == ["blob"]
        status, data, _ = invoke(api_gateway_event("GET", f"/api/node/{root}/kv/key/absent"))
        assert status == 404
    finally:
        if serverless._adapter is not None:
            serverless._adapter.app.state.services.close()  # type: ignore[attr-defined]
    # The data is in the bucket, under the configured prefix.
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]]
    assert any(k.startswith("lambda/data/") for k in keys)
