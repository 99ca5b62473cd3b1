import { X509Certificate, createHash, createPublicKey } from 'node:crypto';
import type { EmuRequest, EmuResponse, Route } from '../../harness';
import { googleError } from '../state';
import type { Authorize } from './auth';
import { ACCEPTED_LOGIN_SCOPES, CERT_LIFETIME_SECONDS, connectionNameOf, type SqlAdminContext } from './context';

/** The two calls the Cloud SQL connectors make: connectSettings and generateEphemeralCert. */
export function connectRoutes(ctx: SqlAdminContext, authorize: Authorize): Route[] {
  const { state, certBindings } = ctx;

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

  return [
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
  ];
}
