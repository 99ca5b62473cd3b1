import { startLocalHost, type LocalHost } from '../../../local/host';
import { CLOUDSQL_RESOURCE, startFixture, type Fixture } from '../../helpers/foundation';
import { testContext } from '../../helpers/app';

let fx: Fixture;
let host: LocalHost;
beforeAll(async () => {
  fx = await startFixture();
  host = await startLocalHost({ app: testContext() });
});
afterAll(async () => {
  await host.close();
  await fx.stop();
});

describe('the local host serves the same routes as func start', () => {
  test('GET /api/health: ready with a status per dependency', async () => {
    const res = await fetch(`${host.url}/health`);
    expect(res.status).toBe(200);
    const body = (await res.json()) as { ready: boolean; checks: Record<string, { status: string }> };
    expect(body.ready).toBe(true);
    expect(body.checks.config?.status).toBe('ok');
    expect(body.checks.jwks?.status).toBe('ok');
    expect(body.checks.policy?.status).toBe('ok');
    expect(res.headers.get('x-correlation-id')).toBeTruthy();
  });

  test('POST /api/policy/explain over HTTP (form-encoded, as curl sends it)', async () => {
    const res = await fetch(`${host.url}/policy/explain`, {
      method: 'POST',
      headers: { authorization: `Bearer ${await fx.gateway()}`, 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ subject_token: await fx.caller(), resource: CLOUDSQL_RESOURCE }),
    });
    expect(res.status).toBe(200);
    expect(await res.json()).toMatchObject({ decision: 'grant', ruleId: 'orders-readers' });
  });

  test('explain says why nothing matched', async () => {
    const res = await fetch(`${host.url}/policy/explain`, {
      method: 'POST',
      headers: { authorization: `Bearer ${await fx.gateway()}`, 'content-type': 'application/json' },
      body: JSON.stringify({ subject_token: await fx.caller({ roles: [] }), resource: CLOUDSQL_RESOURCE }),
    });
    const body = (await res.json()) as { decision: string; reason: string; trace: { ruleId: string; why: string }[] };
    expect(res.status).toBe(200);
    expect(body.decision).toBe('deny');
    expect(body.reason).toBe('not_granted');
    expect(body.trace.map((t) => t.ruleId)).toEqual([
      'orders-readers',
      'orders-analysts',
      'ticket-owners',
      'people',
      'sandbox-partner-certificates',
    ]);
    expect(body.trace[0]!.why).toContain('Orders.Read');
  });

  test('unknown route 404 and wrong method 405, as problem+json', async () => {
    const nf = await fetch(`${host.url}/nope`);
    expect(nf.status).toBe(404);
    expect(nf.headers.get('content-type')).toBe('application/problem+json');
    const wm = await fetch(`${host.url}/token`, { method: 'GET' });
    expect(wm.status).toBe(405);
  });

  test('readiness fails with 503 and names the dependency when the identity provider is down', async () => {
    const prev = process.env.ENTRA_AUTHORITY_HOST;
    process.env.ENTRA_AUTHORITY_HOST = 'http://127.0.0.1:9'; // nothing listens on the discard port
    try {
      const res = await fetch(`${host.url}/health`);
      expect(res.status).toBe(503);
      expect(res.headers.get('retry-after')).toBeTruthy();
      const body = (await res.json()) as { checks: Record<string, { status: string }> };
      expect(body.checks.jwks?.status).toBe('fail');
      expect((await fetch(`${host.url}/health?probe=live`)).status).toBe(200);
    } finally {
      process.env.ENTRA_AUTHORITY_HOST = prev;
    }
  });
});
