import { generateKeyPairSync, X509Certificate } from 'node:crypto';
import { workerHost } from '../../helpers/loopback';
import { connect as tlsConnect } from 'node:tls';
import { Connector, AuthTypes, IpAddressTypes } from '@google-cloud/cloud-sql-connector';
import { OAuth2Client } from 'google-auth-library';
import { Client } from 'pg';
import { SANDBOX } from '../../../local/ids';
import { startSandbox, type Sandbox } from '../../../local/sandbox';
import { CLOUD_PLATFORM_SCOPE, SQL_LOGIN_SCOPE } from '../../../local/emulators/google/state';
import { SQL_ADMIN_SCOPE } from '../../../local/emulators/google/sqladmin';

/** The Cloud SQL emulators are strict where the real service is: tokens, scopes, allowlist, certificates, identity. */

const HOST = workerHost(10);
const G = SANDBOX.google;
const CONNECTION = `${G.project}:${G.region}:${G.instance}`;
jest.setTimeout(60_000);

let sb: Sandbox;
beforeAll(async () => {
  sb = await startSandbox({ cloudSql: { host: HOST } });
});
afterAll(async () => {
  await sb?.stop();
});

/** The connector's token: the Admin API's scope and the login scope (one credential serves both). */
const token = (sa: string, scopes = [SQL_ADMIN_SCOPE, SQL_LOGIN_SCOPE], seconds = 900) =>
  sb.sqlAdmin!.state.issueToken('access', sa, scopes, seconds).token;
const publicKey = () =>
  generateKeyPairSync('rsa', {
    modulusLength: 2048,
    publicKeyEncoding: { type: 'spki', format: 'pem' },
    privateKeyEncoding: { type: 'pkcs1', format: 'pem' },
  });

async function call(path: string, bearer: string | undefined, body?: unknown) {
  const res = await fetch(`${sb.sqlAdmin!.url}/v1beta4/projects/${G.project}/instances/${G.instance}${path}`, {
    method: body === undefined ? 'GET' : 'POST',
    headers: { ...(bearer ? { authorization: `Bearer ${bearer}` } : {}), 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  return { status: res.status, json: (await res.json()) as { error?: { status: string }; [k: string]: unknown } };
}

describe('SQL Admin emulator', () => {
  test('connectSettings: Bearer must be a live token with a Cloud SQL scope of an allowed principal', async () => {
    expect((await call('/connectSettings', undefined)).status).toBe(401);
    const unknown = await call('/connectSettings', 'ya29.c.made-up');
    expect(unknown.status).toBe(401);
    expect(unknown.json.error?.status).toBe('UNAUTHENTICATED');
    expect(
      (await call('/connectSettings', token(G.readerServiceAccount, ['https://www.googleapis.com/auth/devstorage.read_only'])))
        .status,
    ).toBe(403);
    expect((await call('/connectSettings', token('stranger-sa@sandbox-project.iam.gserviceaccount.com'))).status).toBe(403);
    // The Admin API's scopes are sqlservice.admin or cloud-platform: a login-only token (what callers get) is refused.
    const loginOnly = await call('/connectSettings', token(G.readerServiceAccount, [SQL_LOGIN_SCOPE]));
    expect(loginOnly.status).toBe(403);
    expect(loginOnly.json.error?.status).toBe('PERMISSION_DENIED');
    expect((await call('/connectSettings', token(G.readerServiceAccount, [SQL_ADMIN_SCOPE]))).status).toBe(200);
    const expired = sb.sqlAdmin!.state.issueToken('access', G.readerServiceAccount, [SQL_LOGIN_SCOPE], -1).token;
    expect((await call('/connectSettings', expired)).status).toBe(401);
    const ok = await call('/connectSettings', token(G.readerServiceAccount, [CLOUD_PLATFORM_SCOPE]));
    expect(ok.status).toBe(200);
    expect(ok.json).toMatchObject({
      region: G.region,
      ipAddresses: [{ type: 'PRIMARY', ipAddress: HOST }],
      databaseVersion: 'POSTGRES_16',
    });
  });

  test('generateEphemeralCert signs the key with the instance CA, bound to the login token, expiring no later than it', async () => {
    const login = sb.sqlAdmin!.state.issueToken('access', G.readerServiceAccount, [SQL_ADMIN_SCOPE, SQL_LOGIN_SCOPE], 600);
    const { publicKey: pub } = publicKey();
    const r = await call(':generateEphemeralCert', login.token, { public_key: pub, access_token: login.token });
    expect(r.status).toBe(200);
    const cert = new X509Certificate((r.json.ephemeralCert as { cert: string }).cert);
    const ca = new X509Certificate(sb.sqlAdmin!.instances.get(CONNECTION)!.ca.certPem);
    expect(cert.verify(ca.publicKey)).toBe(true);
    expect(Date.parse(cert.validTo)).toBeLessThanOrEqual(login.expiresAtMs);
    expect(sb.sqlAdmin!.bindingOf(cert.fingerprint256)?.principal).toBe(G.readerServiceAccount);
  });

  test('generateEphemeralCert refuses a bad key, a dead login token, a login token without sqlservice.login', async () => {
    const bearer = token(G.readerServiceAccount);
    const { publicKey: pub } = publicKey();
    expect((await call(':generateEphemeralCert', bearer, { public_key: 'nope' })).status).toBe(400);
    expect((await call(':generateEphemeralCert', bearer, { public_key: pub, access_token: 'ya29.c.dead' })).status).toBe(401);
    const wrongScope = token(G.readerServiceAccount, ['https://www.googleapis.com/auth/sqlservice.admin']);
    expect((await call(':generateEphemeralCert', bearer, { public_key: pub, access_token: wrongScope })).status).toBe(403);
  });
});

describe('Cloud SQL server endpoint (port 3307)', () => {
  test('refuses TLS without a client certificate, and TLS below 1.3', async () => {
    const outcome = (opts: object) =>
      new Promise<string>((resolve) => {
        const s = tlsConnect({ host: HOST, port: 3307, rejectUnauthorized: false, ...opts });
        s.once('secureConnect', () => s.write(Buffer.from([0, 0, 0, 8, 4, 210, 22, 47])));
        s.once('data', () => resolve('answered'));
        s.once('error', (e) => resolve(`error:${(e as NodeJS.ErrnoException).code ?? e.message}`));
        s.once('close', () => resolve('closed'));
      });
    expect(await outcome({})).not.toBe('answered');
    expect(await outcome({ maxVersion: 'TLSv1.2' })).toMatch(/^error/);
  });

  async function connectAs(tokenFor: string, dbUser: string): Promise<Client> {
    const auth = new OAuth2Client();
    auth.refreshHandler = async () => {
      const t = sb.sqlAdmin!.state.issueToken('access', tokenFor, [SQL_ADMIN_SCOPE, SQL_LOGIN_SCOPE], 900);
      return { access_token: t.token, expiry_date: t.expiresAtMs };
    };
    const connector = new Connector({ auth, sqlAdminAPIEndpoint: sb.sqlAdmin!.url });
    const opts = await connector.getOptions({
      instanceConnectionName: CONNECTION,
      authType: AuthTypes.IAM,
      ipType: IpAddressTypes.PUBLIC,
    });
    const c = new Client({ ...opts, user: dbUser, database: G.database });
    try {
      await c.connect();
      return c;
    } finally {
      connector.close();
    }
  }

  test('admits the IAM user the ephemeral certificate was issued for, and only that user', async () => {
    const reader = G.readerServiceAccount.replace('.gserviceaccount.com', '');
    const analyst = G.analystServiceAccount.replace('.gserviceaccount.com', '');
    const c = await connectAs(G.readerServiceAccount, reader);
    const who = await c.query('SELECT current_user AS u');
    expect(who.rows[0].u).toBe(reader);
    await c.end();
    const refusedBefore = sb.cloudSql!.stats.refused.identity_mismatch ?? 0;
    await expect(connectAs(G.readerServiceAccount, analyst)).rejects.toMatchObject({ code: '28000' });
    await expect(connectAs(G.readerServiceAccount, 'postgres')).rejects.toMatchObject({ code: '28000' });
    expect(sb.cloudSql!.stats.refused.identity_mismatch).toBe(refusedBefore + 2);
  });
});
