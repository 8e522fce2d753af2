output "url" {
  description = "HTTPS URL of the dvid-cloud API (the CDN's domain when enable_cdn is set); e.g. <url>/api/help."
  value       = var.enable_cdn ? "https://${var.cdn_domain}" : google_cloud_run_v2_service.this.uri
}

output "service_url" {
  description = "The Cloud Run URL, which works with or without the CDN."
  value       = google_cloud_run_v2_service.this.uri
}

output "cdn_ip_address" {
  description = "IP address the CDN domain's DNS A record must point at; empty without the CDN."
  value       = var.enable_cdn ? google_compute_global_address.cdn[0].address : ""
}

output "store_url" {
  description = "The store the server uses (gs://bucket/prefix), for dvid-cloud's own tools or a TOML [store] section."
  value       = local.store_url
}

output "bucket_name" {
  description = "Name of the GCS bucket."
  value       = google_storage_bucket.this.name
}

output "service_name" {
  description = "Name of the Cloud Run service running the server."
  value       = google_cloud_run_v2_service.this.name
}

output "service_account_email" {
  description = "Email of the server's service account."
  value       = google_service_account.this.email
}
