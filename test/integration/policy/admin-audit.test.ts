import type { HttpHandler } from '@azure/functions';
import { startSandbox, type Sandbox } from '../../../local/sandbox';
import { SANDBOX } from '../../../local/ids';
import { BlobPolicyWriter } from '../../../shared/policy/blob-store';
import { BrokerError } from '../../../shared/errors';
import { TestApp } from '../../helpers/app';
import { captureLogs, invoke, type CallOptions } from '../../helpers/invoke';

/**
 * Issue #26 item 1: every request to /api/admin/* is audited exactly once, grants and refusals alike (refusals
 * before authentication too), with what is known: the validated admin, or `unauthenticated` with what its tokens
 * claim and why they were refused (never a token), the method, the path, the outcome and the correlation id.
 * Every admin route × every refusal class; a refused PUT leaves the policy's ETag and revision as they were.
 * Item 4: after writes that lost a race, the history lists each kept version once, newest first.
 */

const testApp = new TestApp();
const policyHandler = testApp.handler('adminPolicy');
const historyHandler = testApp.handler('adminPolicyHistory');
const denyHandler = testApp.handler('adminDeny');
const denyRemoveHandler = testApp.handler('adminDenyRemove');
const rotateHandler = testApp.handler('adminRotate');

let sb: Sandbox;
let restoreEnv: () => void;
let logs: ReturnType<typeof captureLogs>;

const api = (path: string) => `http://127.0.0.1:7071/api/${path}`;
const ADMIN_OID = '0b5e0000-0000-4000-8000-0000000ad333';
const gateway = (o: { oid?: string; aud?: string } = {}) =>
  sb.entra.mint({
    oid: o.oid ?? SANDBOX.gatewayObjectId,
    appId: SANDBOX.gatewayAppId,
    aud: o.aud ?? SANDBOX.clientAudience,
    version: '1.0',
  });
const adminToken = (o: { roles?: string[]; aud?: string } = {}) =>
  sb.entra.mint({ oid: ADMIN_OID, aud: o.aud ?? SANDBOX.clientAudience, roles: o.roles ?? [SANDBOX.adminRole] });
const policyBlob = () =>
  sb.storage!.admin().getContainerClient(SANDBOX.storage.container).getBlockBlobClient(SANDBOX.storage.policyBlob);

beforeAll(async () => {
  logs = captureLogs();
  sb = await startSandbox({ storage: true, env: { BROKER_JWKS_COOLDOWN_SECONDS: '0' } });
  restoreEnv = sb.applyEnv();
  testApp.renew();
}, 60_000);

afterAll(async () => {
  logs?.restore();
  restoreEnv?.();
  testApp.renew();
  await sb?.stop();
});

interface Route {
  name: string;
  handler: HttpHandler;
  method: string;
  path: string;
  action: string;
  /** Whether the route reads a body (and so has 413/415/400-body refusal classes). */
  body?: 'json' | 'form';
  params?: Record<string, string>;
}

const ROUTES: Route[] = [
  { name: 'GET policy', handler: policyHandler, method: 'GET', path: 'admin/policy', action: 'policy.read' },
  { name: 'PUT policy', handler: policyHandler, method: 'PUT', path: 'admin/policy', action: 'policy.write', body: 'json' },
  { name: 'history', handler: historyHandler, method: 'GET', path: 'admin/policy/history', action: 'policy.history' },
  { name: 'POST deny', handler: denyHandler, method: 'POST', path: 'admin/deny', action: 'policy.deny.add', body: 'json' },
  {
    name: 'DELETE deny',
    handler: denyRemoveHandler,
    method: 'DELETE',
    path: 'admin/deny/deny-00000000-0000-4000-8000-000000000000',
    params: { id: 'deny-00000000-0000-4000-8000-000000000000' },
    action: 'policy.deny.remove',
    body: 'json',
  },
  { name: 'rotate', handler: rotateHandler, method: 'POST', path: 'admin/rotate', action: 'rotation.admin', body: 'form' },
];

/** The admin's credentials for a route: X-Subject-Token, or `subject_token` in the form body (rotate). */
async function asAdmin(r: Route, headers: Record<string, string>, admin: string | undefined): Promise<CallOptions> {
  const base: CallOptions = { method: r.method, url: api(r.path), params: r.params, headers: { ...headers } };
  if (r.body === 'form') return { ...base, form: admin ? { subject_token: admin } : {} };
  if (admin) base.headers!['x-subject-token'] = admin;
  if (r.method === 'PUT') {
    const cur = await policyBlob().downloadToBuffer();
    return { ...base, body: JSON.parse(cur.toString('utf8')) as unknown };
  }
  if (r.method === 'POST')
    return {
      ...base,
      body: { tenantId: SANDBOX.tenantId, objectId: '0b5e0000-0000-4000-8000-00000000dead', reason: 'audit sweep' },
    };
  return base;
}

interface RefusalClass {
  name: string;
  status: number;
  reason: string;
  /** Only on routes that read a body. */
  bodyOnly?: boolean;
  /** Only on this route. */
  only?: string;
  caller?: 'unauthenticated' | 'authenticated';
  /** What a route answers instead (rotate reads the admin's token from its form body: missing is 400). */
  instead?: Record<string, { status: number; reason: string }>;
  build: (r: Route) => Promise<CallOptions>;
}

const CLASSES: RefusalClass[] = [
  {
    name: 'no Authorization',
    status: 401,
    reason: 'token_missing',
    caller: 'unauthenticated',
    build: async (r) => asAdmin(r, {}, await adminToken()),
  },
  {
    name: 'Authorization not a bearer token',
    status: 401,
    reason: 'token_malformed',
    caller: 'unauthenticated',
    build: async (r) => asAdmin(r, { authorization: 'Basic Zm9vOmJhcg==' }, await adminToken()),
  },
  {
    name: 'client token with an audience not accepted',
    status: 401,
    reason: 'token_audience_not_allowed',
    caller: 'unauthenticated',
    build: async (r) => asAdmin(r, { authorization: `Bearer ${await gateway({ aud: 'api://elsewhere' })}` }, await adminToken()),
  },
  {
    name: 'client not on the allowlist',
    status: 403,
    reason: 'client_not_allowed',
    caller: 'unauthenticated',
    build: async (r) =>
      asAdmin(
        r,
        { authorization: `Bearer ${await gateway({ oid: '0b5e0000-0000-4000-8000-00000000bad1' })}` },
        await adminToken(),
      ),
  },
  {
    name: 'no admin token',
    status: 401,
    reason: 'token_missing',
    caller: 'unauthenticated',
    instead: { rotate: { status: 400, reason: 'bad_request' } },
    build: async (r) => asAdmin(r, { authorization: `Bearer ${await gateway()}` }, undefined),
  },
  {
    name: 'admin token with an API audience',
    status: 401,
    reason: 'token_audience_not_allowed',
    caller: 'unauthenticated',
    build: async (r) =>
      asAdmin(r, { authorization: `Bearer ${await gateway()}` }, await adminToken({ aud: SANDBOX.subjectAudience })),
  },
  {
    name: 'admin token without the admin role',
    status: 403,
    reason: 'role_required',
    caller: 'authenticated',
    build: async (r) => asAdmin(r, { authorization: `Bearer ${await gateway()}` }, await adminToken({ roles: ['Orders.Read'] })),
  },
  {
    name: 'a repeated query parameter',
    status: 400,
    reason: 'bad_request',
    caller: 'unauthenticated',
    build: async (r) => {
      const o = await asAdmin(r, { authorization: `Bearer ${await gateway()}` }, await adminToken());
      return { ...o, url: `${o.url}?x=1&x=2` };
    },
  },
  {
    name: 'an unsupported media type',
    status: 415,
    reason: 'unsupported_media_type',
    bodyOnly: true,
    build: async (r) => {
      const o = await asAdmin(
        r,
        { authorization: `Bearer ${await gateway()}`, 'x-subject-token': await adminToken() },
        undefined,
      );
      return { ...o, body: undefined, form: undefined, raw: 'hello', headers: { ...o.headers, 'content-type': 'text/plain' } };
    },
  },
  {
    name: 'a body over the cap',
    status: 413,
    reason: 'payload_too_large',
    bodyOnly: true,
    build: async (r) => {
      const o = await asAdmin(
        r,
        { authorization: `Bearer ${await gateway()}`, 'x-subject-token': await adminToken() },
        undefined,
      );
      const type = r.body === 'form' ? 'application/x-www-form-urlencoded' : 'application/json';
      return {
        ...o,
        body: undefined,
        form: undefined,
        raw: `{"a":"${'x'.repeat(300 * 1024)}"}`,
        headers: { ...o.headers, 'content-type': type },
      };
    },
  },
  {
    name: 'a body that is not a JSON object',
    status: 400,
    reason: 'bad_request',
    bodyOnly: true,
    build: async (r) => {
      const o = await asAdmin(
        r,
        { authorization: `Bearer ${await gateway()}`, 'x-subject-token': await adminToken() },
        undefined,
      );
      return {
        ...o,
        body: undefined,
        form: undefined,
        raw: '[1,',
        headers: { ...o.headers, 'content-type': 'application/json' },
      };
    },
  },
  ...['*', 'W/"0x1"', '"a", "b"'].map((ifMatch): RefusalClass => ({
    name: `If-Match ${ifMatch}`,
    status: 400,
    reason: 'bad_request',
    only: 'PUT policy',
    caller: 'authenticated',
    build: async (r) => asAdmin(r, { authorization: `Bearer ${await gateway()}`, 'if-match': ifMatch }, await adminToken()),
  })),
  {
    name: 'no If-Match',
    status: 428,
    reason: 'precondition_required',
    only: 'PUT policy',
    caller: 'authenticated',
    build: async (r) => asAdmin(r, { authorization: `Bearer ${await gateway()}` }, await adminToken()),
  },
  {
    name: 'a stale If-Match',
    status: 412,
    reason: 'precondition_failed',
    only: 'PUT policy',
    caller: 'authenticated',
    build: async (r) =>
      asAdmin(r, { authorization: `Bearer ${await gateway()}`, 'if-match': '"0x8DEADBEEF"' }, await adminToken()),
  },
  {
    name: 'a schema-invalid policy',
    status: 400,
    reason: 'policy_invalid',
    only: 'PUT policy',
    caller: 'authenticated',
    build: async (r) => {
      const etag = (await policyBlob().getProperties()).etag!;
      const o = await asAdmin(r, { authorization: `Bearer ${await gateway()}`, 'if-match': etag }, await adminToken());
      return { ...o, body: { ...(o.body as object), rules: 'none' } };
    },
  },
  {
    name: 'a malformed deny id',
    status: 400,
    reason: 'invalid_parameter',
    only: 'DELETE deny',
    caller: 'authenticated',
    build: async (r) => {
      const o = await asAdmin(r, { authorization: `Bearer ${await gateway()}` }, await adminToken());
      return { ...o, url: api('admin/deny/..%2Fx'), params: { id: '../x' } };
    },
  },
  {
    name: 'an unknown deny id',
    status: 404,
    reason: 'not_found',
    only: 'DELETE deny',
    caller: 'authenticated',
    build: async (r) => asAdmin(r, { authorization: `Bearer ${await gateway()}` }, await adminToken()),
  },
  ...[
    ['an unknown field', { tenantId: SANDBOX.tenantId, objectId: SANDBOX.readerObjectId, reason: 'x', extra: 1 }],
    ['no reason', { tenantId: SANDBOX.tenantId, objectId: SANDBOX.readerObjectId }],
    ['a bad object id', { tenantId: SANDBOX.tenantId, objectId: 'not-a-guid', reason: 'x' }],
  ].map(([what, body]): RefusalClass => ({
    name: `a deny body with ${what as string}`,
    status: 400,
    reason: 'invalid_parameter',
    only: 'POST deny',
    caller: 'unauthenticated', // the body is judged before the admin's token (as every endpoint: shape first)
    build: async (r) => ({ ...(await asAdmin(r, { authorization: `Bearer ${await gateway()}` }, await adminToken())), body }),
  })),
  {
    name: 'a deny body with an unknown field on DELETE',
    status: 400,
    reason: 'invalid_parameter',
    only: 'DELETE deny',
    build: async (r) => ({
      ...(await asAdmin(r, { authorization: `Bearer ${await gateway()}` }, await adminToken())),
      body: { reason: 'x', why: 'y' },
    }),
  },
  {
    name: 'a bad snapshot',
    status: 400,
    reason: 'invalid_parameter',
    only: 'history',
    caller: 'authenticated',
    build: async (r) => {
      const o = await asAdmin(r, { authorization: `Bearer ${await gateway()}` }, await adminToken());
      return { ...o, url: `${o.url}?snapshot=yesterday` };
    },
  },
  {
    name: 'a bad dryRun',
    status: 400,
    reason: 'invalid_parameter',
    only: 'rotate',
    build: async (r) => {
      const o = await asAdmin(r, { authorization: `Bearer ${await gateway()}` }, await adminToken());
      return { ...o, url: `${o.url}?dryRun=maybe` };
    },
  },
];

let seq = 0;

/** One request with its own correlation id; its audit events (there must be exactly one). */
async function audited(r: Route, opts: CallOptions) {
  const cid = `audit-sweep-${++seq}-${Date.now()}`;
  const res = await invoke(r.handler, { ...opts, headers: { ...(opts.headers ?? {}), 'x-correlation-id': cid } });
  const events = logs.records.filter((l) => l.event === 'audit' && l.correlationId === cid);
  return { res, events, cid, path: new URL(opts.url!).pathname };
}

function expectOneEvent(
  r: Route,
  got: Awaited<ReturnType<typeof audited>>,
  expected: { status: number; reason: string; caller?: string },
) {
  expect(got.res.status).toBe(expected.status);
  expect(got.events).toHaveLength(1);
  const e = got.events[0]!;
  expect(e).toMatchObject({
    action: r.action,
    decision: expected.status < 400 ? 'grant' : 'deny',
    reason: expected.reason,
    method: r.method,
    status: expected.status,
    correlationId: got.cid,
  });
  expect(e.path).toBe(got.path);
  expect(String(e.path)).toMatch(/^\/api\/admin\//);
  if (expected.caller) expect(e.caller).toBe(expected.caller);
  if (e.caller === 'unauthenticated') {
    expect(e.subject).toBeUndefined(); // what its tokens claim is in `claimed` (see below), when they were read
  } else {
    expect(e.subject).toMatchObject({ objectId: ADMIN_OID, tenantId: SANDBOX.tenantId });
    expect(e.client).toMatchObject({ objectId: SANDBOX.gatewayObjectId });
  }
  // Never a token (nor a token's signature): only the claims named.
  expect(JSON.stringify(e)).not.toMatch(/eyJ[A-Za-z0-9_-]{10,}/);
}

describe('every admin request is audited exactly once', () => {
  const cases = ROUTES.flatMap((r) =>
    CLASSES.filter((c) => (c.only ? c.only === r.name : !c.bodyOnly || r.body)).map((c) => [r.name, c.name, r, c] as const),
  );

  test.each(cases)('%s × %s', async (_rn, _cn, r, c) => {
    const before = await policyBlob().getProperties();
    const got = await audited(r, await c.build(r));
    expectOneEvent(r, got, { ...c, ...(c.instead?.[r.name] ?? {}) });
    // A refused request changes nothing: the ETag and revision are those before it.
    const after = await policyBlob().getProperties();
    expect(after.etag).toBe(before.etag);
    expect(after.metadata?.revision).toBe(before.metadata?.revision);
  });

  test('the token claims of an unauthenticated caller are named, never the token', async () => {
    const r = ROUTES[0]!;
    const got = await audited(
      r,
      await asAdmin(r, { authorization: `Bearer ${await gateway({ aud: 'api://elsewhere' })}` }, await adminToken()),
    );
    const e = got.events[0]!;
    expect(e).toMatchObject({
      caller: 'unauthenticated',
      reason: 'token_audience_not_allowed',
      party: 'client',
      claimed: {
        client: { audience: 'api://elsewhere', objectId: SANDBOX.gatewayObjectId, tenantId: SANDBOX.tenantId },
        admin: { objectId: ADMIN_OID, audience: SANDBOX.clientAudience },
      },
    });
    expect((e.claimed as { client: { issuer: string } }).client.issuer).toContain(SANDBOX.tenantId);
  });

  test('grants: each once, naming the admin, with what was written', async () => {
    const h = { authorization: `Bearer ${await gateway()}` };
    const [get, put, history, add, remove] = [ROUTES[0]!, ROUTES[1]!, ROUTES[2]!, ROUTES[3]!, ROUTES[4]!];
    const g = await audited(get, await asAdmin(get, h, await adminToken()));
    expectOneEvent(get, g, { status: 200, reason: 'granted', caller: 'authenticated' });
    const etag = g.res.headers.get('etag')!;
    const p = await audited(put, await asAdmin(put, { ...h, 'if-match': etag }, await adminToken()));
    expectOneEvent(put, p, { status: 200, reason: 'written', caller: 'authenticated' });
    expect(p.events[0]).toMatchObject({ ifMatch: etag, etag: p.res.headers.get('etag') });
    expectOneEvent(history, await audited(history, await asAdmin(history, h, await adminToken())), {
      status: 200,
      reason: 'granted',
    });
    const a = await audited(add, await asAdmin(add, h, await adminToken()));
    expectOneEvent(add, a, { status: 201, reason: 'written', caller: 'authenticated' });
    const id = (a.res.json.entry as { id: string }).id;
    expect(a.events[0]).toMatchObject({ denyId: id, target: `${SANDBOX.tenantId}/0b5e0000-0000-4000-8000-00000000dead` });
    const rm = { ...remove, path: `admin/deny/${id}`, params: { id } };
    expectOneEvent(rm, await audited(rm, await asAdmin(rm, h, await adminToken())), { status: 200, reason: 'written' });
  });

  test('a deny write that loses every retry to other writers: one 412, one audit event', async () => {
    const write = jest
      .spyOn(BlobPolicyWriter.prototype, 'write')
      .mockRejectedValue(new BrokerError('precondition_failed', 'The policy was changed since it was read.'));
    try {
      const r = ROUTES[3]!;
      const before = await policyBlob().getProperties();
      const got = await audited(r, await asAdmin(r, { authorization: `Bearer ${await gateway()}` }, await adminToken()));
      expectOneEvent(r, got, { status: 412, reason: 'precondition_failed', caller: 'authenticated' });
      expect(write.mock.calls.length).toBeGreaterThan(1); // retried, then gave up
      expect((await policyBlob().getProperties()).etag).toBe(before.etag);
    } finally {
      write.mockRestore();
    }
  });
});

describe('policy history after lost races', () => {
  test('each kept version once, newest first', async () => {
    const h = { authorization: `Bearer ${await gateway()}` };
    const put = ROUTES[1]!;
    for (let round = 0; round < 3; round++) {
      const etag = (await policyBlob().getProperties()).etag!;
      const results = await Promise.all(
        [0, 1, 2].map(async () => invoke(put.handler, await asAdmin(put, { ...h, 'if-match': etag }, await adminToken()))),
      );
      expect(results.filter((x) => x.status === 200)).toHaveLength(1);
      expect(results.filter((x) => x.status === 412)).toHaveLength(2);
    }
    const history = ROUTES[2]!;
    const r = await invoke(history.handler, await asAdmin(history, h, await adminToken()));
    const versions = r.json.versions as { current: boolean; snapshot?: string; etag: string; revision: number }[];
    expect(versions[0]!.current).toBe(true);
    const etags = versions.map((v) => v.etag);
    expect(new Set(etags).size).toBe(etags.length);
    const revisions = versions.map((v) => v.revision);
    expect(new Set(revisions).size).toBe(revisions.length);
    expect([...revisions].sort((a, b) => b - a)).toEqual(revisions);
    const snaps = versions.filter((v) => v.snapshot).map((v) => v.snapshot!);
    expect([...snaps].sort().reverse()).toEqual(snaps);
  }, 60_000);
});
