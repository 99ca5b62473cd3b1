/** OAuth scopes and token types of the Google credential path, in one place (no SDK imports). */

/** What the source (federated or sa-key) token carries: enough to call IAM Credentials and the IAM keys API. */
export const CLOUD_PLATFORM_SCOPE = 'https://www.googleapis.com/auth/cloud-platform';
/** The only scope of a Cloud SQL IAM database login token. */
export const SQL_LOGIN_SCOPE = 'https://www.googleapis.com/auth/sqlservice.login';
/**
 * The Cloud SQL Admin API's own scope (connectSettings, generateEphemeralCert): the Admin API accepts
 * sqlservice.admin or cloud-platform, never sqlservice.login (the connector asks exactly this one for it).
 */
export const SQL_ADMIN_SCOPE = 'https://www.googleapis.com/auth/sqlservice.admin';
/** RFC 8693 token type of the managed-identity JWT presented to Google STS. */
export const JWT_SUBJECT_TOKEN_TYPE = 'urn:ietf:params:oauth:token-type:jwt';
