import { AuthenticationError, CredentialUnavailableError } from '@azure/identity';
import { gaxios } from 'google-auth-library';
import { BrokerError } from '../../../shared/errors';
import { closedLoopbackPort, startStubServer } from '../../helpers/stub-server';
import { googleFailure } from '../../../shared/google/errors';
import { managedIdentityFailure } from '../../../shared/azure/managed-identity';

/**
 * Every failure a Google call (STS through gaxios, IAM Credentials through fetch) or the managed-identity
 * credential can meet, raised by the real library against a loopback server, and what the caller is answered.
 * The upstream's own text never becomes the client message.
 */

const UPSTREAM_TEXT = 'upstream said: secret-ish detail Ada Lovelace';
const LEAK = /Ada Lovelace|secret-ish|ECONNREFUSED|127\.0\.0\.1|invalid_grant/;

let stub: Awaited<ReturnType<typeof startStubServer>>;
let base: string;
let closedPort: number;

beforeAll(async () => {
  stub = await startStubServer((req, res) => {
    const u = new URL(req.url ?? '/', 'http://x');
    if (u.pathname === '/stall') return; // never answers
    const status = Number(u.searchParams.get('status') ?? '200');
    const ra = u.searchParams.get('retry-after');
    res.writeHead(status, { 'content-type': 'application/json', ...(ra ? { 'retry-after': ra } : {}) });
    res.end(JSON.stringify({ error: 'invalid_grant', error_description: UPSTREAM_TEXT }));
  });
  base = stub.base;
  closedPort = await closedLoopbackPort();
});
afterAll(() => stub.close());

/** What gaxios (google-auth-library's transport, as STS is called) throws for this request. */
async function gaxiosThrows(url: string, timeout = 2000): Promise<unknown> {
  try {
    await new gaxios.Gaxios().request({ url, method: 'POST', timeout, retry: false, data: 'grant_type=x' });
  } catch (e) {
    return e;
  }
  throw new Error('gaxios did not throw');
}

/** What global fetch throws (the broker's own calls, e.g. IAM Credentials). */
async function fetchThrows(url: string, timeoutMs = 2000): Promise<unknown> {
  try {
    await fetch(url, { method: 'POST', signal: AbortSignal.timeout(timeoutMs) });
  } catch (e) {
    return e;
  }
  throw new Error('fetch did not throw');
}

interface Want {
  code: string;
  status: number;
  retryAfter?: number;
}

const google: [string, () => Promise<unknown>, Want][] = [
  ['STS 400 invalid_grant', () => gaxiosThrows(`${base}/token?status=400`), { code: 'upstream_denied', status: 403 }],
  ['STS 401', () => gaxiosThrows(`${base}/token?status=401`), { code: 'upstream_denied', status: 403 }],
  ['STS 403', () => gaxiosThrows(`${base}/token?status=403`), { code: 'upstream_denied', status: 403 }],
  [
    'STS 429 with Retry-After: 7',
    () => gaxiosThrows(`${base}/token?status=429&retry-after=7`),
    { code: 'upstream_throttled', status: 503, retryAfter: 7 },
  ],
  [
    'STS 429 without Retry-After',
    () => gaxiosThrows(`${base}/token?status=429`),
    { code: 'upstream_throttled', status: 503, retryAfter: 5 },
  ],
  ['STS 500', () => gaxiosThrows(`${base}/token?status=500`), { code: 'upstream_error', status: 502, retryAfter: 5 }],
  ['STS 502', () => gaxiosThrows(`${base}/token?status=502`), { code: 'upstream_error', status: 502 }],
  [
    'STS 503 with Retry-After: 12',
    () => gaxiosThrows(`${base}/token?status=503&retry-after=12`),
    { code: 'upstream_unavailable', status: 503, retryAfter: 12 },
  ],
  ['STS 504', () => gaxiosThrows(`${base}/token?status=504`), { code: 'upstream_timeout', status: 504, retryAfter: 5 }],
  [
    'STS stalls past the gaxios timeout',
    () => gaxiosThrows(`${base}/stall`, 100),
    { code: 'upstream_timeout', status: 504, retryAfter: 5 },
  ],
  [
    'STS connection refused',
    () => gaxiosThrows(`http://127.0.0.1:${closedPort}/token`),
    { code: 'upstream_unavailable', status: 503, retryAfter: 5 },
  ],
  ['fetch: stalls past AbortSignal.timeout', () => fetchThrows(`${base}/stall`, 100), { code: 'upstream_timeout', status: 504 }],
  [
    'fetch: connection refused',
    () => fetchThrows(`http://127.0.0.1:${closedPort}/x`),
    { code: 'upstream_unavailable', status: 503 },
  ],
  [
    'undici headers timeout (in the cause)',
    async () =>
      new TypeError('fetch failed', {
        cause: Object.assign(new Error('Headers Timeout Error'), { code: 'UND_ERR_HEADERS_TIMEOUT' }),
      }),
    { code: 'upstream_timeout', status: 504 },
  ],
  ['something unknown', async () => ({ weird: true }), { code: 'upstream_unavailable', status: 503 }],
  ['undefined', async () => undefined, { code: 'upstream_unavailable', status: 503 }],
];

test.each(google)('googleFailure: %s', async (_name, raise, want) => {
  const thrown = await raise();
  const e = googleFailure('Google STS', thrown);
  expect(e).toBeInstanceOf(BrokerError);
  expect({ code: e.code, status: e.status }).toEqual({ code: want.code, status: want.status });
  if (want.retryAfter !== undefined) expect(e.retryAfterSeconds).toBe(want.retryAfter);
  expect(e.message).toContain('Google STS');
  expect(e.message).not.toMatch(LEAK);
  // The upstream's own error stays in `cause`, for the (redacted) log only.
  if (thrown !== undefined) expect(e.cause).toBe(thrown);
});

test('googleFailure: a BrokerError passes through unchanged', () => {
  const e = new BrokerError('not_granted', 'no');
  expect(googleFailure('Google STS', e)).toBe(e);
});

// @azure/identity's ManagedIdentityCredential raises CredentialUnavailableError when the endpoint cannot be
// reached and AuthenticationError(statusCode, body) when it answers an error.
const mi: [string, () => Promise<unknown>, Want][] = [
  [
    'endpoint unreachable (CredentialUnavailableError)',
    async () => new CredentialUnavailableError(`ManagedIdentityCredential: ${UPSTREAM_TEXT}`),
    { code: 'upstream_unavailable', status: 503, retryAfter: 5 },
  ],
  [
    'identity not assigned (AuthenticationError 400)',
    async () => new AuthenticationError(400, { error: 'invalid_request', error_description: UPSTREAM_TEXT }),
    { code: 'upstream_denied', status: 403 },
  ],
  [
    'refused (AuthenticationError 403)',
    async () => new AuthenticationError(403, { error: 'access_denied', error_description: UPSTREAM_TEXT }),
    { code: 'upstream_denied', status: 403 },
  ],
  [
    'throttled (AuthenticationError 429)',
    async () => new AuthenticationError(429, { error: 'throttled', error_description: UPSTREAM_TEXT }),
    { code: 'upstream_unavailable', status: 503, retryAfter: 5 },
  ],
  [
    'failing (AuthenticationError 500)',
    async () => new AuthenticationError(500, UPSTREAM_TEXT),
    { code: 'upstream_unavailable', status: 503 },
  ],
  [
    'aborted by the deadline (DOMException TimeoutError)',
    async () => fetchThrows(`${base}/stall`, 100),
    { code: 'upstream_timeout', status: 504, retryAfter: 5 },
  ],
  [
    'AbortError from @azure/abort-controller',
    async () => Object.assign(new Error('The operation was aborted.'), { name: 'AbortError' }),
    { code: 'upstream_timeout', status: 504 },
  ],
  [
    'a timeout in the cause chain',
    async () =>
      new CredentialUnavailableError('ManagedIdentityCredential failed', {
        cause: Object.assign(new Error('x'), { code: 'ETIMEDOUT' }),
      }),
    { code: 'upstream_timeout', status: 504 },
  ],
  [
    'connection refused',
    async () => fetchThrows(`http://127.0.0.1:${closedPort}/metadata/identity/oauth2/token`),
    { code: 'upstream_unavailable', status: 503 },
  ],
  ['undefined', async () => undefined, { code: 'upstream_unavailable', status: 503 }],
];

test.each(mi)('managedIdentityFailure: %s', async (_name, raise, want) => {
  const thrown = await raise();
  const e = managedIdentityFailure(thrown);
  expect(e).toBeInstanceOf(BrokerError);
  expect({ code: e.code, status: e.status }).toEqual({ code: want.code, status: want.status });
  if (want.retryAfter !== undefined) expect(e.retryAfterSeconds).toBe(want.retryAfter);
  expect(e.message).toMatch(/managed identity/);
  expect(e.message).not.toMatch(LEAK);
});

test('managedIdentityFailure: a BrokerError passes through unchanged', () => {
  const e = new BrokerError('upstream_timeout', 'late');
  expect(managedIdentityFailure(e)).toBe(e);
});
