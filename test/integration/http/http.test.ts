import { invoke } from '../../helpers/invoke';
import { ACCESS_TOKEN_TYPE, CLOUDSQL_RESOURCE, TOKEN_EXCHANGE, startFixture, type Fixture } from '../../helpers/foundation';
import { redact, redactString } from '../../../shared/observability/log';
import { BrokerError } from '../../../shared/errors';
import { errorResponse } from '../../../shared/http/responses';
import { TestApp } from '../../helpers/app';

const testApp = new TestApp();
const explain = testApp.handler('explain');
const token = testApp.handler('token');
const health = testApp.handler('health');

let fx: Fixture;
beforeAll(async () => {
  fx = await startFixture();
});
afterAll(() => fx.stop());

async function exchange(form: Record<string, string>, headers: Record<string, string> = {}) {
  return invoke(token, { headers: { authorization: `Bearer ${await fx.gateway()}`, ...headers }, form });
}

describe('correlation ids', () => {
  test('taken from x-correlation-id when well-formed', async () => {
    const res = await invoke(health, {
      method: 'GET',
      url: 'http://h/api/health?probe=live',
      headers: { 'x-correlation-id': 'apim-req-12345678' },
    });
    expect(res.headers.get('x-correlation-id')).toBe('apim-req-12345678');
  });
  test('else from traceparent', async () => {
    const res = await invoke(health, {
      method: 'GET',
      url: 'http://h/api/health?probe=live',
      headers: {
        traceparent: '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01',
        'x-correlation-id': 'bad id with spaces',
      },
    });
    expect(res.headers.get('x-correlation-id')).toBe('4bf92f3577b34da6a3ce929d0e0e4736');
  });
  test('else the trace id of the trace the broker starts, and present on errors too', async () => {
    const res = await invoke(token, { form: {} });
    expect(res.headers.get('x-correlation-id')).toMatch(/^[0-9a-f]{32}$/);
    expect(res.headers.get('traceparent')?.split('-')[1]).toBe(res.headers.get('x-correlation-id'));
    expect(res.json.correlation_id).toBe(res.headers.get('x-correlation-id'));
  });
});

describe('token endpoint request validation (RFC 6749 §5.2 errors)', () => {
  const base = async () => ({
    grant_type: TOKEN_EXCHANGE,
    subject_token_type: ACCESS_TOKEN_TYPE,
    subject_token: await fx.caller(),
    resource: CLOUDSQL_RESOURCE,
  });

  test.each([
    ['grant_type', 'invalid_request'],
    ['subject_token', 'invalid_request'],
    ['subject_token_type', 'invalid_request'],
    ['resource', 'invalid_request'],
  ])('missing %s: 400 %s naming it', async (name, error) => {
    const form = await base();
    delete (form as Record<string, string>)[name];
    const res = await exchange(form);
    expect(res.status).toBe(400);
    expect(res.json.error).toBe(error);
    expect(res.json.parameter).toBe(name);
  });

  test('wrong grant type: unsupported_grant_type', async () => {
    const res = await exchange({ ...(await base()), grant_type: 'client_credentials' });
    expect(res.status).toBe(400);
    expect(res.json.error).toBe('unsupported_grant_type');
  });

  test('wrong subject token type, actor token, scope, bad lifetime', async () => {
    expect(
      (await exchange({ ...(await base()), subject_token_type: 'urn:ietf:params:oauth:token-type:saml2' })).json.reason,
    ).toBe('unsupported_token_type');
    expect((await exchange({ ...(await base()), actor_token: 'x', actor_token_type: ACCESS_TOKEN_TYPE })).status).toBe(400);
    const scoped = await exchange({ ...(await base()), scope: 'https://www.googleapis.com/auth/cloud-platform' });
    expect(scoped.json.error).toBe('invalid_scope');
    for (const bad of ['0', '-5', 'abc', '999999999']) {
      const res = await exchange({ ...(await base()), requested_lifetime: bad });
      expect(res.status).toBe(400);
      expect(res.json.parameter).toBe('requested_lifetime');
    }
  });

  test('malformed resource: invalid_target', async () => {
    const res = await exchange({ ...(await base()), resource: 'cloudsql://nope' });
    expect(res.status).toBe(400);
    expect(res.json.error).toBe('invalid_target');
  });

  test('repeated form parameters are refused (RFC 6749 §3.2)', async () => {
    const gw = await fx.gateway();
    const res = await invoke(token, {
      headers: { authorization: `Bearer ${gw}`, 'content-type': 'application/x-www-form-urlencoded' },
      raw: `grant_type=${encodeURIComponent(TOKEN_EXCHANGE)}&resource=a&resource=b`,
    });
    expect(res.status).toBe(400);
    expect(res.json.parameter).toBe('resource');
  });

  test('JSON bodies are accepted; non-object JSON, non-string values, broken JSON and other media types are not', async () => {
    const gw = { authorization: `Bearer ${await fx.gateway()}` };
    const ok = await invoke(token, { headers: gw, body: { ...(await base()), resource: 'cloudsql://nope' } });
    expect(ok.json.error).toBe('invalid_target'); // parsed far enough to judge the resource
    expect((await invoke(token, { headers: gw, body: [1, 2] })).status).toBe(400);
    expect((await invoke(token, { headers: gw, body: { grant_type: { x: 1 } } })).json.parameter).toBe('grant_type');
    expect((await invoke(token, { headers: { ...gw, 'content-type': 'application/json' }, raw: '{"a":' })).status).toBe(400);
    expect((await invoke(token, { headers: { ...gw, 'content-type': 'text/plain' }, raw: 'hello' })).status).toBe(415);
  });

  test('an oversized body is 413', async () => {
    const res = await exchange({ ...(await base()), pad: 'x'.repeat(70 * 1024) });
    expect(res.status).toBe(413);
  });

  test('token responses are never cacheable', async () => {
    const res = await exchange(await base());
    expect(res.headers.get('cache-control')).toBe('no-store');
  });

  test('a missing policy file is a 503 naming the setting, not a 500', async () => {
    const prev = process.env.BROKER_POLICY_PATH;
    process.env.BROKER_POLICY_PATH = '/nonexistent/policy.json';
    try {
      const res = await invoke(explain, {
        headers: { authorization: `Bearer ${await fx.gateway()}` },
        form: { subject_token: await fx.caller(), resource: CLOUDSQL_RESOURCE },
      });
      expect(res.status).toBe(503);
      expect(res.json.code).toBe('config_invalid');
      expect(String(res.json.detail)).toContain('BROKER_POLICY_PATH');
    } finally {
      process.env.BROKER_POLICY_PATH = prev;
    }
  });

  test('missing settings are a 503 naming each setting', async () => {
    const prev = process.env.BROKER_SUBJECT_AUDIENCES;
    delete process.env.BROKER_SUBJECT_AUDIENCES;
    try {
      const res = await exchange(await base());
      expect(res.status).toBe(503);
      expect(res.json.error_description).toContain('BROKER_SUBJECT_AUDIENCES is required');
      expect(res.headers.get('retry-after')).toBeTruthy();
    } finally {
      process.env.BROKER_SUBJECT_AUDIENCES = prev;
    }
  });
});

describe('problem+json and error mapping', () => {
  test('problem responses follow RFC 9457', () => {
    const res = errorResponse(new BrokerError('not_found', 'No such query.'), 'problem', 'cid-12345678');
    expect(res.status).toBe(404);
    expect((res.headers as Record<string, string>)['content-type']).toBe('application/problem+json');
    expect(JSON.parse(res.body as string)).toEqual({
      type: 'urn:token-broker:problem:not_found',
      title: 'Not found',
      status: 404,
      detail: 'No such query.',
      code: 'not_found',
      correlationId: 'cid-12345678',
    });
  });

  test('an unexpected exception is a 500 internal with a generic message (the only 500)', async () => {
    const { httpHandler } = await import('../../../shared/http/handler');
    const h = httpHandler(testApp.app, 'boom', 'problem', async () => {
      throw new Error('secret detail eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln');
    });
    const res = await invoke(h, {});
    expect(res.status).toBe(500);
    expect(res.text).not.toContain('secret detail');
  });

  test('503s carry Retry-After', () => {
    const res = errorResponse(new BrokerError('upstream_unavailable', 'x'), 'oauth', 'c-12345678');
    expect((res.headers as Record<string, string>)['retry-after']).toBe('5');
  });
});

describe('log redaction', () => {
  test('sensitive keys and token-shaped strings are masked', () => {
    const out = JSON.stringify(
      redact({
        authorization: 'Bearer abc.def.ghi',
        nested: { access_token: 'ya29.secret', note: 'got eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl from caller' },
        cosmos: 'type=resource&ver=1.0&sig=abcdef',
        pem: '-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----',
        ok: 'orders-reader@sandbox-project.iam.gserviceaccount.com',
      }),
    );
    expect(out).not.toMatch(/ya29\.secret|eyJhbGci|sig=abcdef|MIIE|abc\.def/);
    expect(out).toContain('orders-reader@sandbox-project.iam.gserviceaccount.com');
    expect(redactString('ya29.c.abc123')).toBe('[redacted]');
  });
});
