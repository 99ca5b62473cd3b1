import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { get as httpsGet } from 'node:https';
import { createServer, type Server, type Socket } from 'node:net';
import { join } from 'node:path';
import { startSandbox, type Sandbox } from '../../../local/sandbox';
import { SANDBOX } from '../../../local/ids';

import { BlobPolicySource } from '../../../shared/policy/blob-store';
import { PolicyStore } from '../../../shared/policy/store';
import { policyConfig } from '../../../shared/config/policy';
import { captureLogs, invoke } from '../../helpers/invoke';
import { CLOUDSQL_RESOURCE } from '../../helpers/foundation';
import { ContractValidator } from '../../helpers/openapi';
import type { HttpHandler } from '@azure/functions';
import { TestApp } from '../../helpers/app';

const testApp = new TestApp();
const policyHandler = testApp.handler('adminPolicy');
const historyHandler = testApp.handler('adminPolicyHistory');
const denyHandler = testApp.handler('adminDeny');
const denyRemoveHandler = testApp.handler('adminDenyRemove');
const explainHandler = testApp.handler('explain');
const healthHandler = testApp.handler('health');

const contract = new ContractValidator();
const ROUTES = new Map<HttpHandler, string>();

/** Every admin answer of this file is also validated against openapi.yaml. */
async function call(handler: HttpHandler, opts: Parameters<typeof invoke>[1] & { method?: string; url: string }) {
  const r = await invoke(handler, opts);
  const path = ROUTES.get(handler)!;
  expect(contract.check(path, opts.method ?? 'POST', r)).toEqual([]);
  return r;
}

/**
 * The live policy on Blob Storage (Azurite, HTTPS, the broker's managed identity), end to end: a deny written through
 * the admin API on one broker instance is effective on a second instance (another process) within the refresh
 * interval; concurrent PUTs with one ETag: one wins, one 412; an invalid PUT changes nothing; the store down: the
 * last good policy for the bounded time, then 503, never allow.
 */

const REFRESH_SECONDS = 1;
const MAX_STALE_SECONDS = 3;
let sb: Sandbox;
let restoreEnv: () => void;
let logs: ReturnType<typeof captureLogs>;
let second: { child: ChildProcess; url: string } | undefined;

const root = join(__dirname, '..', '..', '..');
const gateway = () =>
  sb.entra.mint({ oid: SANDBOX.gatewayObjectId, appId: SANDBOX.gatewayAppId, aud: SANDBOX.clientAudience, version: '1.0' });
const adminToken = (oid = '0b5e0000-0000-4000-8000-0000000ad111') =>
  sb.entra.mint({ oid, aud: SANDBOX.clientAudience, roles: [SANDBOX.adminRole] });
const caller = () => sb.entra.mint({ oid: SANDBOX.readerObjectId, aud: SANDBOX.subjectAudience, roles: ['Orders.Read'] });
const adminHeaders = async (extra: Record<string, string> = {}) => ({
  authorization: `Bearer ${await gateway()}`,
  'x-subject-token': await adminToken(),
  ...extra,
});
const api = (path: string) => `http://127.0.0.1:7071/api/${path}`;
const policyBlob = () =>
  sb.storage!.admin().getContainerClient(SANDBOX.storage.container).getBlockBlobClient(SANDBOX.storage.policyBlob);

async function getPolicy() {
  return call(policyHandler, { method: 'GET', url: api('admin/policy'), headers: await adminHeaders() });
}

/** A second broker instance: the compiled app in its own process (its own policy cache), on the same settings. */
async function startSecondInstance(): Promise<{ child: ChildProcess; url: string }> {
  const host = join(root, 'dist', 'local', 'host.js');
  if (!existsSync(host)) throw new Error('build first (npx tsc -p tsconfig.json): dist/local/host.js is missing');
  const child = spawn(
    process.execPath,
    ['-e', `require(${JSON.stringify(host)}).startLocalHost({ port: 0 }).then((h) => console.error('URL ' + h.url))`],
    {
      env: { ...process.env, ...sb.env, LOG_LEVEL: 'error' },
      stdio: ['ignore', 'ignore', 'pipe'],
    },
  );
  const url = await new Promise<string>((resolve, reject) => {
    let err = '';
    const t = setTimeout(() => reject(new Error(`second instance did not start: ${err}`)), 20_000);
    child.stderr.on('data', (b: Buffer) => {
      err += b.toString();
      const m = /URL (\S+)/.exec(err);
      if (m) {
        clearTimeout(t);
        resolve(m[1]!);
      }
    });
    child.once('exit', (c) => reject(new Error(`second instance exited ${c}: ${err}`)));
  });
  return { child, url };
}

async function explainOnSecond(): Promise<{ decision: string; reason: string }> {
  const res = await fetch(`${second!.url}/policy/explain`, {
    method: 'POST',
    headers: { authorization: `Bearer ${await gateway()}`, 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ subject_token: await caller(), resource: CLOUDSQL_RESOURCE }).toString(),
  });
  expect(res.status).toBe(200);
  return (await res.json()) as { decision: string; reason: string };
}

beforeAll(async () => {
  ROUTES.set(policyHandler, '/admin/policy')
    .set(historyHandler, '/admin/policy/history')
    .set(denyHandler, '/admin/deny')
    .set(denyRemoveHandler, '/admin/deny/{id}');
  logs = captureLogs();
  sb = await startSandbox({
    storage: true,
    env: {
      BROKER_JWKS_COOLDOWN_SECONDS: '0',
      BROKER_POLICY_REFRESH_SECONDS: String(REFRESH_SECONDS),
      BROKER_POLICY_MAX_STALE_SECONDS: String(MAX_STALE_SECONDS),
    },
  });
  restoreEnv = sb.applyEnv();
  testApp.renew();
  second = await startSecondInstance();
}, 60_000);

afterAll(async () => {
  second?.child.kill('SIGKILL');
  logs?.restore();
  restoreEnv?.();
  testApp.renew();
  await sb?.stop();
});

describe('live policy on Blob Storage', () => {
  test('GET /api/admin/policy: the document, its ETag (header and body) and revision; the store refuses anonymous access', async () => {
    const r = await getPolicy();
    expect(r.status).toBe(200);
    expect(r.json).toMatchObject({ source: 'blob', revision: 1, stale: false });
    expect(r.headers.get('etag')).toBe(r.json.etag);
    expect((r.json.policy as { rules: unknown[] }).rules.length).toBeGreaterThan(0);
    // Azurite in OAuth mode: no bearer token, no access (the broker's reads above carried its managed identity's).
    const anon = await new Promise<number>((resolve, reject) =>
      httpsGet(sb.storage!.policyBlobUrl, { ca: sb.storage!.caPem, headers: { 'x-ms-version': '2021-10-04' } }, (res) => {
        res.resume();
        resolve(res.statusCode ?? 0);
      }).on('error', reject),
    );
    expect([401, 403, 404]).toContain(anon);
  });

  test('a deny written on this instance is effective on a second instance within the refresh interval; lifting it restores access', async () => {
    expect((await explainOnSecond()).decision).toBe('grant');
    const added = await call(denyHandler, {
      url: api('admin/deny'),
      headers: await adminHeaders(),
      body: { tenantId: SANDBOX.tenantId, objectId: SANDBOX.readerObjectId, reason: 'incident 42: credentials leaked' },
    });
    expect(added.status).toBe(201);
    const entry = added.json.entry as { id: string; createdBy: string };
    expect(entry.id).toMatch(/^deny-/);
    expect(entry.createdBy).toBe(`${SANDBOX.tenantId}/0b5e0000-0000-4000-8000-0000000ad111`);
    const written = Date.now();
    // This instance: at once.
    const here = await invoke(explainHandler, {
      url: api('policy/explain'),
      headers: { authorization: `Bearer ${await gateway()}` },
      form: { subject_token: await caller(), resource: CLOUDSQL_RESOURCE },
    });
    expect(here.json).toMatchObject({ decision: 'deny', reason: 'subject_denied' });
    // The other instance: within the interval (plus the time of one request).
    let d = await explainOnSecond();
    while (d.decision !== 'deny' && Date.now() - written < (REFRESH_SECONDS + 2) * 1000) {
      await new Promise((r) => setTimeout(r, 100));
      d = await explainOnSecond();
    }
    expect(d).toMatchObject({ decision: 'deny', reason: 'subject_denied' });
    expect(Date.now() - written).toBeLessThanOrEqual((REFRESH_SECONDS + 1.5) * 1000);
    expect(
      logs.records.some(
        (l) => l.event === 'audit' && l.action === 'policy.deny.add' && l.decision === 'grant' && l.denyId === entry.id,
      ),
    ).toBe(true);

    const removed = await call(denyRemoveHandler, {
      method: 'DELETE',
      url: api(`admin/deny/${entry.id}`),
      params: { id: entry.id },
      headers: await adminHeaders(),
      body: { reason: 'keys rotated' },
    });
    expect(removed.status).toBe(200);
    expect((removed.json.removed as { id: string }).id).toBe(entry.id);
    const again = await call(denyRemoveHandler, {
      method: 'DELETE',
      url: api(`admin/deny/${entry.id}`),
      params: { id: entry.id },
      headers: await adminHeaders(),
    });
    expect(again.status).toBe(404);
    const lifted = Date.now();
    d = await explainOnSecond();
    while (d.decision !== 'grant' && Date.now() - lifted < (REFRESH_SECONDS + 2) * 1000) {
      await new Promise((r) => setTimeout(r, 100));
      d = await explainOnSecond();
    }
    expect(d.decision).toBe('grant');
  });

  test('a deny entry past its expiresAt no longer applies; bad deny requests are 400 naming the field', async () => {
    const h = await adminHeaders();
    const bad = [
      [{ tenantId: SANDBOX.tenantId, objectId: 'not-a-guid', reason: 'x' }, 'objectId'],
      [{ tenantId: SANDBOX.tenantId, objectId: SANDBOX.readerObjectId }, 'reason'],
      [
        { tenantId: SANDBOX.tenantId, objectId: SANDBOX.readerObjectId, reason: 'x', expiresAt: '2020-01-01T00:00:00Z' },
        'expiresAt',
      ],
      [{ tenantId: SANDBOX.tenantId, objectId: SANDBOX.readerObjectId, reason: 'x', extra: 1 }, 'extra'],
    ] as const;
    for (const [body, parameter] of bad) {
      const r = await call(denyHandler, { url: api('admin/deny'), headers: h, body });
      expect(r.status).toBe(400);
      expect(r.json.parameter).toBe(parameter);
    }
    const soon = new Date(Date.now() + 1500).toISOString();
    const added = await call(denyHandler, {
      url: api('admin/deny'),
      headers: h,
      body: { tenantId: SANDBOX.tenantId, objectId: SANDBOX.readerObjectId, reason: 'short block', expiresAt: soon },
    });
    expect(added.status).toBe(201);
    const ex = async () =>
      (
        await invoke(explainHandler, {
          url: api('policy/explain'),
          headers: { authorization: `Bearer ${await gateway()}` },
          form: { subject_token: await caller(), resource: CLOUDSQL_RESOURCE },
        })
      ).json.decision;
    expect(await ex()).toBe('deny');
    await new Promise((r) => setTimeout(r, 1700));
    expect(await ex()).toBe('grant');
  });

  test('concurrent PUTs with the same ETag: exactly one wins, the other is 412; the replaced version is kept in the history', async () => {
    const cur = await getPolicy();
    const etag = cur.json.etag as string;
    const doc = cur.json.policy as { rules: { description?: string }[] };
    const put = async (description: string) =>
      call(policyHandler, {
        method: 'PUT',
        url: api('admin/policy'),
        headers: await adminHeaders({ 'if-match': etag }),
        body: { ...doc, rules: doc.rules.map((r, i) => (i === 0 ? { ...r, description } : r)) },
      });
    const [a, b] = await Promise.all([put('writer A'), put('writer B')]);
    expect([a.status, b.status].sort()).toEqual([200, 412]);
    const winner = a.status === 200 ? 'writer A' : 'writer B';
    const loser = a.status === 200 ? b : a;
    expect(loser.json.code).toBe('precondition_failed');
    const after = await getPolicy();
    expect((after.json.policy as { rules: { description?: string }[] }).rules[0]!.description).toBe(winner);
    expect(after.json.revision).toBe((cur.json.revision as number) + 1);
    // A stale If-Match is 412 too; no If-Match is 428.
    expect((await put('late')).status).toBe(412);
    const none = await call(policyHandler, { method: 'PUT', url: api('admin/policy'), headers: await adminHeaders(), body: doc });
    expect(none.status).toBe(428);
    const hist = await call(historyHandler, { method: 'GET', url: api('admin/policy/history'), headers: await adminHeaders() });
    expect(hist.status).toBe(200);
    const versions = hist.json.versions as {
      current: boolean;
      snapshot?: string;
      etag?: string;
      revision?: number;
      updatedBy?: string;
      change?: string;
    }[];
    expect(versions[0]).toMatchObject({
      current: true,
      revision: after.json.revision,
      change: 'put',
      updatedBy: `${SANDBOX.tenantId}/0b5e0000-0000-4000-8000-0000000ad111`,
    });
    const kept = versions.find((v) => v.snapshot && v.revision === cur.json.revision);
    expect(kept).toBeDefined();
    const old = await call(historyHandler, {
      method: 'GET',
      url: api(`admin/policy/history?snapshot=${encodeURIComponent(kept!.snapshot!)}`),
      headers: await adminHeaders(),
    });
    expect(old.status).toBe(200);
    expect(old.json.policy).toEqual(cur.json.policy);
  });

  test('an invalid PUT changes nothing: 400 naming the path (schema), the duplicate member (strict JSON)', async () => {
    const cur = await getPolicy();
    const etag = cur.json.etag as string;
    const before = await policyBlob().getProperties();
    const doc = cur.json.policy as { rules: { grants: { cloudsql: { serviceAccount: string }[] } }[] };
    const broken = JSON.parse(JSON.stringify(doc)) as typeof doc;
    broken.rules[0]!.grants.cloudsql[0]!.serviceAccount = 'not-an-email';
    const r = await call(policyHandler, {
      method: 'PUT',
      url: api('admin/policy'),
      headers: await adminHeaders({ 'if-match': etag }),
      body: broken,
    });
    expect(r.status).toBe(400);
    expect(r.json).toMatchObject({ code: 'policy_invalid', path: 'rules[0].grants.cloudsql[0].serviceAccount' });
    const dup = await call(policyHandler, {
      method: 'PUT',
      url: api('admin/policy'),
      headers: await adminHeaders({ 'if-match': etag, 'content-type': 'application/json' }),
      raw: '{"version":1,"rules":[],"version":1}',
    });
    expect(dup.status).toBe(400);
    expect(dup.json.parameter).toBe('version');
    const after = await policyBlob().getProperties();
    expect(after.etag).toBe(before.etag);
    expect((await getPolicy()).json.etag).toBe(etag);
    expect(
      logs.records.some(
        (l) => l.event === 'audit' && l.action === 'policy.write' && l.decision === 'deny' && l.reason === 'policy_invalid',
      ),
    ).toBe(true);
  });

  test('the admin API refuses callers without the admin role, with an API audience, or on the deny list', async () => {
    const g = await gateway();
    const noRole = await sb.entra.mint({ oid: SANDBOX.readerObjectId, aud: SANDBOX.clientAudience, roles: ['Orders.Read'] });
    expect(
      (
        await call(policyHandler, {
          method: 'GET',
          url: api('admin/policy'),
          headers: { authorization: `Bearer ${g}`, 'x-subject-token': noRole },
        })
      ).json.code,
    ).toBe('role_required');
    const apiAud = await sb.entra.mint({ oid: SANDBOX.readerObjectId, aud: SANDBOX.subjectAudience, roles: [SANDBOX.adminRole] });
    expect(
      (
        await call(policyHandler, {
          method: 'GET',
          url: api('admin/policy'),
          headers: { authorization: `Bearer ${g}`, 'x-subject-token': apiAud },
        })
      ).status,
    ).toBe(401);
    // An admin denies a fellow admin: from then on that admin can do nothing, not even lift it.
    const other = '0b5e0000-0000-4000-8000-0000000ad222';
    const added = await call(denyHandler, {
      url: api('admin/deny'),
      headers: await adminHeaders(),
      body: { tenantId: SANDBOX.tenantId, objectId: other, reason: 'compromised admin' },
    });
    expect(added.status).toBe(201);
    const id = (added.json.entry as { id: string }).id;
    const asOther = { authorization: `Bearer ${g}`, 'x-subject-token': await adminToken(other) };
    const r = await call(denyRemoveHandler, { method: 'DELETE', url: api(`admin/deny/${id}`), params: { id }, headers: asOther });
    expect(r.status).toBe(403);
    expect(r.json.code).toBe('subject_denied');
    expect((await call(policyHandler, { method: 'GET', url: api('admin/policy'), headers: asOther })).json.code).toBe(
      'subject_denied',
    );
    expect(
      (
        await call(denyRemoveHandler, {
          method: 'DELETE',
          url: api(`admin/deny/${id}`),
          params: { id },
          headers: await adminHeaders(),
        })
      ).status,
    ).toBe(200);
  });

  test('health shows the policy version and its age', async () => {
    const r = await invoke(healthHandler, { method: 'GET', url: api('health') });
    const policy = (r.json.checks as Record<string, { status: string; info?: Record<string, unknown> }>).policy!;
    expect(policy.status).toBe('ok');
    expect(policy.info).toMatchObject({ source: 'blob', stale: false });
    expect(typeof policy.info!.revision).toBe('number');
    expect(typeof policy.info!.etag).toBe('string');
    expect(policy.info!.ageSeconds).toBeGreaterThanOrEqual(0);
    expect(policy.info!.confirmedSecondsAgo).toBeLessThanOrEqual(REFRESH_SECONDS + 1);
  });

  test('a stalled store: each read gives up at its deadline, and the last good policy is served meanwhile', async () => {
    const sockets: Socket[] = [];
    const hung: Server = createServer((s) => sockets.push(s)); // accepts, never answers (not even the TLS handshake)
    await new Promise<void>((r) => hung.listen(0, '127.0.0.1', () => r()));
    const port = (hung.address() as { port: number }).port;
    try {
      const cfg = { ...policyConfig.get(0), storageTimeoutMs: 300 };
      const good = new PolicyStore(new BlobPolicySource({ ...cfg, url: sb.storage!.policyBlobUrl }), {
        refreshMs: 0,
        maxStaleMs: 60_000,
      });
      await good.current();
      // Point the same store's source at the hung server: swap the source under a store with a live last-good.
      const stalled = new BlobPolicySource({ ...cfg, url: `https://127.0.0.1:${port}/devstoreaccount1/policy/policy.json` });
      const store = new PolicyStore(
        { kind: 'blob', location: 'x', read: (etag) => (etag ? stalled.read(etag) : good.source.read(undefined)) },
        { refreshMs: 0, maxStaleMs: 60_000 },
      );
      await store.current(); // first read: the real store
      const t0 = Date.now();
      const v = await store.current(); // second read: hangs, deadline, last good
      expect(Date.now() - t0).toBeLessThan(2000);
      expect(v.policy.rules.length).toBeGreaterThan(0);
      expect(store.state()).toMatchObject({ failing: true });
    } finally {
      for (const s of sockets) s.destroy();
      await new Promise<void>((r) => hung.close(() => r()));
    }
  });

  // Last: it stops the store.
  test('the store down: the last good policy for BROKER_POLICY_MAX_STALE_SECONDS, then 503 policy_unavailable (never allow)', async () => {
    const explain = async () =>
      invoke(explainHandler, {
        url: api('policy/explain'),
        headers: { authorization: `Bearer ${await gateway()}` },
        form: { subject_token: await caller(), resource: CLOUDSQL_RESOURCE },
      });
    expect((await explain()).json.decision).toBe('grant');
    await sb.storage!.stop();
    const down = Date.now();
    // Within the bound: still the last good policy (its grants and its deny list).
    await new Promise((r) => setTimeout(r, (REFRESH_SECONDS + 0.2) * 1000));
    const stale = await explain();
    expect(stale.status).toBe(200);
    expect(stale.json.decision).toBe('grant');
    const h = await invoke(healthHandler, { method: 'GET', url: api('health') });
    expect((h.json.checks as Record<string, { info?: Record<string, unknown> }>).policy!.info).toMatchObject({ stale: true });
    expect(logs.records.some((l) => l.event === 'policy.read-failed')).toBe(true);
    // Past it: 503 with Retry-After, on every endpoint that decides.
    await new Promise((r) => setTimeout(r, Math.max(0, MAX_STALE_SECONDS * 1000 + 600 - (Date.now() - down))));
    const gone = await explain();
    expect(gone.status).toBe(503);
    expect(gone.json.code).toBe('policy_unavailable');
    expect(Number(gone.headers.get('retry-after'))).toBeGreaterThan(0);
    const admin = await getPolicy();
    expect(admin.status).toBe(503);
    const health = await invoke(healthHandler, { method: 'GET', url: api('health') });
    expect(health.status).toBe(503);
    expect((health.json.checks as Record<string, { status: string }>).policy!.status).toBe('fail');
  }, 20_000);
});

test('coverage: every admin policy operation was answered, and validated against openapi.yaml', () => {
  const seen = (op: string) => new Set(contract.checked.filter((c) => c.operationId === op).map((c) => c.status));
  expect([...seen('getPolicy')]).toEqual(expect.arrayContaining([200, 401, 403, 503]));
  expect([...seen('putPolicy')]).toEqual(expect.arrayContaining([200, 400, 412, 428]));
  expect([...seen('addDeny')]).toEqual(expect.arrayContaining([201, 400]));
  expect([...seen('removeDeny')]).toEqual(expect.arrayContaining([200, 403, 404]));
  expect([...seen('getPolicyHistory')]).toEqual(expect.arrayContaining([200]));
});
