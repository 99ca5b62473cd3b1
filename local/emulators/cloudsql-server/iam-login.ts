import type { LoginRefusal } from './index';
import type { SqlInstance } from '../google/sqladmin';
import { SQL_LOGIN_SCOPE, type GoogleState } from '../google/state';

/**
 * Cloud SQL IAM database authentication with the token as the password
 * (https://cloud.google.com/sql/docs/postgres/iam-logins#log-in-with-manual): the password must be a live
 * OAuth 2.0 access token with the `sqlservice.login` scope of exactly the IAM principal the database user
 * names (service account email = user + `.gserviceaccount.com`), and that principal must be allowed on the
 * instance (roles/cloudsql.instanceUser; the sandbox keeps one allowlist per instance). Every refusal has
 * the text Cloud SQL gives, `Cloud SQL IAM service account authentication failed for user "…"` (reported in
 * GoogleCloudPlatform/cloud-sql-proxy#1406 and cloud-sql-jdbc-socket-factory#727/#1174), with SQLSTATE
 * 28P01 (invalid_password): Google does not document the code, so the emulator uses PostgreSQL's code
 * for a failed password authentication and never says which check failed (as Cloud SQL: the reason is only
 * in the instance's log).
 */
export function verifyIamLoginToken(
  state: GoogleState,
  instance: SqlInstance,
  user: string,
  token: string,
): LoginRefusal | undefined {
  const refusal: LoginRefusal = {
    code: '28P01',
    message: `Cloud SQL IAM service account authentication failed for user "${user}"`,
  };
  const t = token.length >= 16 && token.length <= 4096 ? state.lookupToken(token) : undefined; // live (unexpired) only
  if (t?.kind === 'federated' && t.principal.startsWith(WORKFORCE_PRINCIPAL)) return verifyWorkforceLogin(instance, user, t);
  if (!t || t.kind !== 'access') return refusal;
  if (!t.scopes.includes(SQL_LOGIN_SCOPE)) return refusal;
  if (t.principal !== `${user}.gserviceaccount.com`) return refusal;
  if (!instance.clients.has(t.principal) || instance.stopped) return refusal;
  return undefined;
}

const WORKFORCE_PRINCIPAL = 'principal://iam.googleapis.com/locations/global/workforcePools/';

/**
 * A workforce identity federation principal logging in as itself (Cloud SQL user type CLOUD_IAM_WORKFORCE_IDENTITY,
 * https://docs.cloud.google.com/sql/docs/postgres/workforce-authentication): the STS token of
 * `principal://…/workforcePools/POOL/subject/SUBJECT` with the `sqlservice.login` scope, the database user named
 * exactly SUBJECT (case-sensitive: strictest), added to the instance as a workforce user, and the principal (or its
 * pool's principalSet) holding roles/cloudsql.instanceUser. The refusal never says which check failed (as for IAM
 * users); its text is the IAM-user one, Google's wording for workforce users is unverified (docs/cloudsql.md).
 */
function verifyWorkforceLogin(
  instance: SqlInstance,
  user: string,
  t: { readonly principal: string; readonly scopes: readonly string[] },
): LoginRefusal | undefined {
  const refusal: LoginRefusal = { code: '28P01', message: `Cloud SQL IAM user authentication failed for user "${user}"` };
  const m = /^principal:\/\/iam\.googleapis\.com\/locations\/global\/workforcePools\/([^/]+)\/subject\/(.+)$/.exec(t.principal);
  if (!m || instance.stopped) return refusal;
  const [, pool, subject] = m as unknown as [string, string, string];
  if (!t.scopes.includes(SQL_LOGIN_SCOPE)) return refusal;
  if (subject !== user) return refusal;
  if (!instance.workforceUsers?.has(user)) return refusal;
  const members = instance.instanceUsers;
  const poolSet = `principalSet://iam.googleapis.com/locations/global/workforcePools/${pool}/*`;
  if (!members || (!members.has(t.principal) && !members.has(poolSet))) return refusal;
  return undefined;
}
