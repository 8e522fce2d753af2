# Inputs of the GCP deployment. Every variable has a type and a description; the ones
# without a default (project_id, image, bucket_name) must be given.

variable "project_id" {
  description = "Google Cloud project that holds every resource."
  type        = string
}

variable "region" {
  description = "Region of the Cloud Run service (and of the bucket unless bucket_location says otherwise)."
  type        = string
  default     = "us-central1"
}

variable "name" {
  description = "Name of the Cloud Run service and its service account (6 to 30 lowercase letters, digits, hyphens)."
  type        = string
  default     = "dvid-cloud"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{4,28}[a-z0-9]$", var.name))
    error_message = "The name must have 6 to 30 lowercase letters, digits or hyphens, start with a letter and not end with a hyphen."
  }
}

variable "image" {
  description = "dvid-cloud container image, e.g. us-central1-docker.pkg.dev/<project>/<repo>/dvid-cloud:0.1.0 (built from infra/Dockerfile)."
  type        = string
}

variable "enable_apis" {
  description = "Whether to enable the Google APIs the deployment needs (Cloud Run, Cloud Storage, IAM; Compute Engine with the CDN; Secret Manager with an admin token). They stay enabled after destroy."
  type        = bool
  default     = true
}

variable "bucket_name" {
  description = "Name of the GCS bucket this module creates; it holds every object dvid-cloud stores."
  type        = string

  validation {
    condition     = can(regex("^[a-z0-9][a-z0-9._-]{1,61}[a-z0-9]$", var.bucket_name))
    error_message = "Bucket names have 3 to 63 lowercase letters, digits, dots, underscores or hyphens."
  }
}

variable "bucket_location" {
  description = "Location of the bucket (a region such as us-central1, or a multi-region such as US); empty for the service's region, which keeps reads free of inter-region charges."
  type        = string
  default     = ""
}

variable "storage_class" {
  description = "Default storage class of the bucket's objects."
  type        = string
  default     = "STANDARD"

  validation {
    condition     = contains(["STANDARD", "NEARLINE", "COLDLINE", "ARCHIVE"], var.storage_class)
    error_message = "The storage class must be STANDARD, NEARLINE, COLDLINE or ARCHIVE."
  }
}

variable "prefix" {
  description = "Key prefix of the store inside the bucket (no leading or trailing slash)."
  type        = string
  default     = "dvid"

  validation {
    condition     = can(regex("^[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*$", var.prefix))
    error_message = "The prefix must be non-empty, without leading or trailing slash, of letters, digits, '.', '_', '-' and '/'."
  }
}

variable "force_destroy" {
  description = "Whether `terraform destroy` may delete the bucket while it still holds objects (all data is lost)."
  type        = bool
  default     = false
}

variable "temp_object_expiration_days" {
  description = "Age in days after which temporary objects (<prefix>/.tmp/) and abandoned write markers (<prefix>/meta/inflight/) are deleted by the bucket's lifecycle rules."
  type        = number
  default     = 1

  validation {
    condition     = var.temp_object_expiration_days >= 1 && floor(var.temp_object_expiration_days) == var.temp_object_expiration_days
    error_message = "The expiration must be a whole number of days, at least 1."
  }
}

variable "soft_delete_retention_seconds" {
  description = "How long GCS keeps deleted and overwritten objects recoverable (soft delete), in seconds: 0 turns it off, otherwise 604800 (7 days) to 7776000 (90 days). Off by default, as the server overwrites metadata often and keeps its own versions."
  type        = number
  default     = 0

  validation {
    condition     = var.soft_delete_retention_seconds == 0 || (var.soft_delete_retention_seconds >= 604800 && var.soft_delete_retention_seconds <= 7776000)
    error_message = "Soft delete retention is 0 or between 604800 and 7776000 seconds."
  }
}

variable "cpu" {
  description = "CPUs of each Cloud Run instance (e.g. \"1\", \"2\", \"4\")."
  type        = string
  default     = "2"
}

variable "memory" {
  description = "Memory of each Cloud Run instance (e.g. \"2Gi\"); the server's caches live in it."
  type        = string
  default     = "2Gi"
}

variable "min_instances" {
  description = "Instances kept running when idle (0 scales to zero, at the cost of cold starts)."
  type        = number
  default     = 0
}

variable "max_instances" {
  description = "Most instances Cloud Run may start."
  type        = number
  default     = 10
}

variable "concurrency" {
  description = "Most requests one instance serves at a time."
  type        = number
  default     = 80

  validation {
    condition     = var.concurrency >= 1 && var.concurrency <= 1000
    error_message = "Concurrency must be between 1 and 1000."
  }
}

variable "timeout_seconds" {
  description = "Longest a request may run, in seconds."
  type        = number
  default     = 300

  validation {
    condition     = var.timeout_seconds >= 1 && var.timeout_seconds <= 3600
    error_message = "The timeout must be between 1 and 3600 seconds."
  }
}

variable "public" {
  description = "Whether anyone on the internet may reach the service (Cloud Run invoker for allUsers). Requests still need a bearer token while auth_required is true; without public, callers also need roles/run.invoker and a Google ID token, and the CDN cannot reach the service."
  type        = bool
  default     = true
}

variable "auth_required" {
  description = "Whether requests need a bearer token: a JWT verified with auth_jwks_url or auth_jwt_key (or the admin token). Only help, heartbeat and server facts stay public. On by default; turn off only for data meant for anyone."
  type        = bool
  default     = true
}

variable "auth_jwks_url" {
  description = "URL of the JSON Web Key Set that verifies bearer JWTs (e.g. https://<issuer>/.well-known/jwks.json); empty for none."
  type        = string
  default     = ""

  validation {
    condition     = var.auth_jwks_url == "" || can(regex("^https://", var.auth_jwks_url))
    error_message = "The JWKS URL must use https."
  }
}

variable "auth_jwt_key" {
  description = "Key that verifies bearer JWTs, instead of or besides auth_jwks_url: a PEM public key or certificate (RS*/ES* tokens). An HS* shared secret also works but then sits in the service's plain environment; prefer a public key. Empty for none."
  type        = string
  default     = ""
}

variable "auth_jwt_algorithms" {
  description = "JWT algorithms the server accepts, e.g. [\"RS256\"]; empty for the server's default (RS256, ES256, HS256)."
  type        = list(string)
  default     = []
}

variable "auth_audience" {
  description = "Required `aud` claim of bearer JWTs; empty to not check it."
  type        = string
  default     = ""
}

variable "auth_issuer" {
  description = "Required `iss` claim of bearer JWTs; empty to not check it."
  type        = string
  default     = ""
}

variable "admin_token_secret" {
  description = "Name (secret id) of an existing Secret Manager secret in the project whose value is the admin bearer token; empty for no admin token. Cloud Run reads it at start, so it never enters Terraform's state."
  type        = string
  default     = ""
}

variable "admin_token_secret_version" {
  description = "Version of admin_token_secret to use (\"latest\" or a number)."
  type        = string
  default     = "latest"
}

variable "cors_origins" {
  description = "Browser origins allowed to call the API (CORS), e.g. [\"https://neuroglancer-demo.appspot.com\"]; [\"*\"] for any (tokens travel in the Authorization header, not cookies)."
  type        = list(string)
  default     = ["*"]
}

variable "read_only" {
  description = "Whether the server refuses every write (a read-only mirror); its service account then gets only object read access."
  type        = bool
  default     = false
}

variable "environment" {
  description = "Further DVID_CLOUD_* settings for the server as environment variables (e.g. DVID_CLOUD_NOTE, DVID_CLOUD_CACHE_BYTES); they override the module's own."
  type        = map(string)
  default     = {}
}

variable "enable_cdn" {
  description = "Whether to put an external HTTPS load balancer with Cloud CDN in front of the service. Cloud CDN caches only responses the server marks `Cache-Control: public` (meant for data of committed versions that anyone may read). Needs cdn_domain and public = true."
  type        = bool
  default     = false
}

variable "cdn_domain" {
  description = "Domain served through the CDN (e.g. dvid.example.org), for its Google-managed certificate; its DNS A record must point at the output cdn_ip_address. Used only with enable_cdn."
  type        = string
  default     = ""
}

variable "deletion_protection" {
  description = "Whether Terraform refuses to destroy the Cloud Run service."
  type        = bool
  default     = false
}

variable "labels" {
  description = "Labels added to every resource that takes them."
  type        = map(string)
  default     = {}
}
