import { settle } from '../../../local/emulators/harness';
import { startSandbox, type Sandbox } from '../../../local/sandbox';
import { SANDBOX } from '../../../local/ids';
import { captureLogs, invoke, type Result } from '../../helpers/invoke';
import { TestApp } from '../../helpers/app';

const testApp = new TestApp();
const tokenHandler = testApp.handler('token');

/**
 * Every upstream fault of the Cloud SQL exchange maps to a clear status with Retry-After (never a 500,
 * never a hang), and no upstream text reaches the client.
 */

const G = SANDBOX.google;
const RESOURCE = `cloudsql://${G.project}/${G.region}/${G.instance}/${G.database}`;
const TIMEOUT_MS = 400;

let sb: Sandbox;
let restoreEnv: () => void;
let gateway: string;
let reader: string;
let analyst: string;
const logs = captureLogs();

beforeAll(async () => {
  sb = await startSandbox({ env: { BROKER_UPSTREAM_TIMEOUT_MS: String(TIMEOUT_MS) } });
  restoreEnv = sb.applyEnv();
  gateway = await sb.entra.mint({ oid: SANDBOX.gatewayObjectId, appId: SANDBOX.gatewayAppId, aud: SANDBOX.clientAudience });
  reader = await sb.entra.mint({ oid: SANDBOX.readerObjectId, roles: ['Orders.Read'], aud: SANDBOX.subjectAudience });
  analyst = await sb.entra.mint({ oid: SANDBOX.readerObjectId, roles: ['Orders.Analyst'], aud: SANDBOX.subjectAudience });
});

afterAll(async () => {
  restoreEnv();
  logs.restore();
  await sb.stop();
});

afterEach(async () => {
  for (const e of [sb.google.sts, sb.google.iamcredentials, sb.msi]) {
    e.clearFaults();
    await settle(e);
  }
  testApp.renew();
});

const exchange = (subject = reader): Promise<Result> =>
  invoke(tokenHandler, {
    headers: { authorization: `Bearer ${gateway}` },
    form: {
      grant_type: 'urn:ietf:params:oauth:grant-type:token-exchange',
      subject_token: subject,
      subject_token_type: 'urn:ietf:params:oauth:token-type:access_token',
      resource: RESOURCE,
    },
  });

/** The client sees a reason code and a generic message: never Google's or Azure's own text. */
function expectClean(res: Result): void {
  expect(res.status).not.toBe(500);
  expect(res.text).not.toMatch(
    /PERMISSION_DENIED|iam\.serviceAccounts|Gaia|Injected fault|ECONNREFUSED|invalid_grant|AADSTS|ya29\./,
  );
}

function expectRetryAfter(res: Result): void {
  expect(Number(res.headers.get('retry-after'))).toBeGreaterThanOrEqual(1);
}

// The managed identity cases run first: MSAL keeps a process-wide cache of managed identity tokens.
describe('managed identity endpoint faults', () => {
  test('endpoint down → 503 with Retry-After', async () => {
    sb.msi.inject({ fault: { kind: 'down' } });
    await settle(sb.msi);
    const res = await exchange();
    expect(res.status).toBe(503);
    expect(res.json.reason).toBe('upstream_unavailable');
    expectRetryAfter(res);
    expectClean(res);
    expect(sb.google.sts.count('sts.token')).toBe(0);
  });

  test('endpoint hangs → 504 within the timeout, never a hang', async () => {
    sb.msi.inject({ fault: { kind: 'hang' } });
    const res = await exchange();
    expect(res.status).toBe(504);
    expect(res.json.reason).toBe('upstream_timeout');
    expectRetryAfter(res);
    expectClean(res);
  });

  test('endpoint answers 500 → 503', async () => {
    sb.msi.inject({ fault: { kind: 'status', status: 500 } });
    const res = await exchange();
    expect(res.status).toBe(503);
    expectRetryAfter(res);
    expectClean(res);
  });
});

describe('Google STS faults', () => {
  test('STS refuses the exchange (400 invalid_grant) → 403 upstream_denied', async () => {
    sb.google.sts.inject({
      fault: { kind: 'status', status: 400, body: { error: 'invalid_grant', error_description: 'secret-ish upstream detail' } },
    });
    const res = await exchange();
    expect(res.status).toBe(403);
    expect(res.json.reason).toBe('upstream_denied');
    expect(res.text).not.toContain('secret-ish');
    expectClean(res);
    expect(sb.google.iamcredentials.count('iam.generateAccessToken')).toBe(0);
  });

  test('STS 500 → 502 with Retry-After, one call (no retry storm)', async () => {
    sb.google.sts.resetCalls();
    sb.google.sts.inject({ fault: { kind: 'status', status: 500 } });
    const res = await exchange();
    expect(res.status).toBe(502);
    expect(res.json.reason).toBe('upstream_error');
    expectRetryAfter(res);
    expectClean(res);
    expect(sb.google.sts.count('sts.token')).toBe(1);
  });

  test('STS 503 → 503 with Retry-After', async () => {
    sb.google.sts.inject({ fault: { kind: 'status', status: 503, headers: { 'retry-after': '17' } } });
    const res = await exchange();
    expect(res.status).toBe(503);
    expect(res.headers.get('retry-after')).toBe('17');
    expectClean(res);
  });

  test('STS hangs → 504 within the timeout', async () => {
    sb.google.sts.inject({ fault: { kind: 'hang' } });
    const res = await exchange();
    expect(res.status).toBe(504);
    expect(res.json.reason).toBe('upstream_timeout');
    expectRetryAfter(res);
    expectClean(res);
  });

  test('STS connection refused → 503', async () => {
    sb.google.sts.inject({ fault: { kind: 'down' } });
    await settle(sb.google.sts);
    const res = await exchange();
    expect(res.status).toBe(503);
    expect(res.json.reason).toBe('upstream_unavailable');
    expectRetryAfter(res);
    expectClean(res);
  });

  test('a failed exchange is not cached: the next request succeeds once STS is back', async () => {
    sb.google.sts.inject({ fault: { kind: 'hang' }, times: 1 });
    expect((await exchange()).status).toBe(504);
    const ok = await exchange();
    expect(ok.status).toBe(200);
  });
});

describe('IAM Credentials faults', () => {
  test('impersonation denied (no binding) → 403 upstream_denied with no upstream text', async () => {
    sb.google.state.revokeImpersonation(G.readerServiceAccount, sb.google.functionPrincipal);
    try {
      const res = await exchange();
      expect(res.status).toBe(403);
      expect(res.json.reason).toBe('upstream_denied');
      expect(res.json.error).toBe('unauthorized_client');
      expectClean(res);
    } finally {
      sb.google.state.allowImpersonation(G.readerServiceAccount, sb.google.functionPrincipal);
    }
  });

  test('the service account does not exist (404) → 403 upstream_denied', async () => {
    const sa = sb.google.state.serviceAccounts.get(G.readerServiceAccount)!;
    sb.google.state.serviceAccounts.delete(G.readerServiceAccount);
    try {
      const res = await exchange();
      expect(res.status).toBe(403);
      expect(res.json.reason).toBe('upstream_denied');
      expectClean(res);
    } finally {
      sb.google.state.serviceAccounts.set(G.readerServiceAccount, sa);
    }
  });

  test('500 → 502, 503 → 503, 429 → 503 throttled, each with Retry-After', async () => {
    for (const [status, expected, reason] of [
      [500, 502, 'upstream_error'],
      [503, 503, 'upstream_unavailable'],
      [429, 503, 'upstream_throttled'],
    ] as const) {
      sb.google.iamcredentials.inject({ fault: { kind: 'status', status }, times: 1 });
      const res = await exchange();
      expect(res.status).toBe(expected);
      expect(res.json.reason).toBe(reason);
      expectRetryAfter(res);
      expectClean(res);
    }
  });

  test('hang → 504 within the timeout; the next request is not stuck behind it', async () => {
    sb.google.iamcredentials.inject({ fault: { kind: 'hang' }, times: 1 });
    const res = await exchange();
    expect(res.status).toBe(504);
    expectRetryAfter(res);
    expectClean(res);
    const ok = await exchange();
    expect(ok.status).toBe(200);
  });

  test('200 concurrent requests against a hung IAM share one call and all get 504', async () => {
    sb.google.iamcredentials.resetCalls();
    sb.google.iamcredentials.inject({ fault: { kind: 'hang' } });
    const results = await Promise.all(Array.from({ length: 200 }, () => exchange()));
    expect(results.every((r) => r.status === 504 && Number(r.headers.get('retry-after')) >= 1)).toBe(true);
    expect(sb.google.iamcredentials.count('iam.generateAccessToken')).toBe(1);
  });

  test('connection refused → 503', async () => {
    sb.google.iamcredentials.inject({ fault: { kind: 'down' } });
    await settle(sb.google.iamcredentials);
    const res = await exchange();
    expect(res.status).toBe(503);
    expect(res.json.reason).toBe('upstream_unavailable');
    expectRetryAfter(res);
  });

  test('a federated token IAM no longer accepts (401) is replaced once, transparently', async () => {
    expect((await exchange(reader)).status).toBe(200);
    const federated = [...sb.google.state.tokens.values()].filter((t) => t.kind === 'federated');
    for (const t of federated) sb.google.state.tokens.delete(t.token); // revoked upstream
    sb.google.sts.resetCalls();
    sb.google.iamcredentials.resetCalls();
    const res = await exchange(analyst); // a service account not cached yet
    expect(res.status).toBe(200);
    expect(sb.google.sts.count('sts.token')).toBe(1);
    expect(sb.google.iamcredentials.calls.map((c) => c.status)).toEqual([401, 200]);
  });

  test('no token or upstream text reached the logs', () => {
    const text = JSON.stringify(logs.records);
    for (const t of sb.google.state.allTokens()) expect(text).not.toContain(t);
    for (const { token } of sb.msi.issued) expect(text).not.toContain(token);
    expect(logs.records.some((r) => r.level === 'error' && r.status === 500)).toBe(false);
  });
});
