import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createClientCa, loadClientCa, selfSignedClient, type ClientCert } from '../../../local/pki';
import { CLIENT_CERT_TOKEN_TYPE, MAX_CERT_HEADER_CHARS } from '../../../shared/auth/client-certificate';
import { cosmosUserId } from '../../../shared/cosmos/ids';
import { captureLogs, invoke, type Result } from '../../helpers/invoke';
import { CLOUDSQL_RESOURCE, SANDBOX, startFixture, TOKEN_EXCHANGE, type Fixture } from '../../helpers/foundation';
import { TestApp } from '../../helpers/app';

const testApp = new TestApp();
const tokenHandler = testApp.handler('token');
const explainHandler = testApp.handler('explain');
const queryHandler = testApp.handler('query');

/**
 * Issue #29: callers authenticated by a client certificate at APIM. The gateway (its managed-identity token, on
 * BROKER_CERT_GATEWAY_OIDS) forwards the certificate in X-Client-Certificate; the broker verifies it again (chain to
 * BROKER_CLIENT_CA_BUNDLE, validity, clientAuth EKU, not self-signed, not revoked) and the policy decides.
 */

const OTHER_GATEWAY = '9a7e0000-0000-4000-8000-0000000a9142';
const COSMOS_PROFILES = `cosmos://${SANDBOX.cosmos.account}/${SANDBOX.cosmos.database}/${SANDBOX.cosmos.container}`;

let fx: Fixture;
let dir: string;
let gateway: string;
const logs = captureLogs();
const certs: Record<string, ClientCert> = {};

beforeAll(async () => {
  fx = await startFixture({ BROKER_ALLOWED_CLIENT_OIDS: `${SANDBOX.gatewayObjectId},${OTHER_GATEWAY}` });
  const ca = fx.sandbox.clientCa;
  const day = 86400_000;
  certs.partner = ca.issueClient({
    commonName: 'partner-job',
    organization: 'Sandbox Partner',
    uris: ['spiffe://sandbox/partner-job'],
  });
  certs.byThumbprint = ca.issueClient({ commonName: 'device-17', dnsNames: ['device-17.sandbox.example'] });
  certs.unknownSubject = ca.issueClient({ commonName: 'nobody', organization: 'Elsewhere' });
  certs.revokedByThumbprint = ca.issueClient({ commonName: 'partner-job', organization: 'Sandbox Partner' });
  certs.revokedBySerial = ca.issueClient({ commonName: 'partner-job', organization: 'Sandbox Partner' });
  certs.expired = ca.issueClient({
    commonName: 'partner-job',
    organization: 'Sandbox Partner',
    notBefore: new Date(Date.now() - 30 * day),
    notAfter: new Date(Date.now() - day),
  });
  certs.notYetValid = ca.issueClient({
    commonName: 'partner-job',
    organization: 'Sandbox Partner',
    notBefore: new Date(Date.now() + day),
    notAfter: new Date(Date.now() + 30 * day),
  });
  certs.noClientAuth = ca.issueClient({ commonName: 'partner-job', organization: 'Sandbox Partner', clientAuth: false });
  certs.otherCa = createClientCa('Someone Else CA', 'elsewhere').issueClient({
    commonName: 'partner-job',
    organization: 'Sandbox Partner',
  });
  // Same CA name, another key: the issuer name matches a trusted CA, the signature does not verify.
  certs.brokenChain = createClientCa().issueClient({ commonName: 'partner-job', organization: 'Sandbox Partner' });
  certs.selfSigned = selfSignedClient({ commonName: 'partner-job', organization: 'Sandbox Partner' });

  const policy = JSON.parse(readFileSync(join(__dirname, '..', '..', '..', 'local', 'sample-policy.json'), 'utf8')) as {
    rules: unknown[];
    denyCertificates?: unknown[];
  };
  policy.rules = policy.rules.filter((r) => (r as { id: string }).id !== 'sandbox-partner-certificates');
  policy.rules.push(
    {
      id: 'partner-by-subject',
      subject: { certificate: { issuer: ca.subjectDn, subjects: ['O=Sandbox Partner, CN=partner-job'] } },
      grants: {
        cloudsql: [
          {
            instance: `${SANDBOX.google.project}:${SANDBOX.google.region}:${SANDBOX.google.instance}`,
            databases: [SANDBOX.google.database],
            serviceAccount: SANDBOX.google.readerServiceAccount,
            maxTtlSeconds: 600,
          },
        ],
        cosmos: [
          {
            account: SANDBOX.cosmos.account,
            database: SANDBOX.cosmos.database,
            container: SANDBOX.cosmos.container,
            mode: 'read',
            partitionKey: { type: 'claim', claim: 'oid' },
            maxTtlSeconds: 600,
          },
        ],
      },
    },
    {
      id: 'device-by-thumbprint',
      subject: { certificate: { issuerThumbprint: ca.thumbprint, thumbprints: [certs.byThumbprint.thumbprint] } },
      grants: { queries: ['order-count'] },
    },
  );
  policy.denyCertificates = [
    { id: 'lost-laptop', thumbprint: certs.revokedByThumbprint.thumbprint, reason: 'lost' },
    { id: 'leaked-key', serialNumber: certs.revokedBySerial.serialNumber, issuerThumbprint: ca.thumbprint },
  ];
  dir = mkdtempSync(join(tmpdir(), 'broker-mtls-'));
  writeFileSync(join(dir, 'policy.json'), JSON.stringify(policy));
  process.env.BROKER_POLICY_PATH = join(dir, 'policy.json');
  gateway = await fx.gateway();
}, 60_000);

afterAll(async () => {
  logs.restore();
  await fx.stop();
  rmSync(dir, { recursive: true, force: true });
});

function exchange(
  header: string | undefined,
  o: { gatewayToken?: string | null; subjectToken?: string; resource?: string; type?: string } = {},
): Promise<Result> {
  const headers: Record<string, string> = {};
  if (o.gatewayToken !== null) headers.authorization = `Bearer ${o.gatewayToken ?? gateway}`;
  if (header !== undefined) headers['x-client-certificate'] = header;
  return invoke(tokenHandler, {
    headers,
    form: {
      grant_type: TOKEN_EXCHANGE,
      subject_token_type: o.type ?? CLIENT_CERT_TOKEN_TYPE,
      subject_token: o.subjectToken ?? 'none',
      resource: o.resource ?? CLOUDSQL_RESOURCE,
    },
  });
}

const withCert = (c: ClientCert, o: Parameters<typeof exchange>[1] = {}) =>
  exchange(c.base64, { subjectToken: c.thumbprint, ...o });

const audits = () => logs.records.filter((r) => r.event === 'audit');

describe('a verified client certificate gets the credential its rule grants', () => {
  test('granted by issuer + subject DN: a Cloud SQL token, audited as a certificate principal', async () => {
    const before = audits().length;
    const res = await withCert(certs.partner!);
    expect(res.status).toBe(200);
    expect(res.json).toMatchObject({ token_type: 'Bearer', service_account: SANDBOX.google.readerServiceAccount });
    expect(res.json.expires_in).toBeLessThanOrEqual(600);
    const line = audits().slice(before).at(-1)!;
    expect(line).toMatchObject({
      decision: 'grant',
      ruleId: 'partner-by-subject',
      subject: {
        kind: 'certificate',
        certificate: {
          thumbprint: certs.partner!.thumbprint,
          subject: 'O=Sandbox Partner, CN=partner-job',
          issuer: fx.sandbox.clientCa.subjectDn,
          serialNumber: certs.partner!.serialNumber,
        },
      },
      client: { objectId: SANDBOX.gatewayObjectId },
    });
  });

  test('a Cosmos resource token partitioned by the certificate; the Cosmos user names its thumbprint', async () => {
    const res = await withCert(certs.partner!, { resource: COSMOS_PROFILES });
    expect(res.status).toBe(200);
    expect(res.json.partition_key ?? res.json.partitionKey).toBe(certs.partner!.thumbprint);
    const userId = cosmosUserId(
      { tenantId: 'certificate', objectId: certs.partner!.thumbprint },
      {
        database: SANDBOX.cosmos.database,
        container: SANDBOX.cosmos.container,
        mode: 'read',
        partitionKey: certs.partner!.thumbprint,
      },
    );
    expect(userId).toContain(certs.partner!.thumbprint);
    expect(userId.length).toBeLessThanOrEqual(255);
    expect(JSON.stringify(logs.records)).toContain(certs.partner!.thumbprint);
  });

  test('the thumbprint may be written with colons and in upper case', async () => {
    const colons = certs.partner!.thumbprint.toUpperCase().match(/../g)!.join(':');
    expect((await withCert(certs.partner!, { subjectToken: colons })).status).toBe(200);
  });

  test('explain names the certificate and the rule (issuer thumbprint + certificate thumbprint)', async () => {
    const res = await invoke(explainHandler, {
      headers: { authorization: `Bearer ${gateway}`, 'x-client-certificate': certs.byThumbprint!.base64 },
      form: {
        subject_token_type: CLIENT_CERT_TOKEN_TYPE,
        subject_token: certs.byThumbprint!.thumbprint,
        resource: 'query://order-count',
      },
    });
    expect(res.status).toBe(200);
    expect(res.json).toMatchObject({
      decision: 'grant',
      ruleId: 'device-by-thumbprint',
      subject: {
        kind: 'certificate',
        certificate: {
          thumbprint: certs.byThumbprint!.thumbprint,
          subject: 'CN=device-17',
          issuerThumbprint: fx.sandbox.clientCa.thumbprint,
          dnsNames: ['device-17.sandbox.example'],
        },
      },
    });
    // Entra rules never match a certificate, and say why.
    const trace = res.json.trace as { ruleId: string; why: string }[];
    expect(trace.find((t) => t.ruleId === 'orders-readers')?.why).toMatch(/Entra ID callers/);
  });

  test('a verified certificate no rule names is not granted (403), audited', async () => {
    const res = await withCert(certs.unknownSubject!);
    expect(res.status).toBe(403);
    expect(res.json.error).toBe('access_denied');
    expect(audits().at(-1)).toMatchObject({ decision: 'deny', reason: 'not_granted', subject: { kind: 'certificate' } });
  });
});

describe('every failed check is refused, naming the check', () => {
  test.each([
    ['otherCa', 'chain', 'untrusted_issuer'],
    ['brokenChain', 'chain', 'signature'],
    ['selfSigned', 'self_signed', 'self_signed'],
    ['expired', 'validity', 'expired'],
    ['notYetValid', 'validity', 'not_yet_valid'],
    ['noClientAuth', 'key_usage', 'no_client_auth'],
    ['revokedByThumbprint', 'revocation', 'denied_thumbprint'],
    ['revokedBySerial', 'revocation', 'denied_serial'],
  ])('%s: 401 certificate_invalid, check %s (%s)', async (name, check, reason) => {
    const res = await withCert(certs[name]!);
    expect(res.status).toBe(401);
    expect(res.json.error).toBe('invalid_grant');
    expect(res.json).toMatchObject({ reason: 'certificate_invalid', check, failure: reason });
    expect(String(res.json.error_description)).toContain(`the ${check} check`);
    // Audited: who vouched, and what was presented (by thumbprint), with the failed check.
    expect(audits().at(-1)).toMatchObject({
      decision: 'deny',
      reason: 'certificate_invalid',
      client: { objectId: SANDBOX.gatewayObjectId },
      check,
      failure: reason,
      certThumbprint: certs[name]!.thumbprint,
    });
  });
});

describe('only an authenticated gateway allowed to vouch may send a certificate', () => {
  test('without the gateway token: 401 token_missing (the client)', async () => {
    const res = await withCert(certs.partner!, { gatewayToken: null });
    expect(res.status).toBe(401);
    expect(res.json.error).toBe('invalid_client');
  });

  test('a caller token in Authorization instead of the gateway token: refused', async () => {
    const res = await withCert(certs.partner!, { gatewayToken: await fx.caller() });
    expect([401, 403]).toContain(res.status);
  });

  test('an allowed client that is not on BROKER_CERT_GATEWAY_OIDS: 403 client_not_allowed', async () => {
    const other = await fx.gateway({ oid: OTHER_GATEWAY });
    const res = await withCert(certs.partner!, { gatewayToken: other });
    expect(res.status).toBe(403);
    expect(res.json).toMatchObject({
      error: 'unauthorized_client',
      reason: 'client_not_allowed',
      failure: 'not_a_certificate_gateway',
    });
  });

  test('with BROKER_CERT_GATEWAY_OIDS unset certificate callers are refused (403)', async () => {
    const saved = process.env.BROKER_CERT_GATEWAY_OIDS;
    delete process.env.BROKER_CERT_GATEWAY_OIDS;
    try {
      expect((await withCert(certs.partner!)).status).toBe(403);
    } finally {
      process.env.BROKER_CERT_GATEWAY_OIDS = saved;
    }
  });
});

describe('hostile headers are 400, never 500', () => {
  const b64 = () => certs.partner!.base64;
  test.each([
    ['not base64', () => '!!!not-base64!!!', 'base64'],
    ['base64url alphabet', () => b64().replace(/\+/g, '-').replace(/\//g, '_') + '-_', 'base64'],
    ['bad padding', () => b64().slice(0, -1), 'base64'],
    ['base64 of garbage', () => Buffer.from('hello world, not a certificate').toString('base64'), 'der'],
    ['base64 of a PEM', () => Buffer.from(certs.partner!.certPem).toString('base64'), 'der'],
    ['DER with trailing bytes', () => Buffer.concat([certs.partner!.der, Buffer.from([0, 0])]).toString('base64'), 'der'],
    ['truncated DER', () => certs.partner!.der.subarray(0, 200).toString('base64'), 'der'],
    ['oversize', () => 'A'.repeat(MAX_CERT_HEADER_CHARS + 4), 'too_large'],
    ['repeated header (joined by the platform)', () => `${b64()}, ${b64()}`, 'repeated'],
    ['empty', () => ' ', 'empty'],
  ])('%s: 400 certificate_malformed', async (_name, value, reason) => {
    const res = await exchange(value(), { subjectToken: certs.partner!.thumbprint });
    expect(res.status).toBe(400);
    expect(res.json).toMatchObject({ error: 'invalid_request', reason: 'certificate_malformed', failure: reason });
  });

  test('subject_token that is not the certificate thumbprint: 400', async () => {
    const res = await withCert(certs.partner!, { subjectToken: certs.byThumbprint!.thumbprint });
    expect(res.status).toBe(400);
    expect(res.json.parameter).toBe('subject_token');
  });

  test('the certificate type without the header: 400', async () => {
    expect((await exchange(undefined, { subjectToken: certs.partner!.thumbprint })).status).toBe(400);
  });

  test('the header on an Entra exchange: 400 (one request, one subject)', async () => {
    const res = await exchange(b64(), {
      type: 'urn:ietf:params:oauth:token-type:access_token',
      subjectToken: await fx.caller(),
    });
    expect(res.status).toBe(400);
    expect(res.json.header).toBe('X-Client-Certificate');
  });

  test('/api/query: the header and X-Subject-Token together are 400; a bad header is 400', async () => {
    const both = await invoke(queryHandler, {
      headers: { authorization: `Bearer ${gateway}`, 'x-client-certificate': b64(), 'x-subject-token': await fx.caller() },
      params: { name: 'order-count' },
      body: {},
    });
    expect(both.status).toBe(400);
    const bad = await invoke(queryHandler, {
      headers: { authorization: `Bearer ${gateway}`, 'x-client-certificate': 'AAAA' },
      params: { name: 'order-count' },
      body: {},
    });
    expect(bad.status).toBe(400);
    const refused = await invoke(queryHandler, {
      headers: { authorization: `Bearer ${gateway}`, 'x-client-certificate': certs.expired!.base64 },
      params: { name: 'order-count' },
      body: {},
    });
    expect(refused.status).toBe(401);
    expect(refused.json).toMatchObject({ code: 'certificate_invalid', check: 'validity', failure: 'expired' });
  });
});

test("the sample policy's certificate rule grants what npm run dev-cert issues by default (the README quick start)", async () => {
  const saved = process.env.BROKER_POLICY_PATH;
  process.env.BROKER_POLICY_PATH = join(__dirname, '..', '..', '..', 'local', 'sample-policy.json');
  try {
    const devCert = fx.sandbox.clientCa.issueClient({ commonName: 'partner-job', organization: 'Sandbox Partner' });
    const res = await withCert(devCert);
    expect(res.status).toBe(200);
    expect(audits().at(-1)).toMatchObject({ decision: 'grant', ruleId: 'sandbox-partner-certificates' });
  } finally {
    process.env.BROKER_POLICY_PATH = saved;
  }
});

test('loadClientCa round-trips a CA (what npm run dev-cert uses)', () => {
  const ca = createClientCa('Round Trip CA');
  const again = loadClientCa(ca.certPem, ca.keyPem);
  expect(again.thumbprint).toBe(ca.thumbprint);
  expect(again.subjectDn).toBe('O=token-broker sandbox, CN=Round Trip CA');
});
