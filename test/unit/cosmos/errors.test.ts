import { ErrorResponse, TimeoutError } from '@azure/cosmos';
import { RestError } from '@azure/core-rest-pipeline';
import { BrokerError } from '../../../shared/errors';
import { cosmosFailure, cosmosStatus } from '../../../shared/cosmos/errors';

/**
 * Every failure @azure/cosmos can raise, built as RequestHandler.js builds it, and what the caller is answered:
 * an error answer is an ErrorResponse (message = the body's message, code = the HTTP status, substatus and
 * retryAfterInMs from x-ms-substatus / x-ms-retry-after-ms); the SDK's own request timeout a TimeoutError;
 * a transport failure the pipeline's RestError (code = the socket's). Cosmos' text never reaches the client.
 */

const UPSTREAM_TEXT = 'Message: {"Errors":["Owner resource does not exist: secret-ish Ada Lovelace"]}';
const LEAK = /Ada Lovelace|secret-ish|Owner resource|ECONNREFUSED|127\.0\.0\.1/;

function cosmosAnswer(status: number, extra: { substatus?: number; retryAfterInMs?: number; code?: string } = {}): ErrorResponse {
  const e = new ErrorResponse(UPSTREAM_TEXT);
  e.code = status;
  e.body = { code: extra.code ?? 'Error', message: UPSTREAM_TEXT };
  e.headers = { 'x-ms-activity-id': '00000000-0000-0000-0000-000000000000' };
  if (extra.substatus !== undefined) e.substatus = extra.substatus;
  if (extra.retryAfterInMs !== undefined) {
    e.retryAfterInMs = extra.retryAfterInMs;
    Object.defineProperty(e, 'retryAfterInMilliseconds', { get: () => e.retryAfterInMs });
  }
  return e;
}

interface Want {
  code: string;
  status: number;
  retryAfter?: number;
  message?: RegExp;
}

const cases: [string, unknown, Want][] = [
  [
    '429 throttled after the SDK retries, x-ms-retry-after-ms 2500',
    cosmosAnswer(429, { substatus: 3200, retryAfterInMs: 2500, code: 'TooManyRequests' }),
    { code: 'upstream_throttled', status: 503, retryAfter: 3 },
  ],
  [
    '429 with a sub-second retry hint rounds up to 1 s',
    cosmosAnswer(429, { retryAfterInMs: 20 }),
    { code: 'upstream_throttled', status: 503, retryAfter: 1 },
  ],
  ['429 without a retry hint: 1 s', cosmosAnswer(429), { code: 'upstream_throttled', status: 503, retryAfter: 1 }],
  [
    '404 database of the rule missing',
    cosmosAnswer(404, { code: 'NotFound' }),
    { code: 'target_misconfigured', status: 502, message: /database/ },
  ],
  [
    '404/1003 owner resource missing',
    cosmosAnswer(404, { substatus: 1003, code: 'NotFound' }),
    { code: 'target_misconfigured', status: 502 },
  ],
  ['401 the broker key refused', cosmosAnswer(401, { code: 'Unauthorized' }), { code: 'upstream_denied', status: 403 }],
  [
    '403 forbidden (e.g. local auth disabled)',
    cosmosAnswer(403, { substatus: 5301, code: 'Forbidden' }),
    { code: 'upstream_denied', status: 403 },
  ],
  [
    '408 request timeout',
    cosmosAnswer(408, { code: 'RequestTimeout' }),
    { code: 'upstream_timeout', status: 504, retryAfter: 5 },
  ],
  ['400 bad request', cosmosAnswer(400, { code: 'BadRequest' }), { code: 'upstream_error', status: 502, retryAfter: 5 }],
  ['409 conflict', cosmosAnswer(409, { code: 'Conflict' }), { code: 'upstream_error', status: 502 }],
  ['412 precondition failed', cosmosAnswer(412, { code: 'PreconditionFailed' }), { code: 'upstream_error', status: 502 }],
  ['413 entity too large', cosmosAnswer(413, { code: 'RequestEntityTooLarge' }), { code: 'upstream_error', status: 502 }],
  [
    '500 internal server error',
    cosmosAnswer(500, { code: 'InternalServerError' }),
    { code: 'upstream_error', status: 502, retryAfter: 5 },
  ],
  [
    '503 service unavailable',
    cosmosAnswer(503, { code: 'ServiceUnavailable' }),
    { code: 'upstream_unavailable', status: 503, retryAfter: 5 },
  ],
  ['504 gateway timeout', cosmosAnswer(504), { code: 'upstream_timeout', status: 504 }],
  [
    "the SDK's request timeout (TimeoutError)",
    new TimeoutError('Timeout Error! Request took more than 3000 ms'),
    { code: 'upstream_timeout', status: 504, retryAfter: 5 },
  ],
  [
    'the caller-side abort (AbortError)',
    Object.assign(new Error('The operation was aborted.'), { name: 'AbortError' }),
    { code: 'upstream_timeout', status: 504 },
  ],
  [
    'connection refused',
    new RestError('connect ECONNREFUSED 127.0.0.1:8081', { code: 'ECONNREFUSED' }),
    { code: 'upstream_unavailable', status: 503, retryAfter: 5 },
  ],
  [
    'socket timeout',
    new RestError('connect ETIMEDOUT 127.0.0.1:8081', { code: 'ETIMEDOUT' }),
    { code: 'upstream_timeout', status: 504 },
  ],
  [
    'request could not be sent',
    new RestError('getaddrinfo ENOTFOUND acct.documents.azure.com', { code: RestError.REQUEST_SEND_ERROR }),
    { code: 'upstream_unavailable', status: 503 },
  ],
  ['something unknown', { weird: true }, { code: 'upstream_unavailable', status: 503 }],
  ['undefined', undefined, { code: 'upstream_unavailable', status: 503 }],
];

test.each(cases)('%s', (_name, thrown, want) => {
  const e = cosmosFailure(thrown, 'database');
  expect(e).toBeInstanceOf(BrokerError);
  expect({ code: e.code, status: e.status }).toEqual({ code: want.code, status: want.status });
  if (want.retryAfter !== undefined) expect(e.retryAfterSeconds).toBe(want.retryAfter);
  if (want.message) expect(e.message).toMatch(want.message);
  expect(e.message).not.toMatch(LEAK);
  if (thrown !== undefined) expect(e.cause).toBe(thrown);
});

test('a BrokerError passes through unchanged', () => {
  const e = new BrokerError('not_granted', 'no');
  expect(cosmosFailure(e, 'container')).toBe(e);
});

test('the missing thing is named from the caller, never from the answer', () => {
  expect(cosmosFailure(cosmosAnswer(404), 'container').message).toMatch(/CosmosDB container/);
});

test('cosmosStatus reads only a numeric status', () => {
  expect(cosmosStatus(cosmosAnswer(429))).toBe(429);
  expect(cosmosStatus(new TimeoutError())).toBeUndefined();
  expect(cosmosStatus(new RestError('x', { code: 'ECONNREFUSED' }))).toBeUndefined();
  expect(cosmosStatus(undefined)).toBeUndefined();
});
