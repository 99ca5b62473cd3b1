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

  # As Google's guide for Azure sets it up (https://cloud.google.com/iam/docs/workload-identity-federation-with-other-clouds):
  # the broker's managed identity asks for a token for a dedicated Entra app registration (its App ID URI, e.g.
  # api://<app id>; app setting GOOGLE_WIF_SUBJECT_TOKEN_AUDIENCE). With the manifest's default
  # accessTokenAcceptedVersion (null) that is a v1.0 token: iss = https://sts.windows.net/<tenant>/ (trailing slash, as the
  # token and the discovery document write it), aud = the App ID URI as requested, sub = oid = the identity's principal
  # id, appid = its client id. Never api://AzureADTokenExchange: its tokens are v2.0 with aud = a GUID, and they are the
  # credential every Entra app trusting this identity accepts. Google STS discovers the keys from
  # https://sts.windows.net/<tenant>/.well-known/openid-configuration.
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

# Log in to Cloud SQL with IAM (instanceUser) and connect through the connector / Admin API (client). Cloud SQL has
# no instance-level IAM policy, so the project-level grants carry an IAM condition that pins them to the one
# instance (Google's documented form for Cloud SQL instance conditions).
locals {
  cloudsql_instance_condition = "resource.name == 'projects/${var.project_id}/instances/${var.cloudsql_instance}' && resource.type == 'sqladmin.googleapis.com/Instance'"
}

resource "google_project_iam_member" "db_instance_user" {
  for_each = google_service_account.db
  project  = var.project_id
  role     = "roles/cloudsql.instanceUser"
  member   = "serviceAccount:${each.value.email}"
  condition {
    title       = "only-${var.cloudsql_instance}"
    description = "IAM database login on the broker's instance only"
    expression  = local.cloudsql_instance_condition
  }
}

resource "google_project_iam_member" "db_client" {
  for_each = google_service_account.db
  project  = var.project_id
  role     = "roles/cloudsql.client"
  member   = "serviceAccount:${each.value.email}"
  condition {
    title       = "only-${var.cloudsql_instance}"
    description = "Connector access (connectSettings, generateEphemeralCert) to the broker's instance only"
    expression  = local.cloudsql_instance_condition
  }
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

# sa-key mode only (GOOGLE_AUTH_MODE=sa-key, tenants that cannot federate): a dedicated source service account whose
# key JSON the broker keeps in Key Vault (GOOGLE_SA_KEY_SECRET) and rotates. It holds no data access itself; it may
# only mint access tokens of the database identities. A plain service-account credential impersonating another
# account needs roles/iam.serviceAccountTokenCreator (workloadIdentityUser applies to federated principals only),
# granted on each database identity, never project-wide. Keyless deployments leave sa_key_source_id empty and get
# none of this.
resource "google_service_account" "sa_key_source" {
  count        = var.sa_key_source_id == "" ? 0 : 1
  account_id   = var.sa_key_source_id
  display_name = "Token broker source credential (sa-key mode)"
  description  = "Source credential of the token broker in sa-key mode; impersonates the database identities only"
}

resource "google_service_account_iam_member" "sa_key_source_token_creator" {
  for_each           = var.sa_key_source_id == "" ? {} : google_service_account.db
  service_account_id = each.value.name
  role               = "roles/iam.serviceAccountTokenCreator"
  member             = "serviceAccount:${google_service_account.sa_key_source[0].email}"
}

# The rotation timer (federated principal) administers the source account's keys, on that account only.
resource "google_service_account_iam_member" "sa_key_source_key_admin" {
  count              = var.sa_key_source_id == "" ? 0 : 1
  service_account_id = google_service_account.sa_key_source[0].name
  role               = "roles/iam.serviceAccountKeyAdmin"
  member             = local.broker_principal
}
