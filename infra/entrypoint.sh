#!/bin/sh
# The container's command: serve on all interfaces, on $DVID_CLOUD_PORT if set, else on
# $PORT (what Cloud Run and most platforms set; the image defaults it to 8080).
# Everything else comes from DVID_CLOUD_* env vars or the TOML file named by
# DVID_CLOUD_CONFIG; arguments given to the container are added (e.g. --log-level debug).
set -eu
exec dvid-cloud serve \
    --host "${DVID_CLOUD_HOST:-0.0.0.0}" \
    --port "${DVID_CLOUD_PORT:-${PORT:-8080}}" \
    "$@"
