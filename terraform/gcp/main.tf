# dvid-cloud on Google Cloud: one GCS bucket holds the store; a Cloud Run service runs the
# server under its own service account, which has object access to that bucket only;
# optionally an HTTPS load balancer with Cloud CDN serves cacheable (committed) data.

locals {
  store_url       = "gs://${google_storage_bucket.this.name}/${var.prefix}"
  bucket_location = upper(var.bucket_location == "" ? var.region : var.bucket_location)
  port            = 8080
  cdn             = var.enable_cdn ? 1 : 0

  # The server's settings. Empty values are left out, so the server's defaults apply. The
  # admin token is added from Secret Manager by the service itself (see below).
  server_env = {
    DVID_CLOUD_STORE_URL           = local.store_url
    DVID_CLOUD_HOST                = "0.0.0.0"
    DVID_CLOUD_PORT                = tostring(local.port)
    DVID_CLOUD_READ_ONLY           = tostring(var.read_only)
    DVID_CLOUD_AUTH_REQUIRED       = tostring(var.auth_required)
    DVID_CLOUD_AUTH_JWKS_URL       = var.auth_jwks_url
    DVID_CLOUD_AUTH_JWT_KEY        = var.auth_jwt_key
    DVID_CLOUD_AUTH_JWT_ALGORITHMS = length(var.auth_jwt_algorithms) == 0 ? "" : jsonencode(var.auth_jwt_algorithms)
    DVID_CLOUD_AUTH_AUDIENCE       = var.auth_audience
    DVID_CLOUD_AUTH_ISSUER         = var.auth_issuer
    DVID_CLOUD_CORS_ORIGINS        = jsonencode(var.cors_origins)
  }

  environment = { for key, value in merge(local.server_env, var.environment) : key => value if value != "" }

  has_verifier = var.auth_jwks_url != "" || var.auth_jwt_key != "" || var.admin_token_secret != ""

  apis = concat(
    ["run.googleapis.com", "storage.googleapis.com", "iam.googleapis.com"],
    var.enable_cdn ? ["compute.googleapis.com"] : [],
    var.admin_token_secret != "" ? ["secretmanager.googleapis.com"] : [],
  )
}

resource "google_project_service" "this" {
  for_each = var.enable_apis ? toset(local.apis) : toset([])

  project            = var.project_id
  service            = each.value
  disable_on_destroy = false
}

# ---------------------------------------------------------------------------------------
# Bucket: private, uniform access, unversioned (dvid-cloud keeps its own versions), with a
# lifecycle rule that sweeps temporary objects and abandoned write markers.

resource "google_storage_bucket" "this" {
  name                        = var.bucket_name
  project                     = var.project_id
  location                    = local.bucket_location
  storage_class               = var.storage_class
  force_destroy               = var.force_destroy
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"

  versioning {
    enabled = false
  }

  soft_delete_policy {
    retention_duration_seconds = var.soft_delete_retention_seconds
  }

  lifecycle_rule {
    condition {
      age            = var.temp_object_expiration_days
      matches_prefix = ["${var.prefix}/.tmp/", "${var.prefix}/meta/inflight/"]
    }

    action {
      type = "Delete"
    }
  }

  lifecycle_rule {
    condition {
      age = var.temp_object_expiration_days
    }

    action {
      type = "AbortIncompleteMultipartUpload"
    }
  }

  depends_on = [google_project_service.this]
}

# ---------------------------------------------------------------------------------------
# Identity: a service account with no project roles; object access on the one bucket.

resource "google_service_account" "this" {
  project      = var.project_id
  account_id   = var.name
  display_name = "dvid-cloud server (${var.name})"
  description  = "Runs the Cloud Run service ${var.name}; object access to gs://${var.bucket_name} only."

  depends_on = [google_project_service.this]
}

resource "google_storage_bucket_iam_member" "server" {
  bucket = google_storage_bucket.this.name
  role   = var.read_only ? "roles/storage.objectViewer" : "roles/storage.objectAdmin"
  member = "serviceAccount:${google_service_account.this.email}"
}

resource "google_secret_manager_secret_iam_member" "admin_token" {
  count = var.admin_token_secret == "" ? 0 : 1

  project   = var.project_id
  secret_id = var.admin_token_secret
  role      = "roles/secretmanager.secretAccessor"
  member    = "serviceAccount:${google_service_account.this.email}"

  depends_on = [google_project_service.this]
}

# ---------------------------------------------------------------------------------------
# The server

resource "google_cloud_run_v2_service" "this" {
  name                = var.name
  project             = var.project_id
  location            = var.region
  description         = "dvid-cloud: DVID's API on gs://${var.bucket_name}/${var.prefix}"
  ingress             = "INGRESS_TRAFFIC_ALL"
  deletion_protection = var.deletion_protection

  template {
    service_account                  = google_service_account.this.email
    timeout                          = "${var.timeout_seconds}s"
    max_instance_request_concurrency = var.concurrency

    scaling {
      min_instance_count = var.min_instances
      max_instance_count = var.max_instances
    }

    containers {
      image = var.image

      ports {
        container_port = local.port
      }

      resources {
        limits = {
          cpu    = var.cpu
          memory = var.memory
        }
        startup_cpu_boost = true
      }

      dynamic "env" {
        for_each = local.environment

        content {
          name  = env.key
          value = env.value
        }
      }

      dynamic "env" {
        for_each = var.admin_token_secret == "" ? [] : [var.admin_token_secret]

        content {
          name = "DVID_CLOUD_ADMIN_TOKEN"

          value_source {
            secret_key_ref {
              secret  = env.value
              version = var.admin_token_secret_version
            }
          }
        }
      }

      # Ready once the server accepts connections.
      startup_probe {
        tcp_socket {
          port = local.port
        }
        period_seconds    = 2
        timeout_seconds   = 2
        failure_threshold = 30
      }
    }
  }

  lifecycle {
    precondition {
      condition     = !var.auth_required || local.has_verifier
      error_message = "auth_required is true but nothing can verify a token: set auth_jwks_url, auth_jwt_key or admin_token_secret (or set auth_required = false for data meant for anyone)."
    }

    precondition {
      condition     = !var.enable_cdn || (var.public && var.cdn_domain != "")
      error_message = "enable_cdn needs cdn_domain (for the managed certificate) and public = true (the load balancer calls the service without Google credentials)."
    }
  }

  depends_on = [
    google_project_service.this,
    google_storage_bucket_iam_member.server,
    google_secret_manager_secret_iam_member.admin_token,
  ]
}

# Anyone may call the service only when public; the server's own bearer-token check
# (auth_required) still applies to every request.
resource "google_cloud_run_v2_service_iam_member" "public" {
  count = var.public ? 1 : 0

  project  = var.project_id
  location = google_cloud_run_v2_service.this.location
  name     = google_cloud_run_v2_service.this.name
  role     = "roles/run.invoker"
  member   = "allUsers"
}

# ---------------------------------------------------------------------------------------
# Optional Cloud CDN: global address -> HTTPS proxy (managed certificate) -> URL map ->
# backend service with CDN -> serverless NEG -> the Cloud Run service. The CDN follows the
# server's Cache-Control headers, so only responses marked public (data of committed,
# immutable versions) are cached.

resource "google_compute_global_address" "cdn" {
  count = local.cdn

  project = var.project_id
  name    = "${var.name}-cdn"

  depends_on = [google_project_service.this]
}

resource "google_compute_region_network_endpoint_group" "cdn" {
  count = local.cdn

  project               = var.project_id
  name                  = "${var.name}-neg"
  region                = var.region
  network_endpoint_type = "SERVERLESS"

  cloud_run {
    service = google_cloud_run_v2_service.this.name
  }
}

resource "google_compute_backend_service" "cdn" {
  count = local.cdn

  project               = var.project_id
  name                  = "${var.name}-backend"
  protocol              = "HTTPS"
  load_balancing_scheme = "EXTERNAL_MANAGED"
  enable_cdn            = true

  cdn_policy {
    cache_mode       = "USE_ORIGIN_HEADERS"
    negative_caching = false

    cache_key_policy {
      include_host         = true
      include_protocol     = true
      include_query_string = true
    }
  }

  backend {
    group = google_compute_region_network_endpoint_group.cdn[0].id
  }

  log_config {
    enable      = true
    sample_rate = 1.0
  }
}

resource "google_compute_url_map" "cdn" {
  count = local.cdn

  project         = var.project_id
  name            = "${var.name}-cdn"
  default_service = google_compute_backend_service.cdn[0].id
}

resource "google_compute_managed_ssl_certificate" "cdn" {
  count = local.cdn

  project = var.project_id
  name    = "${var.name}-cdn"

  managed {
    domains = [var.cdn_domain]
  }

  depends_on = [google_project_service.this]
}

resource "google_compute_target_https_proxy" "cdn" {
  count = local.cdn

  project          = var.project_id
  name             = "${var.name}-cdn"
  url_map          = google_compute_url_map.cdn[0].id
  ssl_certificates = [google_compute_managed_ssl_certificate.cdn[0].id]
}

resource "google_compute_global_forwarding_rule" "cdn" {
  count = local.cdn

  project               = var.project_id
  name                  = "${var.name}-cdn"
  target                = google_compute_target_https_proxy.cdn[0].id
  ip_address            = google_compute_global_address.cdn[0].address
  port_range            = "443"
  load_balancing_scheme = "EXTERNAL_MANAGED"
}
