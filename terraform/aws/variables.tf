# Inputs of the AWS deployment. Every variable has a type and a description; the ones
# without a default (image_uri, bucket_name) must be given.

variable "region" {
  description = "AWS region for every resource (bucket, Lambda function, API, logs)."
  type        = string
  default     = "us-east-1"
}

variable "name" {
  description = "Name of the Lambda function, its IAM role, API and log groups."
  type        = string
  default     = "dvid-cloud"

  validation {
    condition     = can(regex("^[a-zA-Z][a-zA-Z0-9-]{0,47}$", var.name))
    error_message = "The name must start with a letter and have at most 48 letters, digits or hyphens."
  }
}

variable "image_uri" {
  description = "dvid-cloud Lambda image in ECR, in this account and region (e.g. 123456789012.dkr.ecr.us-east-1.amazonaws.com/dvid-cloud:0.1.0), built from terraform/aws/Dockerfile."
  type        = string

  validation {
    condition     = can(regex("^[0-9]{12}\\.dkr\\.ecr\\.[a-z0-9-]+\\.amazonaws\\.com/", var.image_uri))
    error_message = "Lambda runs images from a private ECR repository: <account>.dkr.ecr.<region>.amazonaws.com/<repo>:<tag>."
  }
}

variable "architecture" {
  description = "CPU architecture of the image: x86_64 or arm64."
  type        = string
  default     = "x86_64"

  validation {
    condition     = contains(["x86_64", "arm64"], var.architecture)
    error_message = "The architecture must be x86_64 or arm64."
  }
}

variable "bucket_name" {
  description = "Name of the S3 bucket this module creates; it holds every object dvid-cloud stores."
  type        = string

  validation {
    condition     = can(regex("^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$", var.bucket_name))
    error_message = "S3 bucket names have 3 to 63 lowercase letters, digits, dots or hyphens."
  }
}

variable "prefix" {
  description = "Key prefix of the store inside the bucket (no leading or trailing slash). The server's role may touch only keys under it."
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

variable "memory_size" {
  description = "Memory of the Lambda function in MB (CPU grows with it; 1769 MB is one full vCPU)."
  type        = number
  default     = 2048

  validation {
    condition     = var.memory_size >= 512 && var.memory_size <= 10240
    error_message = "The memory size must be between 512 and 10240 MB."
  }
}

variable "timeout" {
  description = "Longest a request may run, in seconds. API Gateway HTTP APIs end requests after 30 s, so larger values only help direct invocations."
  type        = number
  default     = 30

  validation {
    condition     = var.timeout >= 1 && var.timeout <= 900
    error_message = "The timeout must be between 1 and 900 seconds."
  }
}

variable "reserved_concurrency" {
  description = "Most concurrent instances of the function (each serves one request at a time); -1 leaves it unreserved, bounded by the account's limit."
  type        = number
  default     = -1
}

variable "log_retention_days" {
  description = "Days CloudWatch keeps the function's and the API's logs."
  type        = number
  default     = 30

  validation {
    condition     = contains([1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653], var.log_retention_days)
    error_message = "CloudWatch accepts 1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288 or 3653 days."
  }
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

variable "admin_token_secret_arn" {
  description = "ARN of an existing Secrets Manager secret whose string is the admin bearer token; empty for no admin token. Terraform reads it at apply time and passes it to the function encrypted at rest."
  type        = string
  default     = ""

  validation {
    condition     = var.admin_token_secret_arn == "" || can(regex("^arn:aws[a-z-]*:secretsmanager:", var.admin_token_secret_arn))
    error_message = "The admin token secret must be a Secrets Manager ARN."
  }
}

variable "cors_origins" {
  description = "Browser origins allowed to call the API (CORS), e.g. [\"https://neuroglancer-demo.appspot.com\"]; [\"*\"] for any (tokens travel in the Authorization header, not cookies)."
  type        = list(string)
  default     = ["*"]
}

variable "read_only" {
  description = "Whether the server refuses every write (a read-only mirror); its role then gets no write or delete permission either."
  type        = bool
  default     = false
}

variable "environment" {
  description = "Further DVID_CLOUD_* settings for the server as environment variables (e.g. DVID_CLOUD_NOTE, DVID_CLOUD_CACHE_BYTES); they override the module's own."
  type        = map(string)
  default     = {}
}

variable "domain_name" {
  description = "Custom domain for the API (e.g. dvid.example.org); empty to use the API Gateway URL. Needs certificate_arn, and a DNS record pointing at the output custom_domain_target."
  type        = string
  default     = ""
}

variable "certificate_arn" {
  description = "ARN of an ACM certificate for domain_name, in the same region; empty without a custom domain."
  type        = string
  default     = ""
}

variable "tags" {
  description = "Tags added to every resource."
  type        = map(string)
  default     = {}
}
