import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { workerHost } from '../../helpers/loopback';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import type { HttpHandler } from '@azure/functions';

import { settle } from '../../../local/emulators/harness';
import { SANDBOX } from '../../../local/ids';
import { startSandbox, type Sandbox } from '../../../local/sandbox';
import { isErrorCode, specOf } from '../../../shared/errors';
import { captureLogs, invoke, type CallOptions, type Result } from '../../helpers/invoke';
import { allRefs, atPointer, ContractValidator, escapePointer, loadSpec, newAjv, type JsonObject } from '../../helpers/openapi';
import { TestApp } from '../../helpers/app';

const testApp = new TestApp();
const tokenHandler = testApp.handler('token');
const explainHandler = testApp.handler('explain');
const healthHandler = testApp.handler('health');
const queryHandler = testApp.handler('query');
const adminHandler = testApp.handler('adminRotate');
const adminPolicyHandler = testApp.handler('adminPolicy');

/**
 * The HTTP contract: openapi.yaml is well-formed, matches the code's reason codes and the registered
 * functions, and every real response of the sandbox (real handlers, real emulators, real PostgreSQL) —
 * successes and every error family — validates against it with Ajv. An undocumented status fails.
 */

const ROOT = resolve(__dirname, '..', '..', '..');
const G = SANDBOX.google;
const CLOUDSQL = `cloudsql://${G.project}/${G.region}/${G.instance}/${G.database}`;
const COSMOS = `cosmos://${SANDBOX.cosmos.account}/${SANDBOX.cosmos.database}/${SANDBOX.cosmos.container}`;
const EXCHANGE = 'urn:ietf:params:oauth:grant-type:token-exchange';
const ACCESS = 'urn:ietf:params:oauth:token-type:access_token';
// The connector always dials port 3307: a loopback address of our own (test/query uses 127.0.0.1x).
const HOST = workerHost(30);
jest.setTimeout(60_000);

const spec = loadSpec();
const contract = new ContractValidator(spec);

// ---------------------------------------------------------------- the document itself

describe('openapi.yaml is a valid OpenAPI 3.1 document', () => {
  test('version, info, servers and a security scheme for the gateway', () => {
    expect(spec.openapi as string).toMatch(/^3\.1\.\d+$/);
    expect(spec.info).toMatchObject({ title: 'token-broker', version: expect.any(String) });
    expect(Array.isArray(spec.servers)).toBe(true);
    expect(atPointer(spec, '#/components/securitySchemes/gatewayBearer')).toMatchObject({ type: 'http', scheme: 'bearer' });
  });

  test('every $ref resolves inside the document', () => {
    const refs = allRefs(spec);
    expect(refs.length).toBeGreaterThan(50);
    const broken = refs.filter((r) => !r.ref.startsWith('#/') || atPointer(spec, r.ref) === undefined);
    expect(broken).toEqual([]);
  });

  test('every operation has a unique operationId, declared path parameters, responses with a 2xx and valid status keys', () => {
    const ids: string[] = [];
    for (const [path, item] of Object.entries(spec.paths as JsonObject)) {
      expect(path).toMatch(/^\//);
      for (const [method, raw] of Object.entries(item as JsonObject)) {
        expect(['get', 'post', 'put', 'patch', 'delete', 'head', 'options']).toContain(method);
        const op = raw as JsonObject;
        expect(typeof op.operationId).toBe('string');
        ids.push(op.operationId as string);
        const templ = [...path.matchAll(/\{([^}]+)\}/g)].map((m) => m[1]);
        const declared = ((op.parameters ?? []) as JsonObject[]).filter((p) => p.in === 'path').map((p) => p.name);
        expect(declared.sort()).toEqual(templ.sort());
        for (const p of (op.parameters ?? []) as JsonObject[]) if (p.in === 'path') expect(p.required).toBe(true);
        const statuses = Object.keys(op.responses as JsonObject);
        for (const s of statuses) expect(s).toMatch(/^([1-5]\d\d|[1-5]XX|default)$/);
        // …except a method registered only to be refused as the spec asks (MCP: GET and DELETE are 405).
        expect(statuses.some((s) => s.startsWith('2')) || statuses.includes('405')).toBe(true);
        for (const sec of (op.security ?? []) as JsonObject[]) {
          for (const name of Object.keys(sec)) expect(atPointer(spec, `#/components/securitySchemes/${name}`)).toBeDefined();
        }
      }
    }
    expect(new Set(ids).size).toBe(ids.length);
  });

  test('every schema compiles under strict Ajv (2020-12) and its examples validate against it', () => {
    const ajv = newAjv();
    ajv.addSchema(spec, 'spec');
    const schemas = (spec.components as JsonObject).schemas as JsonObject;
    for (const [name, schema] of Object.entries(schemas)) {
      const v = ajv.compile({ $ref: `spec#/components/schemas/${escapePointer(name)}` });
      for (const ex of ((schema as JsonObject).examples ?? []) as unknown[]) {
        expect({ name, ok: v(ex), errors: v.errors ?? null }).toEqual({ name, ok: true, errors: null });
      }
    }
  });

  test("the reason codes are exactly the code's, each under its own status", () => {
    // shared/errors.ts is the one place codes map to statuses; read its table, not a copy of it.
    const src = readFileSync(join(ROOT, 'shared', 'errors.ts'), 'utf8');
    const codes = [...src.matchAll(/^\s+([a-z_]+): \{ status: (\d{3}),/gm)].map((m) => ({ code: m[1]!, status: Number(m[2]) }));
    expect(codes.length).toBeGreaterThan(30);
    const listed = atPointer(spec, '#/components/schemas/ReasonCode/enum') as string[];
    expect([...listed].sort()).toEqual(codes.map((c) => c.code).sort());
    for (const { code, status } of codes) {
      expect(isErrorCode(code)).toBe(true);
      expect(specOf(code as Parameters<typeof specOf>[0]).status).toBe(status);
      const bucket = atPointer(spec, `#/components/schemas/Reason${status}/enum`) as string[] | undefined;
      expect({ code, inBucket: bucket?.includes(code) ?? false }).toEqual({ code, inBucket: true });
    }
  });

  test('every HTTP function is documented with its route and method, and nothing else is', () => {
    const documented = new Set<string>();
    for (const [path, item] of Object.entries(spec.paths as JsonObject))
      for (const m of Object.keys(item as JsonObject)) documented.add(`${m.toUpperCase()} ${path}`);
    const registered = new Set<string>();
    for (const f of readdirSync(join(ROOT, 'functions')).filter((n) => n.endsWith('.ts'))) {
      // eslint-disable-next-line @typescript-eslint/no-require-imports
      const mod = require(join(ROOT, 'functions', f)) as { registration?: { options?: { route: string; methods: string[] } } };
      const o = mod.registration?.options; // functions/app.ts: hooks only
      if (!o) continue; // timers
      for (const m of o.methods) registered.add(`${m} /${o.route}`);
    }
    expect([...registered].sort()).toEqual([...documented].sort());
  });
});

// ---------------------------------------------------------------- real responses

let sb: Sandbox;
let restoreEnv: () => void;
const logs = captureLogs();
let gateway: string;
let reader: string;
let stranger: string;
let admin: string;
let policyFile: string | undefined;
const MISSING_CONTAINER = 'no-such-container';

/** The sample policy, plus a grant on a Cosmos container the account does not have (for the 502). */
function writePolicy(): string {
  const policy = JSON.parse(readFileSync(join(ROOT, 'local', 'sample-policy.json'), 'utf8')) as {
    rules: { grants: { cosmos?: object[] } }[];
  };
  policy.rules[0]!.grants.cosmos!.push({
    account: SANDBOX.cosmos.account,
    database: SANDBOX.cosmos.database,
    container: MISSING_CONTAINER,
    mode: 'read',
    partitionKey: { type: 'none' },
    maxTtlSeconds: 600,
  });
  const dir = mkdtempSync(join(tmpdir(), 'contract-'));
  const file = join(dir, 'policy.json');
  writeFileSync(file, JSON.stringify(policy));
  return file;
}

beforeAll(async () => {
  policyFile = writePolicy();
  sb = await startSandbox({
    cloudSql: { host: HOST },
    env: { BROKER_JWKS_COOLDOWN_SECONDS: '0', BROKER_UPSTREAM_TIMEOUT_MS: '1500', BROKER_POLICY_PATH: policyFile },
  });
  restoreEnv = sb.applyEnv();
  gateway = await sb.entra.mint({
    oid: SANDBOX.gatewayObjectId,
    appId: SANDBOX.gatewayAppId,
    aud: SANDBOX.clientAudience,
    version: '1.0',
  });
  reader = await sb.entra.mint({ oid: SANDBOX.readerObjectId, aud: SANDBOX.subjectAudience, roles: ['Orders.Read'] });
  stranger = await sb.entra.mint({ oid: SANDBOX.strangerObjectId, aud: SANDBOX.subjectAudience, roles: ['Nothing'] });
  // An admin token is for the broker itself (its own audience), not for an API behind APIM.
  admin = await sb.entra.mint({ oid: SANDBOX.readerObjectId, aud: SANDBOX.clientAudience, roles: [SANDBOX.adminRole] });
});

afterAll(async () => {
  logs.restore();
  await testApp.app.queryPools.closeAll();
  restoreEnv?.();
  await sb?.stop();
  if (policyFile) rmSync(dirname(policyFile), { recursive: true, force: true });
});

/** Call a handler and validate its real response against the spec; returns it for further checks. */
async function call(path: string, method: string, handler: HttpHandler, opts: CallOptions): Promise<Result> {
  const res = await invoke(handler, { ...opts, method, url: `http://127.0.0.1:7071/api${opts.url ?? path}` });
  expect(contract.check(path, method, res)).toEqual([]);
  // A request the handler accepted must be one the spec admits.
  if (res.status < 300 && opts.form)
    expect(contract.checkRequest(path, method, 'application/x-www-form-urlencoded', opts.form)).toEqual([]);
  if (res.status < 300 && opts.body !== undefined)
    expect(contract.checkRequest(path, method, 'application/json', opts.body)).toEqual([]);
  return res;
}

const auth = (token = gateway) => ({ authorization: `Bearer ${token}` });
const exchangeForm = (over: Record<string, string> = {}) => ({
  grant_type: EXCHANGE,
  subject_token: reader,
  subject_token_type: ACCESS,
  resource: CLOUDSQL,
  ...over,
});
const token = (opts: CallOptions) => call('/token', 'POST', tokenHandler, opts);

describe('POST /token', () => {
  afterEach(async () => {
    for (const e of [sb.google.sts, sb.google.iamcredentials]) {
      e.clearFaults();
      await settle(e);
    }
  });

  test('200 Cloud SQL token, form body', async () => {
    const r = await token({ headers: auth(), form: exchangeForm() });
    expect(r.status).toBe(200);
    expect(r.json.service_account).toBe(G.readerServiceAccount);
  });

  test('200 Cloud SQL token, JSON body with a numeric requested_lifetime', async () => {
    const r = await token({ headers: auth(), body: { ...exchangeForm(), requested_lifetime: 600 } });
    expect(r.status).toBe(200);
    expect(r.json.expires_in).toBeLessThanOrEqual(600);
  });

  test('400 invalid_request naming the missing parameter', async () => {
    const r = await token({ headers: auth(), form: { grant_type: EXCHANGE, subject_token_type: ACCESS, resource: CLOUDSQL } });
    expect([r.status, r.json.error, r.json.reason, r.json.parameter]).toEqual([
      400,
      'invalid_request',
      'bad_request',
      'subject_token',
    ]);
  });

  test('400 invalid_request for an unsupported subject_token_type', async () => {
    const r = await token({
      headers: auth(),
      form: exchangeForm({ subject_token_type: 'urn:ietf:params:oauth:token-type:saml2' }),
    });
    expect([r.status, r.json.reason]).toEqual([400, 'unsupported_token_type']);
  });

  test('400 unsupported_grant_type', async () => {
    const r = await token({ headers: auth(), form: exchangeForm({ grant_type: 'client_credentials' }) });
    expect([r.status, r.json.error]).toEqual([400, 'unsupported_grant_type']);
  });

  test('400 invalid_target (malformed resource, and a query target)', async () => {
    const r = await token({ headers: auth(), form: exchangeForm({ resource: 'cloudsql://only-a-project' }) });
    expect([r.status, r.json.error]).toEqual([400, 'invalid_target']);
    const q = await token({ headers: auth(), form: exchangeForm({ resource: 'query://order-count' }) });
    expect([q.status, q.json.error]).toEqual([400, 'invalid_target']);
  });

  test('400 invalid_scope when scope is sent', async () => {
    const r = await token({ headers: auth(), form: exchangeForm({ scope: 'openid' }) });
    expect([r.status, r.json.error, r.json.reason]).toEqual([400, 'invalid_scope', 'scope_not_supported']);
  });

  test('401 invalid_client: no gateway token, and a malformed one (WWW-Authenticate set)', async () => {
    const r = await token({ form: exchangeForm() });
    expect([r.status, r.json.error, r.json.party, r.json.reason]).toEqual([401, 'invalid_client', 'client', 'token_missing']);
    const m = await token({ headers: { authorization: 'Bearer not-a-jwt' }, form: exchangeForm() });
    expect([m.status, m.json.error, m.json.reason]).toEqual([401, 'invalid_client', 'token_malformed']);
  });

  test('401 invalid_grant: an expired subject token', async () => {
    const expired = await sb.entra.mint({
      oid: SANDBOX.readerObjectId,
      aud: SANDBOX.subjectAudience,
      roles: ['Orders.Read'],
      expiresIn: -3600,
    });
    const r = await token({ headers: auth(), form: exchangeForm({ subject_token: expired }) });
    expect([r.status, r.json.error, r.json.party, r.json.reason]).toEqual([401, 'invalid_grant', 'subject', 'token_expired']);
  });

  test('403 access_denied (not_granted) and 403 unauthorized_client (client_not_allowed)', async () => {
    const r = await token({ headers: auth(), form: exchangeForm({ subject_token: stranger }) });
    expect([r.status, r.json.error, r.json.reason]).toEqual([403, 'access_denied', 'not_granted']);
    const other = await sb.entra.mint({ aud: SANDBOX.clientAudience, version: '1.0' });
    const c = await token({ headers: auth(other), form: exchangeForm() });
    expect([c.status, c.json.error, c.json.reason]).toEqual([403, 'unauthorized_client', 'client_not_allowed']);
  });

  test('413 and 415', async () => {
    const big = await token({ headers: auth(), form: exchangeForm({ padding: 'x'.repeat(70 * 1024) }) });
    expect([big.status, big.json.reason]).toEqual([413, 'payload_too_large']);
    const text = await token({ headers: { ...auth(), 'content-type': 'text/plain' }, raw: 'grant_type=x' });
    expect([text.status, text.json.reason]).toEqual([415, 'unsupported_media_type']);
  });

  test('503 with Retry-After when Google STS is unavailable', async () => {
    testApp.renew();
    sb.google.sts.inject({ fault: { kind: 'status', status: 503 } });
    const r = await token({ headers: auth(), form: exchangeForm() });
    expect([r.status, r.json.error, r.json.reason]).toEqual([503, 'temporarily_unavailable', 'upstream_unavailable']);
    expect(Number(r.headers.get('retry-after'))).toBeGreaterThanOrEqual(1);
  });

  test('502 when IAM Credentials fails, 504 when it hangs past the timeout', async () => {
    testApp.renew();
    sb.google.iamcredentials.inject({ fault: { kind: 'status', status: 500 } });
    const r = await token({ headers: auth(), form: exchangeForm() });
    expect([r.status, r.json.reason]).toEqual([502, 'upstream_error']);
    sb.google.iamcredentials.clearFaults();
    testApp.renew();
    sb.google.iamcredentials.inject({ fault: { kind: 'hang' } });
    const t = await token({ headers: auth(), form: exchangeForm() });
    expect([t.status, t.json.reason]).toEqual([504, 'upstream_timeout']);
    expect(t.headers.get('retry-after')).not.toBeNull();
  });

  test('200 CosmosDB resource token (partition-bound, and narrowed to read)', async () => {
    const r = await token({ headers: auth(), form: exchangeForm({ resource: COSMOS }) });
    expect(r.status).toBe(200);
    expect([r.json.issued_token_type, r.json.mode, r.json.partition_key]).toEqual([
      'urn:token-broker:params:oauth:token-type:cosmos-resource-token',
      'all',
      SANDBOX.readerObjectId,
    ]);
    const read = await token({ headers: auth(), body: exchangeForm({ resource: `${COSMOS}?mode=read` }) });
    expect([read.status, read.json.mode]).toEqual([200, 'read']);
  });

  test('200 keyless CosmosDB (rbac) answer: the identity token, auth rbac, no partition', async () => {
    const r = await token({
      headers: auth(),
      form: exchangeForm({
        resource: `cosmos://${SANDBOX.cosmosKeyless.account}/${SANDBOX.cosmosKeyless.database}/${SANDBOX.cosmosKeyless.ordersContainer}`,
      }),
    });
    expect(r.status).toBe(200);
    expect([r.json.issued_token_type, r.json.token_type, r.json.auth, r.json.partition_key]).toEqual([
      'urn:ietf:params:oauth:token-type:access_token',
      'Bearer',
      'rbac',
      null,
    ]);
  });

  test('502 target_misconfigured for a granted Cosmos container that does not exist', async () => {
    const r = await token({
      headers: auth(),
      form: exchangeForm({ resource: `cosmos://${SANDBOX.cosmos.account}/${SANDBOX.cosmos.database}/${MISSING_CONTAINER}` }),
    });
    expect([r.status, r.json.error, r.json.reason]).toEqual([502, 'server_error', 'target_misconfigured']);
  });
});

test('the CosmosToken schema accepts the fixed Cosmos contract and rejects what breaks it', () => {
  // The Cosmos success shape fixed by the integrator for issue #4.
  const example = {
    access_token: 'type=resource&ver=1.0&sig=Zm9vYmFyYmF6cXV4;cGVybWlzc2lvbg==;',
    issued_token_type: 'urn:token-broker:params:oauth:token-type:cosmos-resource-token',
    token_type: 'N_A',
    expires_in: 3599,
    account_endpoint: 'https://orders-cosmos.documents.azure.com:443/',
    database: 'app',
    container: 'profiles',
    partition_key: null,
    mode: 'read',
  };
  const v = contract.schemaAt('#/paths/~1token/post/responses/200/content/application~1json/schema');
  expect(v(example)).toBe(true);
  expect(v({ ...example, partition_key: SANDBOX.readerObjectId, mode: 'all' })).toBe(true);
  // and it can fail: a wrong token type, a wrong mode, an undocumented field
  expect(v({ ...example, token_type: 'Bearer' })).toBe(false);
  expect(v({ ...example, mode: 'write' })).toBe(false);
  expect(v({ ...example, master_key: 'x' })).toBe(false);
});

describe('POST /policy/explain', () => {
  const explain = (opts: CallOptions) => call('/policy/explain', 'POST', explainHandler, opts);

  test('200 grant (Cloud SQL and query targets) and 200 deny', async () => {
    const g = await explain({ headers: auth(), form: { subject_token: reader, resource: CLOUDSQL } });
    expect([g.status, g.json.decision]).toEqual([200, 'grant']);
    const q = await explain({ headers: auth(), body: { subject_token: reader, resource: 'query://order-count' } });
    expect([q.status, q.json.decision]).toEqual([200, 'grant']);
    const c = await explain({ headers: auth(), form: { subject_token: reader, resource: COSMOS } });
    expect([c.status, c.json.decision]).toEqual([200, 'grant']);
    const d = await explain({ headers: auth(), form: { subject_token: stranger, resource: CLOUDSQL } });
    expect([d.status, d.json.decision, d.json.reason]).toEqual([200, 'deny', 'not_granted']);
  });

  test('400 for a malformed resource, 401 without the gateway token', async () => {
    const b = await explain({ headers: auth(), form: { subject_token: reader, resource: 'ftp://x' } });
    expect(b.status).toBe(400);
    const u = await explain({ form: { subject_token: reader, resource: CLOUDSQL } });
    expect([u.status, u.json.party]).toEqual([401, 'client']);
    expect(u.headers.get('www-authenticate')).toMatch(/^Bearer error="invalid_token"/);
  });
});

describe('client certificates (X-Client-Certificate, issue #29)', () => {
  const CERT_TYPE = 'urn:token-broker:token-type:client-certificate';
  const partner = () => sb.clientCa.issueClient({ commonName: 'partner-job', organization: 'Sandbox Partner' });
  const withCert = (c: { base64: string }) => ({ ...auth(), 'x-client-certificate': c.base64 });

  test('/token: 200 for the granted certificate, 401 certificate_invalid naming the check, 400 certificate_malformed, 403 without a vouching gateway', async () => {
    const c = partner();
    const ok = await token({
      headers: withCert(c),
      form: exchangeForm({ subject_token_type: CERT_TYPE, subject_token: c.thumbprint }),
    });
    expect(ok.status).toBe(200);
    const expired = sb.clientCa.issueClient({
      commonName: 'partner-job',
      notBefore: new Date(Date.now() - 2 * 86400_000),
      notAfter: new Date(Date.now() - 86400_000),
    });
    const r = await token({
      headers: withCert(expired),
      form: exchangeForm({ subject_token_type: CERT_TYPE, subject_token: expired.thumbprint }),
    });
    expect([r.status, r.json.reason, r.json.check, r.json.failure]).toEqual([401, 'certificate_invalid', 'validity', 'expired']);
    const m = await token({
      headers: { ...auth(), 'x-client-certificate': 'not base64!' },
      form: exchangeForm({ subject_token_type: CERT_TYPE, subject_token: c.thumbprint }),
    });
    expect([m.status, m.json.reason]).toEqual([400, 'certificate_malformed']);
    const saved = process.env.BROKER_CERT_GATEWAY_OIDS;
    delete process.env.BROKER_CERT_GATEWAY_OIDS;
    try {
      const f = await token({
        headers: withCert(c),
        form: exchangeForm({ subject_token_type: CERT_TYPE, subject_token: c.thumbprint }),
      });
      expect([f.status, f.json.reason]).toEqual([403, 'client_not_allowed']);
    } finally {
      process.env.BROKER_CERT_GATEWAY_OIDS = saved;
    }
  });

  test('/policy/explain: 200 naming the certificate; /query/{name}: 200 rows as the certificate, 401 for a refused one', async () => {
    const c = partner();
    const e = await call('/policy/explain', 'POST', explainHandler, {
      headers: withCert(c),
      form: { subject_token_type: CERT_TYPE, subject_token: c.thumbprint, resource: 'query://order-count' },
    });
    expect([e.status, e.json.decision, (e.json.subject as { kind: string }).kind]).toEqual([200, 'grant', 'certificate']);
    const q = await call('/query/{name}', 'POST', queryHandler, {
      url: '/query/order-count',
      params: { name: 'order-count' },
      headers: withCert(c),
      body: {},
    });
    expect(q.status).toBe(200);
    const self = sb.clientCa.issueClient({ commonName: 'partner-job', clientAuth: false });
    const u = await call('/query/{name}', 'POST', queryHandler, {
      url: '/query/order-count',
      params: { name: 'order-count' },
      headers: withCert(self),
      body: {},
    });
    expect([u.status, u.json.code, u.json.check]).toEqual([401, 'certificate_invalid', 'key_usage']);
  });
});

describe('GET /health', () => {
  const health = (query = '') => call('/health', 'GET', healthHandler, { method: 'GET', url: `/health${query}` });

  test('200 liveness', async () => {
    const r = await health('?probe=live');
    expect(r.json).toEqual({ status: 'ok', live: true });
  });

  test('readiness: 200 when every check passes, 503 with Retry-After when one fails', async () => {
    const ok = await health();
    expect([ok.status, ok.json.ready]).toEqual([200, true]);
    const prev = process.env.BROKER_POLICY_PATH;
    process.env.BROKER_POLICY_PATH = join(ROOT, 'no-such-policy.json');
    try {
      const r = await health();
      expect([r.status, r.json.ready]).toEqual([503, false]);
      expect((r.json.checks as Record<string, { status: string }>).policy!.status).toBe('fail');
    } finally {
      process.env.BROKER_POLICY_PATH = prev;
    }
  });
});

describe('POST /query/{name}', () => {
  const query = (name: string, opts: CallOptions) =>
    call('/query/{name}', 'POST', queryHandler, { url: `/query/${name}`, params: { name }, ...opts });
  const both = (subject = reader) => ({ ...auth(), 'x-subject-token': subject });

  test('200 rows', async () => {
    const r = await query('orders-by-customer', { headers: both(), body: {} });
    expect(r.status).toBe(200);
    expect(r.headers.get('traceparent')).toMatch(/^00-[0-9a-f]{32}-[0-9a-f]{16}-0[01]$/);
    expect(r.json.rowCount).toBeGreaterThan(0);
    const c = await query('order-count', { headers: both(), body: {} });
    expect(c.status).toBe(200);
  });

  test('400 invalid_parameter naming the parameter, 404 unknown query', async () => {
    const b = await query('orders-by-customer', { headers: both(), body: { callerOid: 'someone-else' } });
    expect([b.status, b.json.code, b.json.parameter]).toEqual([400, 'invalid_parameter', 'callerOid']);
    const n = await query('no-such-query', { headers: both(), body: {} });
    expect([n.status, n.json.code]).toEqual([404, 'not_found']);
  });

  test('401 without the subject token, 403 when the policy grants nothing, 415 for a non-JSON body', async () => {
    const u = await query('order-count', { headers: auth(), body: {} });
    expect([u.status, u.json.code, u.json.party]).toEqual([401, 'token_missing', 'subject']);
    const f = await query('order-count', { headers: both(stranger), body: {} });
    expect([f.status, f.json.code]).toEqual([403, 'not_granted']);
    const t = await query('order-count', { headers: { ...both(), 'content-type': 'text/plain' }, raw: 'since=2020-01-01' });
    expect([t.status, t.json.code]).toEqual([415, 'unsupported_media_type']);
  });
});

describe('POST /admin/rotate', () => {
  const rotate = (q: string, opts: CallOptions) =>
    call('/admin/rotate', 'POST', adminHandler, { url: `/admin/rotate${q}`, ...opts });

  test('200 dry run (the plan, nothing changed)', async () => {
    const r = await rotate('?dryRun=true', { headers: auth(), form: { subject_token: admin } });
    expect([r.status, r.json.dryRun]).toEqual([200, true]);
    expect((r.json.accounts as unknown[]).length).toBe(1);
  });

  test('400 bad dryRun, 401 without the gateway, 403 without the admin role', async () => {
    const b = await rotate('?dryRun=maybe', { headers: auth(), form: { subject_token: admin } });
    expect([b.status, b.json.code, b.json.parameter]).toEqual([400, 'invalid_parameter', 'dryRun']);
    const u = await rotate('', { body: { subject_token: admin } });
    expect(u.status).toBe(401);
    const f = await rotate('', { headers: auth(), body: { subject_token: reader } });
    expect([f.status, f.json.code]).toEqual([401, 'token_audience_not_allowed']); // an API's token is no admin token
    const noRole = await sb.entra.mint({ oid: SANDBOX.readerObjectId, aud: SANDBOX.clientAudience, roles: ['Orders.Read'] });
    const n = await rotate('', { headers: auth(), body: { subject_token: noRole } });
    expect([n.status, n.json.code]).toEqual([403, 'role_required']);
  });
});

describe('GET/PUT /admin/policy on a file policy (the Blob Storage answers: test/policy/live-policy.test.ts)', () => {
  test('200 the document with its ETag; PUT is 409 read_only_source; 428 without If-Match comes first', async () => {
    const g = await call('/admin/policy', 'GET', adminPolicyHandler, { headers: { ...auth(), 'x-subject-token': admin } });
    expect([g.status, g.json.source]).toEqual([200, 'file']);
    const p = await call('/admin/policy', 'PUT', adminPolicyHandler, {
      headers: { ...auth(), 'x-subject-token': admin, 'if-match': g.json.etag as string },
      body: g.json.policy,
    });
    expect([p.status, p.json.code, p.json.reason]).toEqual([409, 'conflict', 'read_only_source']);
    const r = await call('/admin/policy', 'GET', adminPolicyHandler, { headers: { ...auth(), 'x-subject-token': reader } });
    expect(r.status).toBe(401);
  });
});

test('coverage: every operation succeeded once, and each error family of /token was validated', () => {
  const seen = (op: string) => new Set(contract.checked.filter((c) => c.operationId === op).map((c) => c.status));
  for (const op of ['exchangeToken', 'explainPolicy', 'getHealth', 'runQuery', 'rotateKeys', 'getPolicy'])
    expect(seen(op).has(200)).toBe(true);
  expect([...seen('exchangeToken')]).toEqual(expect.arrayContaining([200, 400, 401, 403, 413, 415, 502, 503, 504]));
  expect([...seen('runQuery')]).toEqual(expect.arrayContaining([200, 400, 401, 403, 404, 415]));
  expect([...seen('getHealth')]).toEqual(expect.arrayContaining([200, 503]));
});

test('the validator fails an undocumented status and a non-conforming body', () => {
  const fake = (status: number, body: unknown, type = 'application/json'): Result => ({
    status,
    headers: new Headers({
      'content-type': type,
      'x-correlation-id': 'corr-12345678',
      'cache-control': 'no-store',
      pragma: 'no-cache',
    }),
    json: body as Record<string, unknown>,
    text: JSON.stringify(body),
  });
  expect(contract.check('/token', 'POST', fake(418, {})).join()).toMatch(/status 418 is not documented/);
  expect(contract.check('/token', 'POST', fake(200, { access_token: 'x' })).join()).toMatch(/body/);
  expect(
    contract
      .check(
        '/token',
        'POST',
        fake(400, { error: 'access_denied', error_description: 'x', reason: 'not_granted', correlation_id: 'c' }),
      )
      .join(),
  ).toMatch(/body/);
  expect(contract.check('/health', 'GET', fake(200, { status: 'ok', live: true }, 'text/plain')).join()).toMatch(/content-type/);
  const noRetry = fake(503, {
    error: 'temporarily_unavailable',
    error_description: 'x',
    reason: 'upstream_unavailable',
    correlation_id: 'c',
  });
  expect(contract.check('/token', 'POST', noRetry).join()).toMatch(/Retry-After is missing/);
  expect(contract.checkRequest('/token', 'POST', 'application/json', { grant_type: 'client_credentials' }).join()).toMatch(
    /request/,
  );
  expect(contract.checkRequest('/token', 'POST', 'text/plain', {}).join()).toMatch(/not documented/);
});
