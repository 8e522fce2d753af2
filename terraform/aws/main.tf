# dvid-cloud on AWS: one S3 bucket holds the store; a Lambda function runs the server from
# its container image; an API Gateway HTTP API gives it an HTTPS endpoint; CloudWatch keeps
# the logs. The function's role may touch only the store's keys in that one bucket.

locals {
  store_url = "s3://${aws_s3_bucket.this.bucket}/${var.prefix}"

  # The server's settings. Empty values are left out, so the server's defaults apply.
  server_env = {
    DVID_CLOUD_STORE_URL           = local.store_url
    DVID_CLOUD_READ_ONLY           = tostring(var.read_only)
    DVID_CLOUD_AUTH_REQUIRED       = tostring(var.auth_required)
    DVID_CLOUD_AUTH_JWKS_URL       = var.auth_jwks_url
    DVID_CLOUD_AUTH_JWT_KEY        = var.auth_jwt_key
    DVID_CLOUD_AUTH_JWT_ALGORITHMS = length(var.auth_jwt_algorithms) == 0 ? "" : jsonencode(var.auth_jwt_algorithms)
    DVID_CLOUD_AUTH_AUDIENCE       = var.auth_audience
    DVID_CLOUD_AUTH_ISSUER         = var.auth_issuer
    DVID_CLOUD_CORS_ORIGINS        = jsonencode(var.cors_origins)
  }

  # The admin token comes from Secrets Manager; it is kept out of the empty-value filter
  # below, which must not branch on a sensitive value.
  admin_env = var.admin_token_secret_arn == "" ? {} : {
    DVID_CLOUD_ADMIN_TOKEN = data.aws_secretsmanager_secret_version.admin_token[0].secret_string
  }

  environment = merge(
    { for key, value in merge(local.server_env, var.environment) : key => value if value != "" },
    local.admin_env,
  )

  has_verifier      = var.auth_jwks_url != "" || var.auth_jwt_key != "" || var.admin_token_secret_arn != ""
  has_custom_domain = var.domain_name != ""
}

data "aws_secretsmanager_secret_version" "admin_token" {
  count     = var.admin_token_secret_arn == "" ? 0 : 1
  secret_id = var.admin_token_secret_arn
}

# ---------------------------------------------------------------------------------------
# Bucket: private, encrypted, unversioned (dvid-cloud keeps its own versions), with
# lifecycle rules that sweep temporary objects and abandoned write markers.

resource "aws_s3_bucket" "this" {
  bucket        = var.bucket_name
  force_destroy = var.force_destroy
}

resource "aws_s3_bucket_versioning" "this" {
  bucket = aws_s3_bucket.this.id

  versioning_configuration {
    # Never enabled: every overwrite of metadata would otherwise keep a paid-for copy.
    status = "Disabled"
  }
}

resource "aws_s3_bucket_public_access_block" "this" {
  bucket = aws_s3_bucket.this.id

  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_ownership_controls" "this" {
  bucket = aws_s3_bucket.this.id

  rule {
    object_ownership = "BucketOwnerEnforced"
  }
}

resource "aws_s3_bucket_server_side_encryption_configuration" "this" {
  bucket = aws_s3_bucket.this.id

  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm = "AES256"
    }
  }
}

resource "aws_s3_bucket_lifecycle_configuration" "this" {
  bucket = aws_s3_bucket.this.id

  rule {
    id     = "expire-temporary-objects"
    status = "Enabled"

    filter {
      prefix = "${var.prefix}/.tmp/"
    }

    expiration {
      days = var.temp_object_expiration_days
    }
  }

  rule {
    id     = "expire-abandoned-inflight-markers"
    status = "Enabled"

    filter {
      prefix = "${var.prefix}/meta/inflight/"
    }

    expiration {
      days = var.temp_object_expiration_days
    }
  }

  rule {
    id     = "abort-incomplete-multipart-uploads"
    status = "Enabled"

    filter {
      prefix = "${var.prefix}/"
    }

    abort_incomplete_multipart_upload {
      days_after_initiation = var.temp_object_expiration_days
    }
  }

  depends_on = [aws_s3_bucket_versioning.this]
}

# ---------------------------------------------------------------------------------------
# IAM: the function's role may list the store's prefix, read, write and delete the store's
# objects, and write its own log group. Nothing else.

data "aws_iam_policy_document" "assume_role" {
  statement {
    sid     = "LambdaAssumesRole"
    effect  = "Allow"
    actions = ["sts:AssumeRole"]

    principals {
      type        = "Service"
      identifiers = ["lambda.amazonaws.com"]
    }
  }
}

data "aws_iam_policy_document" "server" {
  statement {
    sid       = "ListStorePrefix"
    effect    = "Allow"
    actions   = ["s3:ListBucket"]
    resources = [aws_s3_bucket.this.arn]

    # IfExists: S3 checks ListBucket without a prefix when it decides whether a missing key
    # is answered 404 (allowed) or 403; the server needs 404s. Listings it makes always
    # carry a prefix, and that prefix must be inside the store.
    condition {
      test     = "StringLikeIfExists"
      variable = "s3:prefix"
      values   = ["${var.prefix}/*"]
    }
  }

  statement {
    sid       = "ReadStoreObjects"
    effect    = "Allow"
    actions   = ["s3:GetObject"]
    resources = ["${aws_s3_bucket.this.arn}/${var.prefix}/*"]
  }

  dynamic "statement" {
    for_each = var.read_only ? [] : ["write"]

    content {
      sid       = "WriteStoreObjects"
      effect    = "Allow"
      actions   = ["s3:PutObject", "s3:DeleteObject"]
      resources = ["${aws_s3_bucket.this.arn}/${var.prefix}/*"]
    }
  }

  statement {
    sid       = "WriteOwnLogs"
    effect    = "Allow"
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents"]
    resources = ["${aws_cloudwatch_log_group.lambda.arn}:*"]
  }
}

resource "aws_iam_role" "this" {
  name               = var.name
  description        = "dvid-cloud server (Lambda ${var.name}): the store in s3://${var.bucket_name}/${var.prefix} and its own logs"
  assume_role_policy = data.aws_iam_policy_document.assume_role.json
}

resource "aws_iam_role_policy" "server" {
  name   = "dvid-cloud-store"
  role   = aws_iam_role.this.id
  policy = data.aws_iam_policy_document.server.json
}

# ---------------------------------------------------------------------------------------
# Logs

resource "aws_cloudwatch_log_group" "lambda" {
  name              = "/aws/lambda/${var.name}"
  retention_in_days = var.log_retention_days
}

resource "aws_cloudwatch_log_group" "api" {
  name              = "/aws/apigateway/${var.name}"
  retention_in_days = var.log_retention_days
}

# ---------------------------------------------------------------------------------------
# The server

resource "aws_lambda_function" "this" {
  function_name                  = var.name
  description                    = "dvid-cloud: DVID's API on s3://${var.bucket_name}/${var.prefix}"
  role                           = aws_iam_role.this.arn
  package_type                   = "Image"
  image_uri                      = var.image_uri
  architectures                  = [var.architecture]
  memory_size                    = var.memory_size
  timeout                        = var.timeout
  reserved_concurrent_executions = var.reserved_concurrency

  # The image's Lambda runtime calls this Python function (Mangum around the app).
  image_config {
    command = ["app.serverless.handler"]
  }

  environment {
    variables = local.environment
  }

  lifecycle {
    precondition {
      condition     = !var.auth_required || local.has_verifier
      error_message = "auth_required is true but nothing can verify a token: set auth_jwks_url, auth_jwt_key or admin_token_secret_arn (or set auth_required = false for data meant for anyone)."
    }
  }

  depends_on = [
    aws_cloudwatch_log_group.lambda,
    aws_iam_role_policy.server,
  ]
}

# ---------------------------------------------------------------------------------------
# HTTPS endpoint: an API Gateway HTTP API that hands every request to the function.

resource "aws_apigatewayv2_api" "this" {
  name          = var.name
  description   = "dvid-cloud HTTPS endpoint"
  protocol_type = "HTTP"
}

resource "aws_apigatewayv2_integration" "lambda" {
  api_id                 = aws_apigatewayv2_api.this.id
  integration_type       = "AWS_PROXY"
  integration_uri        = aws_lambda_function.this.invoke_arn
  payload_format_version = "2.0"
  timeout_milliseconds   = min(var.timeout, 30) * 1000
}

resource "aws_apigatewayv2_route" "default" {
  api_id    = aws_apigatewayv2_api.this.id
  route_key = "$default"
  target    = "integrations/${aws_apigatewayv2_integration.lambda.id}"
}

resource "aws_apigatewayv2_stage" "default" {
  api_id      = aws_apigatewayv2_api.this.id
  name        = "$default"
  auto_deploy = true

  access_log_settings {
    destination_arn = aws_cloudwatch_log_group.api.arn
    format = jsonencode({
      requestId        = "$context.requestId"
      ip               = "$context.identity.sourceIp"
      requestTime      = "$context.requestTime"
      method           = "$context.httpMethod"
      path             = "$context.path"
      status           = "$context.status"
      responseLength   = "$context.responseLength"
      latencyMs        = "$context.responseLatency"
      integrationError = "$context.integrationErrorMessage"
    })
  }
}

resource "aws_lambda_permission" "api" {
  statement_id  = "AllowInvokeFromHttpApi"
  action        = "lambda:InvokeFunction"
  function_name = aws_lambda_function.this.function_name
  principal     = "apigateway.amazonaws.com"
  source_arn    = "${aws_apigatewayv2_api.this.execution_arn}/*/*"
}

resource "aws_apigatewayv2_domain_name" "this" {
  count       = local.has_custom_domain ? 1 : 0
  domain_name = var.domain_name

  domain_name_configuration {
    certificate_arn = var.certificate_arn
    endpoint_type   = "REGIONAL"
    security_policy = "TLS_1_2"
  }

  lifecycle {
    precondition {
      condition     = var.certificate_arn != ""
      error_message = "domain_name needs certificate_arn (an ACM certificate for it in this region)."
    }
  }
}

resource "aws_apigatewayv2_api_mapping" "this" {
  count       = local.has_custom_domain ? 1 : 0
  api_id      = aws_apigatewayv2_api.this.id
  domain_name = aws_apigatewayv2_domain_name.this[0].id
  stage       = aws_apigatewayv2_stage.default.id
}
