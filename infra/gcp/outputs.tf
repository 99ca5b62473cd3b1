output "wif_audience" {
  description = "App setting GOOGLE_WIF_AUDIENCE (azd env set GOOGLE_WIF_AUDIENCE ...), used by the token exchange and by rotation"
  value       = "//iam.googleapis.com/${google_iam_workload_identity_pool_provider.entra.name}"
}

output "service_accounts" {
  description = "Service accounts to name in the broker policy (grants.cloudsql[].serviceAccount)"
  value       = { for k, sa in google_service_account.db : k => sa.email }
}

output "database_users" {
  description = "IAM database users; GRANT them privileges inside PostgreSQL"
  value       = { for k, u in google_sql_user.db : k => u.name }
}

output "rotation_managed_keys" {
  description = "App setting ROTATION_MANAGED_KEYS (SA_EMAIL=KEY_VAULT_SECRET_NAME pairs): the rotated database identities and, in sa-key mode, the source account"
  value = join(",", concat(
    [for k in var.rotated_identities : "${google_service_account.db[k].email}=${k}-sa-key"],
    [for sa in google_service_account.sa_key_source : "${sa.email}=${var.sa_key_source_id}-sa-key"],
  ))
}

output "google_sa_key_secret" {
  description = "sa-key mode: app setting GOOGLE_SA_KEY_SECRET (Bicep parameter googleSaKeySecret); empty when keyless"
  value       = var.sa_key_source_id == "" ? "" : "${var.sa_key_source_id}-sa-key"
}

output "workforce_audience" {
  description = "Caller identity mode: the STS audience of the workforce pool provider (app setting CALLER_WORKFORCE_AUDIENCE)"
  value       = local.workforce_enabled ? "//iam.googleapis.com/locations/global/workforcePools/${var.workforce_pool_id}/providers/${var.workforce_provider_id}" : ""
}
