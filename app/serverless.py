"""AWS Lambda entry point: ``app.serverless.handler`` behind API Gateway (HTTP API, payload
format 2.0, or a REST API), a Lambda function URL or an ALB, through the Mangum adapter.

The function is configured by the same env vars as the server (``DVID_CLOUD_STORE_URL``,
``DVID_CLOUD_STORE_ENDPOINT``, ``DVID_CLOUD_CONFIG``...; see ``infra/README.md``). The app is
built on the first invocation, not at import, and then kept for the warm container's later
invocations: importing this module touches no store and needs no configuration.

``DVID_CLOUD_LAMBDA_BASE_PATH`` names a path prefix to strip from incoming paths, for an API
whose stage or custom-domain mapping adds one (e.g. ``/prod``); the default is none.

ASGI lifespan is off: the app's shutdown hook closes its stores, and Mangum would run it
after every invocation.
"""

from __future__ import annotations

import os
import threading
from typing import Any

from mangum import Mangum

_lock = threading.Lock()
_adapter: Mangum | None = None


def adapter() -> Mangum:
    """The Mangum adapter around the app, built on first use."""
    global _adapter
    with _lock:
        if _adapter is None:
            from app.logs import configure_logging
            from app.server import create_app
            from app.settings import load_settings

            if "AWS_LAMBDA_FUNCTION_NAME" in os.environ:  # in Lambda, not in tests
                configure_logging(os.environ.get("DVID_CLOUD_LOG_LEVEL", "info"))
            _adapter = Mangum(
                create_app(load_settings()),
                lifespan="off",
                api_gateway_base_path=os.environ.get("DVID_CLOUD_LAMBDA_BASE_PATH", "/"),
            )
        return _adapter


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """The Lambda handler: one API Gateway (or ALB, function URL) event, one response."""
    return adapter()(event, context)
