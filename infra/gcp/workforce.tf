# Caller identity mode (docs/cloudsql.md, "Two identity modes"): the people who query as themselves log in to Cloud SQL
# as workforce identity federation principals. A workforce pool is an organization resource; the provider trusts
# Entra ID tokens the broker obtains on the caller's behalf (on-behalf-of) for the app registration
# `workforce_app_client_id`. Created only when `workforce_org_id` is set.
#
# The sandbox's STS emulator reads this file (local/sandbox-google.ts): the provider's issuer, attribute_mapping and
# attribute_condition below are exactly what it enforces.

locals {
  workforce_enabled = var.workforce_org_id != ""
}

resource "google_iam_workforce_pool" "callers" {
  count             = local.workforce_enabled ? 1 : 0
  workforce_pool_id = var.workforce_pool_id
  parent            = "organizations/${var.workforce_org_id}"
  location          = "global"
  display_name      = "Token broker callers"
  # How long the Google access tokens from this pool live (docs: 15 min to 12 h). Keep it at or below the smallest
  # maxTtlSeconds of the policy's caller-mode grants: the broker cannot shorten a Google token it hands out.
  session_duration = var.workforce_session_duration
}

resource "google_iam_workforce_pool_provider" "entra" {
  count             = local.workforce_enabled ? 1 : 0
  workforce_pool_id = google_iam_workforce_pool.callers[0].workforce_pool_id
  location          = "global"
  provider_id       = var.workforce_provider_id
  display_name      = "Entra ID (on-behalf-of)"
  oidc {
    # v2.0 tokens: the workforce app registration has accessTokenAcceptedVersion = 2.
    issuer_uri = "https://login.microsoftonline.com/${var.azure_tenant_id}/v2.0"
    client_id  = var.workforce_app_client_id
    web_sso_config {
      response_type             = "ID_TOKEN"
      assertion_claims_behavior = "ONLY_ID_TOKEN_CLAIMS"
    }
  }
  # google.subject is the caller's Entra object id (immutable, unique in the tenant): the Cloud SQL database user.
  attribute_mapping = {
    "google.subject"      = "assertion.oid"
    "google.display_name" = "assertion.preferred_username"
  }
  attribute_condition = "assertion.tid == '${var.azure_tenant_id}'"
}

# roles/cloudsql.instanceUser (cloudsql.instances.login) for each person who may log in as themself.
resource "google_project_iam_member" "workforce_instance_user" {
  for_each = local.workforce_enabled ? toset(var.workforce_database_users) : toset([])
  project  = var.project_id
  role     = "roles/cloudsql.instanceUser"
  member   = "principal://iam.googleapis.com/locations/global/workforcePools/${var.workforce_pool_id}/subject/${each.value}"
  condition {
    title       = "only-${var.cloudsql_instance}"
    description = "IAM database login as themself on the broker's instance only"
    expression  = local.cloudsql_instance_condition
  }
}

# The database users: one per person, named by their google.subject (the Entra object id).
resource "google_sql_user" "workforce" {
  for_each = local.workforce_enabled ? toset(var.workforce_database_users) : toset([])
  instance = var.cloudsql_instance
  name     = each.value
  type     = "CLOUD_IAM_WORKFORCE_IDENTITY"
}
