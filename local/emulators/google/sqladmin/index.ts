import { X509Certificate, createHash, createPublicKey } from 'node:crypto';
import type { SandboxCa } from '../../../pki';
import { startEmulator, type Emulator, type EmuRequest, type EmuResponse } from '../../harness';
import { checkGoogleBearer, isEmuResponse } from '../bearer';
import { CLOUD_PLATFORM_SCOPE, SQL_LOGIN_SCOPE, googleError, googleHarnessErrorBody, type GoogleState } from '../state';

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
 */

export const SQL_ADMIN_SCOPE = 'https://www.googleapis.com/auth/sqlservice.admin';
// The Admin API's scopes (its REST reference, and the connector asks sqlservice.admin for it): a login-only token is refused.
const ACCEPTED_BEARER_SCOPES = [SQL_ADMIN_SCOPE, CLOUD_PLATFORM_SCOPE];
const ACCEPTED_LOGIN_SCOPES = [SQL_LOGIN_SCOPE, CLOUD_PLATFORM_SCOPE];
const CERT_LIFETIME_SECONDS = 3600;

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

export interface SqlAdminEmulator extends Emulator {
  readonly instances: Map<string, SqlInstance>;
  /** SHA-256 fingerprint (as X509Certificate.fingerprint256) → binding. */
  readonly certBindings: Map<string, CertBinding>;
  /** The binding of a presented client certificate, if it is a live IAM ephemeral certificate. */
  bindingOf(fingerprint256: string): CertBinding | undefined;
}

export function connectionNameOf(i: Pick<SqlInstance, 'project' | 'region' | 'name'>): string {
  return `${i.project}:${i.region}:${i.name}`;
}

export async function startSqlAdmin(opts: {
  state: GoogleState;
  instances: readonly SqlInstance[];
  port?: number;
  host?: string;
}): Promise<SqlAdminEmulator> {
  const { state } = opts;
  const instances = new Map<string, SqlInstance>();
  for (const i of opts.instances) instances.set(`${i.project}/${i.name}`, i);
  const certBindings = new Map<string, CertBinding>();

  /** Authenticate the caller and find the instance; an EmuResponse on failure. */
  const authorize = (req: EmuRequest): { instance: SqlInstance; principal: string } | EmuResponse => {
    const t = checkGoogleBearer(req, state, {
      scopes: ACCEPTED_BEARER_SCOPES,
      accessTokensOnly: true,
      missingMessage: 'Request is missing required authentication credential. Expected OAuth 2 access token.',
      invalidMessage: 'Request had invalid authentication credentials. Expected OAuth 2 access token.',
    });
    if (isEmuResponse(t)) return t;
    const instance = instances.get(`${req.params.project}/${req.params.instance}`);
    // The real API answers 403 for instances the caller cannot see, not 404.
    if (!instance || !instance.clients.has(t.principal)) {
      // Legacy v1 shape: errors[] reason notAuthorized, no `status` (GoogleCloudPlatform/cloud-sql-proxy #79, #115).
      const message = 'The client is not authorized to make this request.';
      return {
        status: 403,
        body: { error: { code: 403, message, errors: [{ domain: 'global', message, reason: 'notAuthorized' }] } },
      };
    }
    if (instance.stopped) return googleError(400, 'FAILED_PRECONDITION', 'Invalid request: Instance is not running.');
    return { instance, principal: t.principal };
  };

  const connectSettings = (req: EmuRequest): EmuResponse => {
    const a = authorize(req);
    if (!('instance' in a)) return a;
    const i = a.instance;
    const ca = new X509Certificate(i.ca.certPem);
    return {
      status: 200,
      body: {
        kind: 'sql#connectSettings',
        serverCaCert: {
          kind: 'sql#sslCert',
          certSerialNumber: ca.serialNumber,
          cert: i.ca.certPem,
          // A full DN, its RDNs joined by commas (a comma in a value escaped), and the SHA-1 fingerprint as lower-case
          // hex, as the Node connector's fixture has them (GoogleCloudPlatform/cloud-sql-nodejs-connector test/sqladmin-fetcher.ts).
          commonName: ca.subject
            .split('\n')
            .map((rdn) => rdn.replace(/,/g, '\\,'))
            .join(','),
          sha1Fingerprint: ca.fingerprint.replace(/:/g, '').toLowerCase(),
          createTime: new Date(ca.validFrom).toISOString(),
          expirationTime: new Date(ca.validTo).toISOString(),
          instance: i.name,
        },
        ipAddresses: [{ type: 'PRIMARY', ipAddress: i.ipAddress }],
        region: i.region,
        // The instance's DNS name (`….{region}.sql.goog` in the connector's fixture); the sandbox instance has none
        // in DNS, so clients dial the IP address.
        dnsName: `${createHash('sha256').update(connectionNameOf(i)).digest('hex').slice(0, 12)}.${i.region}.sql.goog`,
        databaseVersion: i.databaseVersion,
        backendType: 'SECOND_GEN',
        pscEnabled: false,
        // Legacy per-instance CA: the connector checks the server certificate's CN = PROJECT:INSTANCE.
        serverCaMode: 'GOOGLE_MANAGED_INTERNAL_CA',
      },
    };
  };

  const generateEphemeralCert = (req: EmuRequest): EmuResponse => {
    const a = authorize(req);
    if (!('instance' in a)) return a;
    const body = req.json();
    if (!body || typeof body !== 'object') return googleError(400, 'INVALID_ARGUMENT', 'Invalid JSON payload received.');
    const { public_key: publicKey, access_token: accessToken } = body as { public_key?: unknown; access_token?: unknown };
    if (typeof publicKey !== 'string' || publicKey.length === 0) {
      return googleError(400, 'INVALID_ARGUMENT', 'Invalid request: public key is required.');
    }
    try {
      const k = createPublicKey(publicKey);
      if (k.asymmetricKeyType !== 'rsa') throw new Error('not RSA');
    } catch {
      return googleError(400, 'INVALID_ARGUMENT', 'Invalid request: the public key is not a valid RSA public key in PEM format.');
    }
    let lifetime = CERT_LIFETIME_SECONDS;
    let principal: string | undefined;
    let tokenExpiresAtMs: number | undefined;
    if (accessToken !== undefined) {
      const login = typeof accessToken === 'string' ? state.lookupToken(accessToken) : undefined;
      if (!login || login.kind !== 'access') {
        return googleError(
          401,
          'UNAUTHENTICATED',
          'Invalid request: the access token for IAM database authentication is invalid or expired.',
        );
      }
      if (!login.scopes.some((s) => ACCEPTED_LOGIN_SCOPES.includes(s))) {
        return googleError(403, 'PERMISSION_DENIED', 'Invalid request: the access token lacks the sqlservice.login scope.');
      }
      if (!a.instance.clients.has(login.principal)) {
        return googleError(403, 'PERMISSION_DENIED', 'The principal of the access token is not authorized on this instance.');
      }
      principal = login.principal;
      tokenExpiresAtMs = login.expiresAtMs;
      lifetime = Math.min(lifetime, Math.floor((login.expiresAtMs - state.now()) / 1000));
      if (lifetime < 1) return googleError(401, 'UNAUTHENTICATED', 'Invalid request: the access token expired.');
    }
    const cert = a.instance.ca.signPublicKey(publicKey, { commonName: principal ?? a.principal, validSeconds: lifetime });
    const x = new X509Certificate(cert);
    if (principal) {
      certBindings.set(x.fingerprint256, {
        principal,
        connectionName: connectionNameOf(a.instance),
        expiresAtMs: Math.min(tokenExpiresAtMs ?? Infinity, Date.parse(x.validTo)),
      });
    }
    return {
      status: 200,
      body: {
        ephemeralCert: {
          kind: 'sql#sslCert',
          certSerialNumber: x.serialNumber,
          cert,
          commonName: principal ?? a.principal,
          createTime: new Date(x.validFrom).toISOString(),
          expirationTime: new Date(x.validTo).toISOString(),
          instance: a.instance.name,
        },
      },
    };
  };

  /** users.get (https://cloud.google.com/sql/docs/postgres/admin-api/rest/v1beta4/users/get): a workforce user, or 404. */
  const getUser = (req: EmuRequest): EmuResponse => {
    const a = authorize(req);
    if (!('instance' in a)) return a;
    const name = decodeURIComponent(req.params.name ?? '');
    if (!a.instance.workforceUsers?.has(name)) return googleError(404, 'NOT_FOUND', 'The Cloud SQL user does not exist.');
    return {
      status: 200,
      body: {
        kind: 'sql#user',
        name,
        instance: a.instance.name,
        project: a.instance.project,
        type: 'CLOUD_IAM_WORKFORCE_IDENTITY',
      },
    };
  };

  const emu = await startEmulator({
    name: 'sqladmin',
    host: opts.host,
    port: opts.port,
    errorBody: googleHarnessErrorBody(() => 'INTERNAL'),
    routes: [
      {
        method: 'GET',
        name: 'sqladmin.connectSettings',
        path: /^\/(?:sql\/)?v1beta4\/projects\/(?<project>[^/]+)\/instances\/(?<instance>[^/:]+)\/connectSettings$/,
        handle: connectSettings,
      },
      {
        method: 'POST',
        name: 'sqladmin.generateEphemeralCert',
        path: /^\/(?:sql\/)?v1beta4\/projects\/(?<project>[^/]+)\/instances\/(?<instance>[^/:]+):generateEphemeralCert$/,
        handle: generateEphemeralCert,
      },
      {
        method: 'GET',
        name: 'sqladmin.users.get',
        path: /^\/(?:sql\/)?v1beta4\/projects\/(?<project>[^/]+)\/instances\/(?<instance>[^/:]+)\/users\/(?<name>[^/]+)$/,
        handle: getUser,
      },
    ],
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
