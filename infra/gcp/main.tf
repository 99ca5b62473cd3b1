# The Google side of the token broker, least privilege:
# - a workload identity pool whose OIDC provider trusts exactly one Azure identity (the broker's managed identity);
# - one service account per database role the policy names, each a Cloud SQL IAM database user;
# - the pool principal may impersonate only those accounts (SA-level bindings, never project-level);
# - rotation rights only on the accounts whose keys are rotated.

data "google_project" "this" {
  project_id = var.project_id
}

locals {
  # The principal Google STS issues for the broker's managed-identity token (google.subject = assertion.sub).
  broker_principal = "principal://iam.googleapis.com/projects/${data.google_project.this.number}/locations/global/workloadIdentityPools/${google_iam_workload_identity_pool.broker.workload_identity_pool_id}/subject/${var.broker_identity_principal_id}"
}

resource "google_iam_workload_identity_pool" "broker" {
  workload_identity_pool_id = var.pool_id
  display_name              = "Azure token broker"
  description               = "Trusts the token broker's Azure managed identity only"
}

resource "google_iam_workload_identity_pool_provider" "entra" {
  workload_identity_pool_id          = google_iam_workload_identity_pool.broker.workload_identity_pool_id
  workload_identity_pool_provider_id = var.provider_id
  display_name                       = "Entra ID (managed identity)"

  # Managed-identity tokens are v1 tokens: issuer https://sts.windows.net/<tenant>/, sub = oid of the identity.
  oidc {
    issuer_uri        = "https://sts.windows.net/${var.azure_tenant_id}/"
    allowed_audiences = [var.subject_token_audience]
  }

  attribute_mapping = {
    "google.subject" = "assertion.sub"
    "attribute.tid"  = "assertion.tid"
  }

  # Defence in depth: even a token of another identity in the same tenant is refused at STS.
  attribute_condition = "assertion.tid == '${var.azure_tenant_id}' && assertion.sub == '${var.broker_identity_principal_id}'"
}

resource "google_service_account" "db" {
  for_each     = var.database_identities
  account_id   = each.key
  display_name = each.value.display_name
  description  = "Cloud SQL IAM database identity handed out by the token broker"
}

# The broker's federated principal may mint access tokens of each database identity (generateAccessToken),
# bound on each service account, never project-wide. roles/iam.workloadIdentityUser carries
# iam.serviceAccounts.getAccessToken; roles/iam.serviceAccountTokenCreator is not granted, as it would also
# allow signBlob/signJwt.
resource "google_service_account_iam_member" "broker_wif_user" {
  for_each           = google_service_account.db
  service_account_id = each.value.name
  role               = "roles/iam.workloadIdentityUser"
  member             = local.broker_principal
}

# Log in to Cloud SQL with IAM (instanceUser) and connect through the connector / Admin API (client).
resource "google_project_iam_member" "db_instance_user" {
  for_each = google_service_account.db
  project  = var.project_id
  role     = "roles/cloudsql.instanceUser"
  member   = "serviceAccount:${each.value.email}"
}

resource "google_project_iam_member" "db_client" {
  for_each = google_service_account.db
  project  = var.project_id
  role     = "roles/cloudsql.client"
  member   = "serviceAccount:${each.value.email}"
}

# The IAM database users (PostgreSQL role name: the email without .gserviceaccount.com).
resource "google_sql_user" "db" {
  for_each = google_service_account.db
  instance = var.cloudsql_instance
  name     = trimsuffix(each.value.email, ".gserviceaccount.com")
  type     = "CLOUD_IAM_SERVICE_ACCOUNT"
}

# Key rotation (sa-key tenants only): the broker's federated principal administers keys of just these accounts.
resource "google_service_account_iam_member" "rotation_key_admin" {
  for_each           = var.rotated_identities
  service_account_id = google_service_account.db[each.value].name
  role               = "roles/iam.serviceAccountKeyAdmin"
  member             = local.broker_principal
}
