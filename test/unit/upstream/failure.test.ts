import { BrokerError } from '../../../shared/errors';
import { closedLoopbackPort, startStubServer } from '../../helpers/stub-server';
import { fetchWithTimeout, networkFailure, retryAfterSeconds, upstreamStatusFailure } from '../../../shared/upstream/failure';

/**
 * The two shared classifiers every upstream client ends in: a transport failure (networkFailure) and an HTTP
 * error status (upstreamStatusFailure). Transport rows are raised by Node itself against a loopback server.
 */

const LEAK = /ECONNREFUSED|127\.0\.0\.1|fetch failed|aborted/;

let stub: Awaited<ReturnType<typeof startStubServer>>;
let base: string;
let closedPort: number;

beforeAll(async () => {
  stub = await startStubServer((req, res) => {
    if (req.url === '/stall') return;
    res.end('ok');
  });
  base = stub.base;
  closedPort = await closedLoopbackPort();
});
afterAll(() => stub.close());

async function fetchThrows(url: string, timeoutMs = 2000): Promise<unknown> {
  try {
    await fetch(url, { signal: AbortSignal.timeout(timeoutMs) });
  } catch (e) {
    return e;
  }
  throw new Error('fetch did not throw');
}

const sys = (code: string) => Object.assign(new Error(`${code} 127.0.0.1`), { code });

const network: [string, () => Promise<unknown>, string][] = [
  [
    'fetch: connection refused (TypeError, cause ECONNREFUSED)',
    () => fetchThrows(`http://127.0.0.1:${closedPort}/`),
    'upstream_unavailable',
  ],
  ['fetch: AbortSignal.timeout fired (DOMException TimeoutError)', () => fetchThrows(`${base}/stall`, 100), 'upstream_timeout'],
  [
    'AbortError (a client that reports its deadline so)',
    async () => Object.assign(new Error('The operation was aborted.'), { name: 'AbortError' }),
    'upstream_timeout',
  ],
  ['socket ETIMEDOUT', async () => sys('ETIMEDOUT'), 'upstream_timeout'],
  ['socket ECONNABORTED', async () => sys('ECONNABORTED'), 'upstream_timeout'],
  [
    'undici headers timeout (in the cause)',
    async () => new TypeError('fetch failed', { cause: sys('UND_ERR_HEADERS_TIMEOUT') }),
    'upstream_timeout',
  ],
  [
    'undici body timeout (in the cause)',
    async () => new TypeError('fetch failed', { cause: sys('UND_ERR_BODY_TIMEOUT') }),
    'upstream_timeout',
  ],
  ['socket ECONNRESET', async () => sys('ECONNRESET'), 'upstream_unavailable'],
  ['DNS ENOTFOUND', async () => sys('ENOTFOUND'), 'upstream_unavailable'],
  ['TLS failure', async () => sys('UNABLE_TO_VERIFY_LEAF_SIGNATURE'), 'upstream_unavailable'],
  ['something unknown', async () => ({ weird: true }), 'upstream_unavailable'],
  ['undefined', async () => undefined, 'upstream_unavailable'],
];

test.each(network)('networkFailure: %s', async (_name, raise, code) => {
  const thrown = await raise();
  const e = networkFailure('Google IAM', thrown);
  expect(e).toBeInstanceOf(BrokerError);
  expect(e.code).toBe(code);
  expect(e.status).toBe(code === 'upstream_timeout' ? 504 : 503);
  expect(e.retryAfterSeconds).toBe(5);
  expect(e.message).toMatch(/^Google IAM /);
  expect(e.message).not.toMatch(LEAK);
  expect(e.cause).toBe(thrown);
});

const statuses: [number, number | undefined, { code: string; status: number; retryAfter?: number }][] = [
  [400, undefined, { code: 'upstream_denied', status: 403 }],
  [401, undefined, { code: 'upstream_denied', status: 403 }],
  [403, 30, { code: 'upstream_denied', status: 403 }], // a refusal carries no Retry-After
  [404, undefined, { code: 'upstream_denied', status: 403 }],
  [429, 17, { code: 'upstream_throttled', status: 503, retryAfter: 17 }],
  [429, undefined, { code: 'upstream_throttled', status: 503, retryAfter: 5 }],
  [500, undefined, { code: 'upstream_error', status: 502, retryAfter: 5 }],
  [501, 3, { code: 'upstream_error', status: 502, retryAfter: 3 }],
  [502, undefined, { code: 'upstream_error', status: 502, retryAfter: 5 }],
  [503, 40, { code: 'upstream_unavailable', status: 503, retryAfter: 40 }],
  [503, undefined, { code: 'upstream_unavailable', status: 503, retryAfter: 5 }],
  [504, undefined, { code: 'upstream_timeout', status: 504, retryAfter: 5 }],
];

test.each(statuses)('upstreamStatusFailure: HTTP %i (Retry-After %s)', (status, ra, want) => {
  const e = upstreamStatusFailure('Cloud SQL Admin API', status, ra);
  expect({ code: e.code, status: e.status, retryAfter: e.retryAfterSeconds }).toEqual(want);
  expect(e.message).toMatch(/^Cloud SQL Admin API /);
});

test('fetchWithTimeout: a stalled upstream is cut at its deadline and classified, a refused one too', async () => {
  const t0 = Date.now();
  await expect(fetchWithTimeout('Google STS', `${base}/stall`, {}, 150)).rejects.toMatchObject({ code: 'upstream_timeout' });
  expect(Date.now() - t0).toBeLessThan(2000);
  await expect(fetchWithTimeout('Google STS', `http://127.0.0.1:${closedPort}/`, {}, 2000)).rejects.toMatchObject({
    code: 'upstream_unavailable',
  });
  expect((await fetchWithTimeout('Google STS', `${base}/`, {}, 2000)).status).toBe(200);
});

test.each([
  ['7', 7],
  [' 12 ', 12],
  ['', undefined],
  [null, undefined],
  ['soon', undefined],
] as const)('retryAfterSeconds(%j) = %s', (header, want) => {
  expect(retryAfterSeconds(header)).toBe(want);
});

test('retryAfterSeconds: an HTTP date counts from now, at least 1 s', () => {
  const now = Date.parse('2025-01-01T00:00:00Z');
  expect(retryAfterSeconds('Wed, 01 Jan 2025 00:00:30 GMT', now)).toBe(30);
  expect(retryAfterSeconds('Tue, 31 Dec 2024 23:00:00 GMT', now)).toBe(1);
});
