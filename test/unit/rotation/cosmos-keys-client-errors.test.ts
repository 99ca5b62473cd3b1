import { BrokerError } from '../../../shared/errors';
import { armFailure } from '../../../shared/rotation/cosmos-keys/client';

/**
 * Every error status Azure Resource Manager answers the Cosmos key operations (listKeys, regenerateKey, the
 * operation poll) and what the caller is answered. ARM's body is never read into the message; the message
 * names only the operation. (Transport failures and deadlines are networkFailure's: test/foundation/upstream.)
 */

interface Want {
  code: string;
  status: number;
  retryAfter?: number;
  message?: RegExp;
}

const cases: [string, number, Want][] = [
  [
    '401 token refused (e.g. wrong audience)',
    401,
    { code: 'upstream_denied', status: 403, message: /refused listKeys \(HTTP 401\)/ },
  ],
  ['403 AuthorizationFailed (no key-operator role)', 403, { code: 'upstream_denied', status: 403 }],
  ['404 account missing', 404, { code: 'target_misconfigured', status: 502, message: /COSMOS_MANAGED_ACCOUNTS/ }],
  ['429 throttled', 429, { code: 'upstream_throttled', status: 503, retryAfter: 5 }],
  ['400 bad request', 400, { code: 'upstream_error', status: 502, retryAfter: 5, message: /rejected listKeys \(HTTP 400\)/ }],
  ['409 conflict (another operation in progress)', 409, { code: 'upstream_error', status: 502 }],
  ['500 internal error', 500, { code: 'upstream_error', status: 502, retryAfter: 5 }],
  ['502 bad gateway', 502, { code: 'upstream_error', status: 502 }],
  ['503 unavailable', 503, { code: 'upstream_unavailable', status: 503, retryAfter: 5 }],
  ['504 gateway timeout', 504, { code: 'upstream_timeout', status: 504, retryAfter: 5 }],
];

test.each(cases)('%s', (_name, status, want) => {
  const e = armFailure(status, 'listKeys');
  expect(e).toBeInstanceOf(BrokerError);
  expect({ code: e.code, status: e.status }).toEqual({ code: want.code, status: want.status });
  if (want.retryAfter !== undefined) expect(e.retryAfterSeconds).toBe(want.retryAfter);
  if (want.message) expect(e.message).toMatch(want.message);
  expect(e.message).toMatch(/Azure Resource Manager|Cosmos account/);
  expect(e.cause).toBeUndefined();
});

describe("ARM's own Retry-After wins over the table's default", () => {
  test.each([
    [429, '17', 17],
    [503, '42', 42],
    [500, '3', 3],
    [429, new Date(Date.now() + 30_000).toUTCString(), 30],
    [429, 'soon', 5],
  ])('%i with Retry-After %s → %i s', (status, header, want) => {
    const e = armFailure(status, 'listKeys', header);
    expect(e.retryAfterSeconds).toBeGreaterThanOrEqual(want - 1);
    expect(e.retryAfterSeconds).toBeLessThanOrEqual(want);
  });
});
