import { createRestError } from '@azure-rest/core-client';
import { AbortError } from '@azure/abort-controller';
import { RestError } from '@azure/core-rest-pipeline';
import { AuthenticationError, CredentialUnavailableError } from '@azure/identity';
import { BrokerError } from '../../../shared/errors';
import { keyVaultErrorCode, keyVaultFailure } from '../../../shared/keyvault/client';

/**
 * Every failure @azure/keyvault-secrets can raise, built as the SDK builds it, and what the caller is answered.
 * An error answer: `createRestError(response)` then `details = keyVaultErrorDeserializer(body)` (operations.js);
 * a transport failure: RestError with the socket's code (nodeHttpClient); a client-side deadline: AbortError.
 * Key Vault's own text never becomes the client message; its inner error code may, as `detail.upstreamCode`.
 */

const UPSTREAM_TEXT = "Caller is not authorized: secret-ish detail about vault 'corp-prod' Ada Lovelace";
const LEAK = /Ada Lovelace|secret-ish|corp-prod|ECONNREFUSED|127\.0\.0\.1/;

/** The error the SDK throws for an HTTP error answer from Key Vault. */
function kvAnswer(
  status: number,
  error: { code: string; innererror?: { code: string } },
  headers: Record<string, string> = {},
): RestError {
  const body = { error: { ...error, message: UPSTREAM_TEXT } };
  const e = createRestError({
    status: String(status),
    headers: { 'content-type': 'application/json; charset=utf-8', ...headers },
    body,
    request: { url: 'https://corp-prod.vault.azure.net/secrets/sa-key', method: 'GET' } as never,
  });
  // keyVaultErrorDeserializer: innererror → innerError.
  (e as RestError & { details?: unknown }).details = {
    error: {
      code: error.code,
      message: UPSTREAM_TEXT,
      innerError: error.innererror ? { code: error.innererror.code, message: UPSTREAM_TEXT } : undefined,
    },
  };
  return e;
}

const socket = (code: string) => new RestError(`connect ${code} 127.0.0.1:8443`, { code });

interface Want {
  code: string;
  status: number;
  retryAfter?: number;
  retryAfterBetween?: [number, number];
  upstreamCode?: string;
  message?: RegExp;
}

const cases: [string, unknown, Want][] = [
  [
    '401 unauthenticated',
    kvAnswer(401, { code: 'Unauthorized' }),
    { code: 'upstream_denied', status: 403, upstreamCode: 'Unauthorized' },
  ],
  [
    '403 ForbiddenByRbac',
    kvAnswer(403, { code: 'Forbidden', innererror: { code: 'ForbiddenByRbac' } }),
    { code: 'upstream_denied', status: 403, upstreamCode: 'ForbiddenByRbac' },
  ],
  [
    '403 SecretDisabled',
    kvAnswer(403, { code: 'Forbidden', innererror: { code: 'SecretDisabled' } }),
    { code: 'upstream_denied', status: 403, upstreamCode: 'SecretDisabled' },
  ],
  [
    '400 BadParameter',
    kvAnswer(400, { code: 'BadParameter' }),
    { code: 'upstream_denied', status: 403, upstreamCode: 'BadParameter' },
  ],
  [
    '409 Conflict (secret being deleted)',
    kvAnswer(409, { code: 'Conflict', innererror: { code: 'ObjectIsBeingDeleted' } }),
    { code: 'upstream_denied', status: 403, upstreamCode: 'ObjectIsBeingDeleted' },
  ],
  [
    '429 Throttled with Retry-After: 9',
    kvAnswer(429, { code: 'Throttled' }, { 'retry-after': '9' }),
    { code: 'upstream_throttled', status: 503, retryAfter: 9, upstreamCode: 'Throttled' },
  ],
  [
    '429 Throttled without Retry-After',
    kvAnswer(429, { code: 'Throttled' }),
    { code: 'upstream_throttled', status: 503, retryAfter: 5, upstreamCode: 'Throttled' },
  ],
  [
    '429 Throttled with an HTTP-date Retry-After',
    kvAnswer(429, { code: 'Throttled' }, { 'retry-after': new Date(Date.now() + 40_000).toUTCString() }),
    { code: 'upstream_throttled', status: 503, retryAfterBetween: [39, 40], upstreamCode: 'Throttled' },
  ],
  [
    '429 with an unparseable Retry-After',
    kvAnswer(429, { code: 'Throttled' }, { 'retry-after': 'soon' }),
    { code: 'upstream_throttled', status: 503, retryAfter: 5, upstreamCode: 'Throttled' },
  ],
  [
    '500 InternalServerError',
    kvAnswer(500, { code: 'InternalServerError' }),
    { code: 'upstream_error', status: 502, retryAfter: 5, upstreamCode: 'InternalServerError' },
  ],
  [
    '503 ServiceUnavailable with Retry-After: 20',
    kvAnswer(503, { code: 'ServiceUnavailable' }, { 'retry-after': '20' }),
    { code: 'upstream_unavailable', status: 503, retryAfter: 20, upstreamCode: 'ServiceUnavailable' },
  ],
  [
    '504 GatewayTimeout',
    kvAnswer(504, { code: 'GatewayTimeout' }),
    { code: 'upstream_timeout', status: 504, retryAfter: 5, upstreamCode: 'GatewayTimeout' },
  ],
  [
    'an inner code that is not a plain identifier is not echoed',
    kvAnswer(403, { code: 'Forbidden', innererror: { code: 'Ada Lovelace <script>' } }),
    { code: 'upstream_denied', status: 403 },
  ],
  [
    'the client-side deadline (AbortError)',
    new AbortError('The operation was aborted.'),
    { code: 'upstream_timeout', status: 504, retryAfter: 5 },
  ],
  ['connection refused', socket('ECONNREFUSED'), { code: 'upstream_unavailable', status: 503, retryAfter: 5 }],
  ['connection reset', socket('ECONNRESET'), { code: 'upstream_unavailable', status: 503 }],
  ['socket timeout', socket('ETIMEDOUT'), { code: 'upstream_timeout', status: 504 }],
  [
    'request could not be sent',
    new RestError('getaddrinfo ENOTFOUND corp-prod.vault.azure.net', { code: RestError.REQUEST_SEND_ERROR }),
    { code: 'upstream_unavailable', status: 503 },
  ],
  [
    'managed identity unreachable (CredentialUnavailableError)',
    new CredentialUnavailableError(`ManagedIdentityCredential: ${UPSTREAM_TEXT}`),
    { code: 'upstream_unavailable', status: 503 },
  ],
  // AuthenticationError carries the managed-identity endpoint's statusCode: it is the identity failing, not Key
  // Vault refusing, and is mapped as every managed-identity failure is (never "Key Vault refused").
  [
    'managed identity refused (AuthenticationError 400)',
    new AuthenticationError(400, { error: 'invalid_request', error_description: UPSTREAM_TEXT }),
    { code: 'upstream_denied', status: 403, message: /managed identity endpoint refused/ },
  ],
  [
    'managed identity failing (AuthenticationError 500)',
    new AuthenticationError(500, UPSTREAM_TEXT),
    { code: 'upstream_unavailable', status: 503, message: /managed identity endpoint cannot be reached/ },
  ],
  ['something unknown', { weird: true }, { code: 'upstream_unavailable', status: 503 }],
  ['undefined', undefined, { code: 'upstream_unavailable', status: 503 }],
];

test.each(cases)('%s', (_name, thrown, want) => {
  const e = keyVaultFailure(thrown);
  expect(e).toBeInstanceOf(BrokerError);
  expect({ code: e.code, status: e.status }).toEqual({ code: want.code, status: want.status });
  if (want.retryAfter !== undefined) expect(e.retryAfterSeconds).toBe(want.retryAfter);
  if (want.retryAfterBetween) {
    expect(e.retryAfterSeconds).toBeGreaterThanOrEqual(want.retryAfterBetween[0]);
    expect(e.retryAfterSeconds).toBeLessThanOrEqual(want.retryAfterBetween[1]);
  }
  if (want.message) expect(e.message).toMatch(want.message);
  expect(e.detail?.upstreamCode).toBe(want.upstreamCode);
  expect(e.message).not.toMatch(LEAK);
  expect(JSON.stringify(e.detail ?? {})).not.toMatch(LEAK);
  if (thrown !== undefined) expect(e.cause).toBe(thrown);
});

test('a BrokerError passes through unchanged', () => {
  const e = new BrokerError('upstream_timeout', 'late');
  expect(keyVaultFailure(e)).toBe(e);
});

test('keyVaultErrorCode prefers the inner code, then the outer one', () => {
  expect(keyVaultErrorCode(kvAnswer(403, { code: 'Forbidden', innererror: { code: 'ForbiddenByRbac' } }))).toBe(
    'ForbiddenByRbac',
  );
  expect(keyVaultErrorCode(kvAnswer(401, { code: 'Unauthorized' }))).toBe('Unauthorized');
  expect(keyVaultErrorCode(socket('ECONNREFUSED'))).toBe('ECONNREFUSED');
  expect(keyVaultErrorCode(undefined)).toBeUndefined();
});
