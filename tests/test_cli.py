"""The installed ``dvid-cloud`` command: a real server process, and the client commands."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from tests import live_http as live
from tests.fixtures_stores import s3_endpoint
from tests.servers import wait_for_heartbeat

__all__ = ["s3_endpoint"]

CLI = shutil.which("dvid-cloud", path=str(Path(sys.executable).parent)) or "dvid-cloud"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def server(*args: str, env: dict[str, str] | None = None, port: int) -> Iterator[str]:
    """Run ``dvid-cloud serve ARGS`` until the block ends; yields its base URL."""
    proc = subprocess.Popen(
        [CLI, "serve", *args],
        env={**os.environ, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        if not wait_for_heartbeat(url, proc):
            proc.terminate()
            output = proc.stdout.read().decode() if proc.stdout else ""
            raise RuntimeError(f"server did not start:\n{output}")
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=15)


def cli(url: str, *args: str) -> str:
    result = subprocess.run(
        [CLI, "--server", url, *args], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_serve_cli_workflow_and_restart(tmp_path: Path) -> None:
    port = free_port()
    data = tmp_path / "data"
    with server("--data-dir", str(data), "--port", str(port), port=port) as url:
        root = cli(url, "repos", "new", "--alias", "cli-repo")
        assert len(root) == 32
        assert "Added kv [keyvalue]" in cli(url, "repo", root, "instance", "keyvalue", "kv")
        assert live.post(f"{url}/api/node/{root}/kv/key/a", content=b"1").status_code == 200
        cli(url, "node", root, "note", "first version")
        cli(url, "node", root, "log", "did a thing")
        assert cli(url, "node", root, "commit", "--log", "committing") == root
        assert '"Locked": true' in cli(url, "node", root, "status")
        child = cli(url, "node", root, "newversion", "--note", "second")
        exp = cli(url, "node", root, "branch", "exp")
        assert cli(url, "node", root, "tag", "v1") == "v1"
        cli(url, "node", child, "commit")
        cli(url, "node", exp, "commit")
        merged = cli(url, "repo", root, "merge", child, exp)
        assert cli(url, "node", root, "note") == "first version"
        assert cli(url, "node", root, "log").count("\n") == 1
        assert '"cli-repo"' in cli(url, "repos", "info")
        failed = subprocess.run(
            [CLI, "--server", url, "node", root, "commit"], capture_output=True, text=True
        )
        assert failed.returncode == 1 and "400" in failed.stderr
    # A new process on the same folder serves the same data.
    with server("--data-dir", str(data), "--port", str(port), port=port) as url:
        assert live.get(f"{url}/api/node/{merged}/kv/key/a").content == b"1"
        assert live.get(f"{url}/api/node/v1/status").json() == {"Locked": True}


def test_serve_takes_env_and_config_file(tmp_path: Path) -> None:
    port = free_port()
    config = tmp_path / "dvid.toml"
    config.write_text(
        f'[server]\nport = {port}\nnote = "from toml"\n\n'
        f'[store.main]\npath = "{tmp_path / "via-toml"}"\n\n[backend]\ndefault = "main"\n'
    )
    with server("--config", str(config), port=port) as url:
        assert live.get(f"{url}/api/server/note").text == "from toml"
        live.post(f"{url}/api/repos", json={})
    assert any((tmp_path / "via-toml" / "meta" / "repos").iterdir())
    # Env vars override the file; flags override env vars.
    env_port = free_port()
    env = {"DVID_CLOUD_CONFIG": str(config), "DVID_CLOUD_PORT": str(env_port)}
    with server(env=env, port=env_port) as url:
        assert live.get(f"{url}/api/server/note").text == "from toml"
    flag_port = free_port()
    with server("--port", str(flag_port), env=env, port=flag_port) as url:
        assert live.get(f"{url}/api/heartbeat").text == "OK"


def test_settings_sources_merge_table_by_table(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Flags over env vars (names in any case; lists and sections as JSON) over the file,
    a section given by two sources keeping what only one of them sets (in process: the
    server tests above run ``serve`` itself)."""
    from app.settings import load_settings

    config = tmp_path / "dvid.toml"
    config.write_text('[server]\nnote = "file"\nport = 1\n\n[proxy]\nattempts = 3\ntimeout = 9\n')
    monkeypatch.setenv("DVID_CLOUD_CONFIG", str(config))
    monkeypatch.setenv("dvid_cloud_port", "2")
    monkeypatch.setenv("DVID_CLOUD_PROXY", '{"timeout": 5, "boss": {"token": "t"}}')
    monkeypatch.setenv("DVID_CLOUD_CORS_ORIGINS", '["https://a.example"]')
    monkeypatch.setenv("DVID_CLOUD_READ_ONLY", "yes")
    settings = load_settings(read_only=False)
    assert (settings.note, settings.port, settings.read_only) == ("file", 2, False)
    assert (settings.proxy.attempts, settings.proxy.timeout) == (3, 5)
    assert settings.proxy_config().boss.token == "t"
    assert settings.cors_origins == ["https://a.example"]
    monkeypatch.setenv("DVID_CLOUD_CORS_ORIGINS", "https://a.example")
    with pytest.raises(ValueError, match="DVID_CLOUD_CORS_ORIGINS"):
        load_settings()


@pytest.mark.parametrize(
    "args",
    [
        ["--help"],
        ["serve", "--help"],
        ["repos", "--help"],
        ["repos", "new", "--help"],
        ["repo", "x", "instance", "--help"],
        ["node", "x", "commit", "--help"],
        ["node", "x", "branch", "--help"],
    ],
)
def test_every_command_has_help(args: list[str]) -> None:
    result = subprocess.run([CLI, *args], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0 and "Usage:" in result.stdout


def test_client_reports_unreachable_server() -> None:
    result = subprocess.run(
        [CLI, "--server", f"http://127.0.0.1:{free_port()}", "repos", "info"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 1 and "cannot reach" in result.stderr


def failed_start(*args: str, env: dict[str, str] | None = None) -> str:
    """Run ``dvid-cloud serve`` expecting it to refuse to start; returns its stderr."""
    result = subprocess.run(
        [CLI, "serve", "--port", str(free_port()), *args],
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("dvid-cloud: cannot start:"), lines
    return lines[0]


S3_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
}


def s3_config(tmp_path: Path, endpoint: str, bucket: str) -> str:
    config = tmp_path / "s3.toml"
    config.write_text(
        f'[store.main]\npath = "s3://{bucket}/dvid"\nendpoint = "{endpoint}"\n'
        'region = "us-east-1"\n\n[backend]\ndefault = "main"\n'
    )
    return str(config)


def test_bad_configuration_fails_at_startup_with_one_line(tmp_path: Path, s3_endpoint) -> None:
    missing_bucket = s3_config(tmp_path, s3_endpoint, "no-such-bucket")
    assert "NoSuchBucket" in failed_start("--config", missing_bucket, env=S3_ENV)
    unreachable = s3_config(tmp_path, f"http://127.0.0.1:{free_port()}", "bucket")
    assert "'main'" in failed_start("--config", unreachable, env=S3_ENV)
    bad_toml = tmp_path / "bad.toml"
    bad_toml.write_text("[server\nport = 1")
    failed_start("--config", str(bad_toml))
    assert "missing.toml" in failed_start("--config", str(tmp_path / "missing.toml"))
    blocked = tmp_path / "file-not-folder"
    blocked.write_text("x")
    failed_start("--data-dir", str(blocked / "data"))


def test_wrong_credentials_fail_at_startup(tmp_path: Path) -> None:
    from tests.servers import moto_s3_server

    with moto_s3_server(check_credentials=True) as endpoint:
        line = failed_start("--config", s3_config(tmp_path, endpoint, "bucket"), env=S3_ENV)
        assert "main" in line


def test_serve_runs_worker_processes(tmp_path: Path) -> None:
    """``--workers 2``: two processes share the port, each built from the parent's flags
    and config file, and each serves the same store."""
    port = free_port()
    config = tmp_path / "dvid.toml"
    config.write_text(
        f'[server]\nnote = "two workers"\n\n[store.main]\npath = "{tmp_path / "d"}"\n'
    )
    proc = subprocess.Popen(
        [CLI, "serve", "--config", str(config), "--port", str(port), "--workers", "2"],
        env={**os.environ, "DVID_CLOUD_WORKERS": "1"},  # the flag wins over the env
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        assert wait_for_heartbeat(url, proc, timeout=120)
        root = live.post(f"{url}/api/repos", json={}).json()["root"]
        for _ in range(20):  # new connections, spread over the workers by the kernel
            with httpx.Client(timeout=live.TIMEOUT) as client:
                assert client.get(f"{url}/api/server/note").text == "two workers"
                assert client.get(f"{url}/api/node/{root}/status").status_code == 200
    finally:
        proc.terminate()
        output = proc.communicate(timeout=30)[0].decode()
    started = {line for line in output.splitlines() if "Started server process" in line}
    assert len(started) == 2, output
