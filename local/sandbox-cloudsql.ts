import { SANDBOX } from './ids';
import { createCa } from './pki';
import { iamDbUser, startPostgres, type SandboxPostgres } from './postgres';
import { sampleQueriesPath, type SandboxBuild } from './sandbox-build';
import { startCloudSqlServer, type CloudSqlServer } from './emulators/cloudsql-server';
import { verifyIamLoginToken } from './emulators/cloudsql-server/iam-login';
import { connectionNameOf, startSqlAdmin, type SqlAdminEmulator, type SqlInstance } from './emulators/google/sqladmin';
import type { GoogleState } from './emulators/google/state';

/**
 * Cloud SQL / PostgreSQL (the query function): a PostgreSQL (embedded, or an existing server), the SQL Admin API
 * emulator over the sandbox's GoogleState (it checks the tokens STS and IAM Credentials issue) and the instance's
 * server-side endpoints on HOST:3307 (connector) and HOST:5432 (direct logins).
 */

export interface SandboxCloudSql {
  /** Cloud SQL Admin API emulator; `sqlAdmin.state` is the Google state it checks tokens in. */
  readonly sqlAdmin: SqlAdminEmulator & { readonly state: GoogleState };
  /** The Cloud SQL instance's server-side TLS endpoint on port 3307. */
  readonly cloudSql: CloudSqlServer;
  /** The PostgreSQL behind it. */
  readonly postgres: SandboxPostgres;
}

/** The workforce database users of the sandbox instance: two readers, and one person without the IAM role. */
const WORKFORCE_DATABASE_USERS: readonly string[] = [
  SANDBOX.readerObjectId,
  SANDBOX.secondReaderObjectId,
  SANDBOX.workforce.noRoleObjectId,
];

export async function startSandboxCloudSql(
  b: SandboxBuild,
  state: GoogleState,
  opts: { host?: string; postgresUrl?: string },
): Promise<SandboxCloudSql> {
  const g = SANDBOX.google;
  const host = opts.host || '127.0.0.1';
  const pgHandle = await startPostgres({
    database: g.database,
    iamUsers: [
      { user: iamDbUser(g.readerServiceAccount), level: 'reader' },
      { user: iamDbUser(g.analystServiceAccount), level: 'analyst' },
    ],
    // Caller identity mode: the people added as CLOUD_IAM_WORKFORCE_IDENTITY database users (named by their object id).
    workforceUsers: WORKFORCE_DATABASE_USERS,
    port: b.fixedPorts ? SANDBOX.ports.postgres : undefined,
    existingUrl: opts.postgresUrl || process.env.SANDBOX_POSTGRES_URL || undefined,
  });
  b.onStop(() => pgHandle.close());
  const instance = sandboxInstance(host);
  const admin = await startSandboxSqlAdmin(b, state, instance);
  const { connector, direct } = SANDBOX.cloudSqlPorts;
  const server = await startCloudSqlServer({
    connectionName: connectionNameOf(instance),
    ca: instance.ca,
    host,
    port: connector,
    upstream: { host: pgHandle.host, port: pgHandle.port, iamPassword: pgHandle.iamPassword },
    bindingOf: (fp) => admin.bindingOf(fp),
    // Direct logins (plain pg over TLS, the IAM token as the password) on HOST:5432, as on Cloud SQL.
    direct: {
      port: direct,
      verifyLoginToken: (user, token) => verifyIamLoginToken(state, instance, user, token),
      // Workforce database users (caller identity mode) log in with their STS token as the password too.
      isIamUser: (user) => instance.workforceUsers?.has(user) ?? false,
    },
  });
  b.onStop(() => server.close());
  b.env.QUERY_CATALOG_PATH = sampleQueriesPath();
  b.services['Cloud SQL instance (TLS)'] = `${host}:${connector} → PostgreSQL ${pgHandle.host}:${pgHandle.port}/${g.database}`;
  return { sqlAdmin: admin, cloudSql: server, postgres: pgHandle };
}

/** The sandbox's Cloud SQL instance as the SQL Admin API describes it (its server CA made here). */
function sandboxInstance(host: string): SqlInstance {
  const g = SANDBOX.google;
  return {
    project: g.project,
    region: g.region,
    name: g.instance,
    ipAddress: host,
    databaseVersion: 'POSTGRES_16',
    clients: new Set([g.readerServiceAccount, g.analystServiceAccount]),
    workforceUsers: new Set(WORKFORCE_DATABASE_USERS),
    // roles/cloudsql.instanceUser for the two readers only: the third database user has no IAM role (infra/gcp/workforce.tf
    // grants it per person).
    instanceUsers: new Set(
      [SANDBOX.readerObjectId, SANDBOX.secondReaderObjectId].map(
        (oid) => `principal://iam.googleapis.com/locations/global/workforcePools/${SANDBOX.workforce.poolId}/subject/${oid}`,
      ),
    ),
    ca: createCa(`Google Cloud SQL Server CA ${g.instance} (sandbox)`),
    stopped: false,
  };
}

/** The SQL Admin API emulator for `instance`, and the broker pointed at it (CLOUDSQL_ADMIN_ENDPOINT). */
async function startSandboxSqlAdmin(
  b: SandboxBuild,
  state: GoogleState,
  instance: SqlInstance,
): Promise<SqlAdminEmulator & { readonly state: GoogleState }> {
  const g = SANDBOX.google;
  const admin = Object.assign(await startSqlAdmin({ state, instances: [instance], port: b.port(SANDBOX.ports.sqlAdmin) }), {
    state,
  });
  b.onStop(() => admin.close());
  b.env.CLOUDSQL_ADMIN_ENDPOINT = admin.url;
  b.services['Cloud SQL Admin API'] = `${admin.url}/v1beta4/projects/${g.project}/instances/${g.instance}/connectSettings`;
  return admin;
}

/**
 * Without PostgreSQL (`cloudSql` off) the SQL Admin API emulator still answers the token exchange's connectSettings
 * (the instance's addresses and server CA), so a sandbox broker never reaches for the real sqladmin.googleapis.com.
 */
export async function startSandboxSqlAdminOnly(b: SandboxBuild, state: GoogleState): Promise<Pick<SandboxCloudSql, 'sqlAdmin'>> {
  return { sqlAdmin: await startSandboxSqlAdmin(b, state, sandboxInstance('127.0.0.1')) };
}
