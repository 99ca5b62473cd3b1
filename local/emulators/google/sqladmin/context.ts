import type { SandboxCa } from '../../../pki';
import { CLOUD_PLATFORM_SCOPE, SQL_LOGIN_SCOPE, type GoogleState } from '../state';

/**
 * The state of the Cloud SQL Admin emulator (instances, the bindings of IAM ephemeral certificates) and the scopes
 * and limits its routes share.
 */

export const SQL_ADMIN_SCOPE = 'https://www.googleapis.com/auth/sqlservice.admin';
// The Admin API's scopes (its REST reference, and the connector asks sqlservice.admin for it): a login-only token is refused.
export const ACCEPTED_BEARER_SCOPES = [SQL_ADMIN_SCOPE, CLOUD_PLATFORM_SCOPE];
export const ACCEPTED_LOGIN_SCOPES = [SQL_LOGIN_SCOPE, CLOUD_PLATFORM_SCOPE];
export const CERT_LIFETIME_SECONDS = 3600;

export interface SqlInstance {
  readonly project: string;
  readonly region: string;
  readonly name: string;
  /** The IP the connector dials (on port 3307). */
  ipAddress: string;
  readonly databaseVersion: string;
  /** Principals (service account emails) with roles/cloudsql.client on the instance. */
  readonly clients: Set<string>;
  /** The instance's server CA (signs the server certificate and the ephemeral client certificates). */
  readonly ca: SandboxCa;
  /** Instance not runnable (e.g. stopped): the API answers 400 / connect fails. */
  stopped: boolean;
  /**
   * Database users of type CLOUD_IAM_WORKFORCE_IDENTITY (named by the principal's `google.subject`,
   * https://docs.cloud.google.com/sql/docs/postgres/workforce-authentication). Mutable: tests add and remove people.
   */
  readonly workforceUsers?: Set<string>;
  /**
   * IAM members holding roles/cloudsql.instanceUser (`cloudsql.instances.login`) for workforce logins:
   * `principal://iam.googleapis.com/locations/global/workforcePools/POOL/subject/SUBJECT` or
   * `principalSet://iam.googleapis.com/locations/global/workforcePools/POOL/*`.
   */
  readonly instanceUsers?: Set<string>;
}

/** What an ephemeral certificate proves: the IAM principal whose login token requested it. */
export interface CertBinding {
  readonly principal: string;
  readonly connectionName: string;
  readonly expiresAtMs: number;
}

export function connectionNameOf(i: Pick<SqlInstance, 'project' | 'region' | 'name'>): string {
  return `${i.project}:${i.region}:${i.name}`;
}

export interface SqlAdminOptions {
  state: GoogleState;
  instances: readonly SqlInstance[];
  port?: number;
  host?: string;
}

export function createSqlAdminContext(opts: SqlAdminOptions) {
  const { state } = opts;
  const instances = new Map<string, SqlInstance>();
  for (const i of opts.instances) instances.set(`${i.project}/${i.name}`, i);
  const certBindings = new Map<string, CertBinding>();
  return { state, instances, certBindings };
}

export type SqlAdminContext = ReturnType<typeof createSqlAdminContext>;
