output "url" {
  description = "HTTPS URL of the dvid-cloud API (the custom domain when one is set); e.g. <url>/api/help."
  value       = local.has_custom_domain ? "https://${var.domain_name}" : aws_apigatewayv2_api.this.api_endpoint
}

output "api_endpoint" {
  description = "The API Gateway URL, which works with or without a custom domain."
  value       = aws_apigatewayv2_api.this.api_endpoint
}

output "custom_domain_target" {
  description = "Host name the custom domain's DNS record (CNAME or alias) must point at; empty without a custom domain."
  value       = local.has_custom_domain ? aws_apigatewayv2_domain_name.this[0].domain_name_configuration[0].target_domain_name : ""
}

output "store_url" {
  description = "The store the server uses (s3://bucket/prefix), for dvid-cloud's own tools or a TOML [store] section."
  value       = local.store_url
}

output "bucket_name" {
  description = "Name of the S3 bucket."
  value       = aws_s3_bucket.this.bucket
}

output "function_name" {
  description = "Name of the Lambda function running the server."
  value       = aws_lambda_function.this.function_name
}

output "role_arn" {
  description = "ARN of the function's IAM role."
  value       = aws_iam_role.this.arn
}

output "log_group_name" {
  description = "CloudWatch log group of the server's logs."
  value       = aws_cloudwatch_log_group.lambda.name
}
