import { createHmac, X509Certificate } from 'node:crypto';
import { Agent, request } from 'node:https';
import { startEntra, type EntraEmulator } from '../../../local/emulators/entra';
import { startCosmos, type CosmosEmulator } from '../../../local/emulators/cosmos';
import { createCa } from '../../../local/pki';
import { startSandbox, type Sandbox } from '../../../local/sandbox';
import { SQL_ADMIN_SCOPE } from '../../../local/emulators/google/sqladmin';
import { workerHost } from '../../helpers/loopback';

/**
 * The smaller shapes of issue 25 item 6, each against the real traffic it was taken from
 * (/work/notes/recorded-traffic.md §6): Entra discovery and JWKS, Key Vault contentType, Cosmos x-ms-date window,
 * Cloud SQL connectSettings serverCaCert / dnsName.
 */

let entra: EntraEmulator;
let cosmos: CosmosEmulator;
let agent: Agent;
let sb: Sandbox;
const TID = '72f988bf-0000-4000-8000-00000000c0de';

beforeAll(async () => {
  entra = await startEntra({ tenants: [TID] });
  const ca = createCa('shapes test CA');
  cosmos = await startCosmos({ account: 'acct', ca, containers: [{ database: 'db', id: 'c', partitionKeyPath: '/pk' }] });
  agent = new Agent({ ca: ca.certPem });
  sb = await startSandbox({ cloudSql: { host: workerHost(70) } });
}, 60_000);
afterAll(async () => {
  agent?.destroy();
  await entra?.close();
  await cosmos?.close();
  await sb?.stop();
});

describe('Entra (Azure/azure-sdk-for-js arm-cosmosdb recordings; agentgateway issue #477)', () => {
  test('v2.0 discovery: every recorded field and Cache-Control max-age=86400, private', async () => {
    const res = await fetch(`${entra.url}/${TID}/v2.0/.well-known/openid-configuration`);
    expect(res.headers.get('cache-control')).toBe('max-age=86400, private');
    const doc = (await res.json()) as Record<string, unknown>;
    expect(Object.keys(doc).sort()).toEqual(
      [
        'token_endpoint',
        'token_endpoint_auth_methods_supported',
        'jwks_uri',
        'response_modes_supported',
        'subject_types_supported',
        'id_token_signing_alg_values_supported',
        'response_types_supported',
        'scopes_supported',
        'issuer',
        'request_uri_parameter_supported',
        'userinfo_endpoint',
        'authorization_endpoint',
        'device_authorization_endpoint',
        'http_logout_supported',
        'frontchannel_logout_supported',
        'end_session_endpoint',
        'claims_supported',
        'kerberos_endpoint',
        'tenant_region_scope',
        'cloud_instance_name',
        'cloud_graph_host_name',
        'msgraph_host',
        'rbac_url',
      ].sort(),
    );
    expect(doc).toMatchObject({
      issuer: `https://login.microsoftonline.com/${TID}/v2.0`,
      token_endpoint_auth_methods_supported: ['client_secret_post', 'private_key_jwt', 'client_secret_basic'],
      request_uri_parameter_supported: false,
      cloud_instance_name: 'microsoftonline.com',
      msgraph_host: 'graph.microsoft.com',
    });
    const v1 = await fetch(`${entra.url}/${TID}/.well-known/openid-configuration`);
    expect(v1.headers.get('cache-control')).toBe('max-age=86400, private');
    expect(((await v1.json()) as { issuer: string }).issuer).toBe(`https://sts.windows.net/${TID}/`);
  });

  test('JWKS keys carry x5c (a certificate of the key itself), cloud_instance_name and the templated issuer; no alg', async () => {
    const { keys } = (await (await fetch(`${entra.url}/${TID}/discovery/v2.0/keys`)).json()) as {
      keys: Record<string, unknown>[];
    };
    expect(keys.length).toBeGreaterThan(0);
    for (const k of keys) {
      expect(k).toMatchObject({
        kty: 'RSA',
        use: 'sig',
        e: 'AQAB',
        cloud_instance_name: 'microsoftonline.com',
        issuer: 'https://login.microsoftonline.com/{tenantid}/v2.0',
      });
      expect(k.kid).toBe(k.x5t);
      expect(k.alg).toBeUndefined();
      const x5c = k.x5c as string[];
      expect(x5c).toHaveLength(1);
      const cert = new X509Certificate(Buffer.from(x5c[0]!, 'base64'));
      expect(cert.subject).toBe('CN=accounts.accesscontrol.windows.net');
      expect(cert.publicKey.export({ format: 'jwk' }).n).toBe(k.n);
    }
  });
});

describe('Key Vault contentType ≤ 255 (learn.microsoft.com about-secrets)', () => {
  const put = async (name: string, contentType: string, method = 'PUT', path = '') => {
    const token = await sb.entra.mint({ oid: sb.msi.objectId, aud: 'https://vault.azure.net', version: '1.0' });
    return new Promise<{ status: number; body: { error?: { code: string } } }>((resolve, reject) => {
      const req = request(
        `${sb.keyVault.vaultUrl}/secrets/${name}${path}?api-version=7.4`,
        {
          method,
          ca: sb.keyVault.caPem,
          headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
        },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('end', () =>
            resolve({ status: res.statusCode ?? 0, body: JSON.parse(Buffer.concat(chunks).toString() || '{}') }),
          );
        },
      );
      req.on('error', reject);
      req.end(JSON.stringify(method === 'PUT' ? { value: 'v', contentType } : { contentType }));
    });
  };

  test('255 characters are accepted, 256 refused (400 BadParameter), on create and on update', async () => {
    expect((await put('ct-ok', 'a'.repeat(255))).status).toBe(200);
    const r = await put('ct-long', 'a'.repeat(256));
    expect(r.status).toBe(400);
    expect(r.body.error?.code).toBe('BadParameter');
    expect((await put('ct-ok', 'b'.repeat(256), 'PATCH', '/')).status).toBe(400);
  });
});

describe('Cosmos x-ms-date: the token start, +15 min its expiry (azure-cosmos-dotnet-v2 #512, #506; vscode-cosmosdb #842, #1425)', () => {
  const send = (date: string) => {
    const text = `get\ndbs\ndbs/db\n${date.toLowerCase()}\n\n`;
    const sig = createHmac('sha256', Buffer.from(cosmos.masterKey, 'base64')).update(text).digest('base64');
    const auth = encodeURIComponent(`type=master&ver=1.0&sig=${sig}`);
    return new Promise<{ status: number; body: { code?: string; message?: string } }>((resolve, reject) => {
      const req = request(
        `${cosmos.endpoint.replace(/\/$/, '')}/dbs/db`,
        { method: 'GET', agent, headers: { authorization: auth, 'x-ms-date': date, 'x-ms-version': '2018-12-31' } },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('end', () =>
            resolve({ status: res.statusCode ?? 0, body: JSON.parse(Buffer.concat(chunks).toString() || '{}') }),
          );
        },
      );
      req.on('error', reject);
      req.end();
    });
  };

  test('now and 14 minutes old are accepted', async () => {
    expect((await send(new Date().toUTCString())).status).toBe(200);
    expect((await send(new Date(Date.now() - 14 * 60_000).toUTCString())).status).toBe(200);
  });

  test.each([
    ['16 minutes old', -16],
    ['7 minutes in the future', 7],
    ['1 minute in the future', 1],
  ])('%s: 403 Forbidden naming start, expiry (= start + 15 min) and server time', async (_n, minutes) => {
    const start = new Date(Date.now() + minutes * 60_000);
    const r = await send(start.toUTCString());
    expect(r.status).toBe(403);
    expect(r.body.code).toBe('Forbidden');
    const startS = new Date(Math.floor(start.getTime() / 1000) * 1000);
    expect(r.body.message).toContain(
      `The authorization token is not valid at the current time. Please create another token and retry (token start time: ${startS.toUTCString()}, token expiry time: ${new Date(startS.getTime() + 15 * 60_000).toUTCString()}, current server time: `,
    );
  });

  test('a malformed date is 401 (azure-documentdb-java #115)', async () => {
    const r = await send('yesterday');
    expect(r.status).toBe(401);
    expect(r.body.message).toContain("Date header doesn't conform to the required format.");
  });
});

describe('Cloud SQL connectSettings (cloud-sql-nodejs-connector test/sqladmin-fetcher.ts)', () => {
  test('serverCaCert: full DN as commonName, sha1Fingerprint of the certificate; dnsName …{region}.sql.goog', async () => {
    const sql = sb.sqlAdmin!;
    const token = sql.state.issueToken(
      'access',
      'orders-reader@sandbox-project.iam.gserviceaccount.com',
      [SQL_ADMIN_SCOPE],
      900,
    ).token;
    expect(token).toBeTruthy();
    const res = await fetch(`${sql.url}/v1beta4/projects/sandbox-project/instances/orders-db/connectSettings`, {
      headers: { authorization: `Bearer ${token}` },
    });
    expect(res.status).toBe(200);
    const body = (await res.json()) as { serverCaCert: Record<string, string>; dnsName: string; region: string };
    const cert = new X509Certificate(body.serverCaCert.cert!);
    expect(body.serverCaCert.commonName).toBe(cert.subject.split('\n').join(','));
    expect(body.serverCaCert.commonName).toMatch(/(^|,)CN=/);
    expect(body.serverCaCert.sha1Fingerprint).toBe(cert.fingerprint.replace(/:/g, '').toLowerCase());
    expect(body.serverCaCert.sha1Fingerprint).toMatch(/^[0-9a-f]{40}$/);
    expect(body.dnsName).toMatch(new RegExp(`^[0-9a-f]{12}\\.${body.region}\\.sql\\.goog$`));
  });
});
