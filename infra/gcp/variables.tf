variable "project_id" {
  description = "Google Cloud project holding the Cloud SQL instance and the service accounts"
  type        = string
}

variable "azure_tenant_id" {
  description = "Entra ID tenant of the broker's managed identity (azd output AZURE_TENANT_ID)"
  type        = string
}

variable "broker_identity_principal_id" {
  description = "Object (principal) id of the broker Function's managed identity (azd output BROKER_IDENTITY_PRINCIPAL_ID); the only Azure identity the pool trusts"
  type        = string
}

variable "subject_token_audience" {
  description = "App ID URI of the Entra app registration the broker's managed identity asks its STS subject token for (app setting GOOGLE_WIF_SUBJECT_TOKEN_AUDIENCE; default form api://<app id>); leave its accessTokenAcceptedVersion at null (v1.0 tokens)"
  type        = string
  validation {
    condition     = can(regex("^(api|https)://", var.subject_token_audience)) && !contains(["api://azureadtokenexchange", "fb60f99c-7a34-4190-8149-302f77469936"], lower(trimsuffix(var.subject_token_audience, "/")))
    error_message = "subject_token_audience must be the App ID URI of a dedicated app registration, not Entra's token exchange audience (api://AzureADTokenExchange)."
  }
}

variable "pool_id" {
  description = "Workload identity pool id"
  type        = string
  default     = "azure-token-broker"
}

variable "provider_id" {
  description = "Workload identity pool provider id"
  type        = string
  default     = "entra"
}

variable "cloudsql_instance" {
  description = "Name of the existing Cloud SQL for PostgreSQL instance (flag cloudsql.iam_authentication=on)"
  type        = string
}

variable "database_identities" {
  description = <<-EOT
    The service accounts the broker's policy names (one per database role), by short id, e.g.
    { "orders-reader" = { display_name = "Orders reader" }, "orders-analyst" = { display_name = "Orders analyst" } }.
    Each becomes an IAM database user; grant it SQL privileges inside PostgreSQL (GRANT SELECT ...).
  EOT
  type = map(object({
    display_name = string
  }))
}

variable "rotated_identities" {
  description = "Short ids (keys of database_identities) whose keys the rotation timer manages (only for tenants that need sa-key mode); empty for fully keyless"
  type        = set(string)
  default     = []
}

variable "sa_key_source_id" {
  description = "sa-key mode only: account id of a dedicated source service account to create (its key, kept in Key Vault as <id>-sa-key and rotated by the timer, impersonates the database identities). Empty (default) for keyless"
  type        = string
  default     = ""
  validation {
    condition     = var.sa_key_source_id == "" || can(regex("^[a-z][a-z0-9-]{4,28}[a-z0-9]$", var.sa_key_source_id))
    error_message = "sa_key_source_id must be empty or a service account id (6-30 chars, a-z 0-9 -)."
  }
}

variable "workforce_org_id" {
  description = "Caller identity mode: the organization id of the workforce pool (empty: no workforce pool)"
  type        = string
  default     = ""
}

variable "workforce_pool_id" {
  description = "Caller identity mode: the workforce pool id"
  type        = string
  default     = "token-broker-callers"
}

variable "workforce_provider_id" {
  description = "Caller identity mode: the workforce pool provider id"
  type        = string
  default     = "entra-obo"
}

variable "workforce_app_client_id" {
  description = "Caller identity mode: client id of the Entra app registration the provider trusts (the on-behalf-of target)"
  type        = string
  default     = ""
}

variable "workforce_session_duration" {
  description = "Caller identity mode: lifetime of the pool's Google tokens (at most the smallest caller-mode maxTtlSeconds)"
  type        = string
  default     = "900s"
}

variable "workforce_database_users" {
  description = "Caller identity mode: Entra object ids of the people who log in as themselves (database users + instanceUser)"
  type        = list(string)
  default     = []
}
