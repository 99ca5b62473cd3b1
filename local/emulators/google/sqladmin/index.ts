import { startEmulator, type Emulator } from '../../harness';
import { googleHarnessErrorBody } from '../state';
import { createAuth } from './auth';
import { connectionNameOf, createSqlAdminContext, type CertBinding, type SqlAdminOptions, type SqlInstance } from './context';
import { connectRoutes } from './routes-connect';
import { userRoutes } from './routes-users';

export { connectionNameOf, SQL_ADMIN_SCOPE, type CertBinding, type SqlInstance } from './context';

/**
 * Cloud SQL Admin API v1beta4, the two calls the Cloud SQL connectors make:
 * - `GET  /v1beta4/projects/{project}/instances/{instance}/connectSettings`
 * - `POST /v1beta4/projects/{project}/instances/{instance}:generateEphemeralCert` `{public_key, access_token?}`
 *
 * Strict like the real one: the `Authorization: Bearer` token must be a live token of the sandbox's Google
 * emulators (GoogleState) with a Cloud SQL or cloud-platform scope, whose principal holds
 * roles/cloudsql.client on the instance (a per-instance allowlist). With `access_token` in the body
 * (automatic IAM database authentication) that token must be a live `sqlservice.login` token of an allowed
 * principal; the ephemeral certificate is then bound to that principal (by its SHA-256 fingerprint) and
 * expires no later than the token. The Cloud SQL server emulator admits a login only for the bound identity.
 *
 * This file wires the API together; context.ts holds the instances, certificate bindings and scopes, auth.ts the
 * caller's authorization, routes-connect.ts the connector calls, routes-users.ts users.get.
 */

export interface SqlAdminEmulator extends Emulator {
  readonly instances: Map<string, SqlInstance>;
  /** SHA-256 fingerprint (as X509Certificate.fingerprint256) → binding. */
  readonly certBindings: Map<string, CertBinding>;
  /** The binding of a presented client certificate, if it is a live IAM ephemeral certificate. */
  bindingOf(fingerprint256: string): CertBinding | undefined;
}

export async function startSqlAdmin(opts: SqlAdminOptions): Promise<SqlAdminEmulator> {
  const ctx = createSqlAdminContext(opts);
  const { instances, certBindings } = ctx;
  const { authorize } = createAuth(ctx);

  const emu = await startEmulator({
    name: 'sqladmin',
    host: opts.host,
    port: opts.port,
    errorBody: googleHarnessErrorBody(() => 'INTERNAL'),
    routes: [...connectRoutes(ctx, authorize), ...userRoutes(authorize)],
  });
  return Object.assign(emu, {
    instances: new Map([...instances.values()].map((i) => [connectionNameOf(i), i])),
    certBindings,
    bindingOf(fp: string) {
      const b = certBindings.get(fp);
      return b && b.expiresAtMs > Date.now() ? b : undefined;
    },
  });
}
