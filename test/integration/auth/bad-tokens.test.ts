import { SignJWT, base64url } from 'jose';
import { createSecretKey } from 'node:crypto';

import { settle } from '../../../local/emulators/harness';
import { invoke, captureLogs } from '../../helpers/invoke';
import { CLOUDSQL_RESOURCE, SANDBOX, startFixture, type Fixture } from '../../helpers/foundation';
import { TestApp } from '../../helpers/app';

const testApp = new TestApp();
const explain = testApp.handler('explain');
const token = testApp.handler('token');

let fx: Fixture;
const logs = captureLogs();
beforeAll(async () => {
  fx = await startFixture();
});
afterAll(async () => {
  await fx.stop();
  logs.restore();
});

const explainWith = async (gatewayToken: string | undefined, subjectToken: string) =>
  invoke(explain, {
    headers: gatewayToken === undefined ? {} : { authorization: `Bearer ${gatewayToken}` },
    form: { subject_token: subjectToken, resource: CLOUDSQL_RESOURCE },
  });

function tamper(jwt: string, part: 1 | 2): string {
  const parts = jwt.split('.');
  if (part === 1) {
    const payload = JSON.parse(Buffer.from(parts[1]!, 'base64url').toString()) as Record<string, unknown>;
    payload.roles = ['Broker.Admin', 'Orders.Read'];
    parts[1] = base64url.encode(JSON.stringify(payload));
  } else {
    const sig = Buffer.from(parts[2]!, 'base64url');
    sig[10] = sig[10]! ^ 0xff;
    parts[2] = sig.toString('base64url');
  }
  return parts.join('.');
}

async function badTokens(): Promise<[string, () => Promise<string>, string][]> {
  const e = fx.sandbox.entra;
  const aud = SANDBOX.subjectAudience;
  const good = () => fx.caller();
  const unsigned = async () => {
    const t = await good();
    const [, p] = t.split('.');
    return `${base64url.encode(JSON.stringify({ alg: 'none', typ: 'JWT' }))}.${p}.`;
  };
  const hs256WithPublicKey = async () => {
    // Key confusion: sign HS256 with the RSA public key (as PEM) as the HMAC secret.
    const pub = e.currentKey.privateKey;
    const { createPublicKey } = await import('node:crypto');
    const pem = createPublicKey(pub).export({ type: 'spki', format: 'pem' }) as string;
    const now = Math.floor(Date.now() / 1000);
    return new SignJWT({ tid: SANDBOX.tenantId, oid: SANDBOX.readerObjectId, roles: ['Orders.Read'] })
      .setProtectedHeader({ alg: 'HS256', kid: e.currentKey.kid })
      .setIssuer(`https://login.microsoftonline.com/${SANDBOX.tenantId}/v2.0`)
      .setAudience(aud)
      .setIssuedAt(now)
      .setExpirationTime(now + 600)
      .sign(createSecretKey(Buffer.from(pem)));
  };
  return [
    ['alg none', unsigned, 'token_malformed'],
    ['HS256 signed with the public key', hs256WithPublicKey, 'token_alg_not_allowed'],
    ['unknown kid', () => fx.caller({ key: e.strayKey() }), 'token_kid_unknown'],
    ['tampered payload', async () => tamper(await good(), 1), 'token_signature_invalid'],
    ['tampered signature', async () => tamper(await good(), 2), 'token_signature_invalid'],
    ['expired', () => fx.caller({ expiresIn: -600 }), 'token_expired'],
    ['nbf in the future', () => fx.caller({ notBefore: 900 }), 'token_not_yet_valid'],
    ['wrong issuer', () => fx.caller({ iss: 'https://evil.example.com/v2.0' }), 'token_issuer_not_allowed'],
    [
      'v1 issuer of another tenant',
      () => fx.caller({ iss: 'https://sts.windows.net/00000000-0000-4000-8000-000000000bad/' }),
      'token_issuer_not_allowed',
    ],
    ['wrong audience', () => fx.caller({ aud: 'api://someone-else' }), 'token_audience_not_allowed'],
    ['tenant not allowed', () => fx.caller({ tenantId: '00000000-0000-4000-8000-000000000bad' }), 'token_tenant_not_allowed'],
    ['missing oid', () => fx.caller({ omit: ['oid'] }), 'token_claims_missing'],
    ['missing tid', () => fx.caller({ omit: ['tid'] }), 'token_claims_missing'],
    ['oversized', () => fx.caller({ extra: { pad: 'x'.repeat(20000) } }), 'token_too_large'],
    ['not a JWT', async () => 'not-a-token', 'token_malformed'],
    ['garbage segments', async () => 'eyJhbGciOi.e30.abc', 'token_malformed'],
    ['a JWE', async () => 'eyJhbGciOiJSU0EtT0FFUCIsImVuYyI6IkEyNTZHQ00ifQ.aaaa.bbbb.cccc.dddd', 'token_malformed'],
  ];
}

describe('bad subject tokens: every one is a 401 with a reason, never a 5xx', () => {
  test.each([
    'alg none',
    'HS256 signed with the public key',
    'unknown kid',
    'tampered payload',
    'tampered signature',
    'expired',
    'nbf in the future',
    'wrong issuer',
    'v1 issuer of another tenant',
    'wrong audience',
    'tenant not allowed',
    'missing oid',
    'missing tid',
    'oversized',
    'not a JWT',
    'garbage segments',
    'a JWE',
  ])('%s', async (name) => {
    const cases = await badTokens();
    const c = cases.find(([n]) => n === name)!;
    const [, make, reason] = c;
    const bad = await make();
    const res = await explainWith(await fx.gateway(), bad);
    expect(res.status).toBe(401);
    expect(res.json.code).toBe(reason);
    expect(res.json.party).toBe('subject');
    expect(res.headers.get('x-correlation-id')).toBeTruthy();
    expect(res.text).not.toContain(bad.slice(0, 40));

    // The same token as the gateway's bearer token is rejected as the client, with OAuth's invalid_client.
    const asClient = await invoke(token, {
      headers: { authorization: `Bearer ${bad}` },
      form: { grant_type: 'urn:ietf:params:oauth:grant-type:token-exchange' },
    });
    expect(asClient.status).toBe(401);
    expect(asClient.json.error).toBe('invalid_client');
    expect(asClient.json.party).toBe('client');
    expect(asClient.headers.get('www-authenticate')).toMatch(/^Bearer error="invalid_token"/);
  });
});

describe('the front door', () => {
  test('a valid v1 token and a valid v2 token are both accepted', async () => {
    for (const version of ['1.0', '2.0'] as const) {
      const res = await explainWith(await fx.gateway(), await fx.caller({ version }));
      expect(res.status).toBe(200);
      expect(res.json.decision).toBe('grant');
    }
  });

  test('a token within the clock skew is accepted; beyond it, rejected', async () => {
    expect((await explainWith(await fx.gateway(), await fx.caller({ expiresIn: -30 }))).status).toBe(200);
    expect((await explainWith(await fx.gateway(), await fx.caller({ expiresIn: -90 }))).status).toBe(401);
  });

  test('no Authorization header: 401 token_missing as the client', async () => {
    const res = await explainWith(undefined, await fx.caller());
    expect(res.status).toBe(401);
    expect(res.json.code).toBe('token_missing');
  });

  test('a non-Bearer Authorization header is rejected', async () => {
    const res = await invoke(explain, {
      headers: { authorization: 'Basic Zm9vOmJhcg==' },
      form: { subject_token: 'x', resource: CLOUDSQL_RESOURCE },
    });
    expect(res.status).toBe(401);
    expect(res.json.code).toBe('token_malformed');
  });

  test('a valid gateway token whose object id is not allowed: 403 client_not_allowed', async () => {
    const other = await fx.gateway({ oid: '11111111-0000-4000-8000-000000000001' });
    const res = await explainWith(other, await fx.caller());
    expect(res.status).toBe(403);
    expect(res.json.code).toBe('client_not_allowed');
  });

  test("the caller's token cannot stand in for the gateway's (audience differs)", async () => {
    const res = await explainWith(await fx.caller({ oid: SANDBOX.gatewayObjectId }), await fx.caller());
    expect(res.status).toBe(401);
    expect(res.json.code).toBe('token_audience_not_allowed');
  });

  test('a valid caller without the role: token endpoint answers 403 access_denied', async () => {
    const res = await invoke(token, {
      headers: { authorization: `Bearer ${await fx.gateway()}` },
      form: {
        grant_type: 'urn:ietf:params:oauth:grant-type:token-exchange',
        subject_token_type: 'urn:ietf:params:oauth:token-type:access_token',
        subject_token: await fx.caller({ roles: ['Some.Other.Role'] }),
        resource: CLOUDSQL_RESOURCE,
      },
    });
    expect(res.status).toBe(403);
    expect(res.json.error).toBe('access_denied');
    expect(res.json.reason).toBe('not_granted');
    const auditLine = logs.records.find((r) => r.event === 'audit' && r.decision === 'deny' && r.reason === 'not_granted');
    expect(auditLine).toBeDefined();
    expect(JSON.stringify(auditLine)).not.toMatch(/eyJ/);
  });

  test('a signing-key roll-over is picked up without a restart', async () => {
    // Warm the JWKS cache with the current key.
    expect((await explainWith(await fx.gateway(), await fx.caller())).status).toBe(200);
    fx.sandbox.entra.rollKeys(true);
    const before = fx.sandbox.entra.count('jwks');
    const res = await explainWith(await fx.gateway(), await fx.caller());
    expect(res.status).toBe(200);
    expect(fx.sandbox.entra.count('jwks')).toBeGreaterThan(before);
  });

  test('JWKS unreachable on a cold cache: 503 with Retry-After, then recovers', async () => {
    // A fresh key set (new kid) forces a refetch; the Entra emulator is down.
    fx.sandbox.entra.rollKeys(true);
    const gw = await fx.gateway();
    const caller = await fx.caller();
    fx.sandbox.entra.inject({ fault: { kind: 'down' } });
    await settle(fx.sandbox.entra);
    try {
      const res = await explainWith(gw, caller);
      expect(res.status).toBe(503);
      expect(res.json.code).toBe('jwks_unavailable');
      expect(Number(res.headers.get('retry-after'))).toBeGreaterThan(0);
    } finally {
      fx.sandbox.entra.clearFaults();
      await settle(fx.sandbox.entra);
    }
    expect((await explainWith(gw, caller)).status).toBe(200);
  });

  test('JWKS answering 500 is also 503, not 500', async () => {
    fx.sandbox.entra.rollKeys(true);
    const gw = await fx.gateway();
    const remove = fx.sandbox.entra.inject({ fault: { kind: 'status', status: 500 }, routes: ['jwks'] });
    try {
      const res = await explainWith(gw, await fx.caller());
      expect(res.status).toBe(503);
    } finally {
      remove();
    }
  });

  test('no log line carries a token', () => {
    const all = JSON.stringify(logs.records);
    expect(all).not.toMatch(/eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}/);
  });
});
