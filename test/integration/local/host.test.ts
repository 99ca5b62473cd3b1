import { HttpResponse, type HttpRequest, type HttpResponseInit, type InvocationContext } from '@azure/functions';
import { startLocalHost, type LocalHost, type Registration } from '../../../local/host';
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

describe('what the local host hands a function and writes back (its own request, headers and context objects)', () => {
  const answers: Record<string, HttpResponseInit> = {
    json: { status: 201, jsonBody: { ok: true, n: [1, 2] } },
    jsonTyped: { jsonBody: { a: 'b' }, headers: { 'Content-Type': 'application/problem+json' } },
    text: { body: 'plain words' },
    textTyped: { body: '{"x":1}', headers: { 'content-type': 'application/json;charset=UTF-8', 'x-extra': 'y' } },
    empty: { status: 204, jsonBody: { dropped: true } },
    none: { status: 202 },
  };
  let seen: { req: HttpRequest; ctx: InvocationContext } | undefined;
  let fnHost: LocalHost;
  beforeAll(async () => {
    const registrations: Registration[] = [
      {
        name: 'echo',
        options: {
          route: 'echo/{id}',
          methods: ['POST'],
          authLevel: 'anonymous',
          handler: (req, ctx) => {
            seen = { req, ctx };
            return Promise.resolve(answers[req.params.id!] ?? { status: 500 });
          },
        },
      },
    ];
    fnHost = await startLocalHost({ app: testContext(), registrations });
  });
  afterAll(() => fnHost.close());

  test('every answer is written as HttpResponse would write it (JSON and text bodies, default content types, no body for 204)', async () => {
    for (const [id, init] of Object.entries(answers)) {
      const expected = new HttpResponse(init);
      const res = await fetch(`${fnHost.url}/echo/${id}`, { method: 'POST', body: 'x' });
      expect([id, res.status, res.headers.get('content-type'), await res.text()]).toEqual([
        id,
        expected.status,
        expected.headers.get('content-type'),
        await expected.text(),
      ]);
      if (init.headers && 'x-extra' in init.headers) expect(res.headers.get('x-extra')).toBe('y');
    }
  });

  test('the request: headers (case-insensitive, repeated ones joined, name order), query, params, body; the context', async () => {
    const res = await fetch(`${fnHost.url}/echo/json?b=2&a=%20x`, {
      method: 'POST',
      headers: [
        ['X-Two', 'one'],
        ['x-two', 'two'],
        ['Content-Type', 'text/plain'],
      ],
      body: 'the body',
    });
    expect(res.status).toBe(201);
    const { req, ctx } = seen!;
    expect(req.headers.get('X-TWO')).toBe('one, two');
    expect(req.headers.has('content-type')).toBe(true);
    expect(req.headers.get('absent')).toBeNull();
    const names: string[] = [];
    req.headers.forEach((_v, k) => names.push(k));
    expect(names).toEqual([...names].sort());
    expect(names).toEqual(expect.arrayContaining(['x-two', 'content-type', 'host']));
    expect([...req.query]).toEqual([
      ['b', '2'],
      ['a', ' x'],
    ]);
    expect(req.params).toEqual({ id: 'json' });
    expect(req.method).toBe('POST');
    expect(await req.text()).toBe('the body');
    expect((await req.clone().text()).toString()).toBe('the body');
    expect(() => req.headers.set('x', 'y')).toThrow(TypeError);
    expect(ctx.functionName).toBe('echo');
    expect(ctx.invocationId).toMatch(/^[0-9a-f-]{36}$/);
    ctx.extraOutputs.set('out', 1);
    expect(ctx.extraOutputs.get('out')).toBe(1);
  });
});
