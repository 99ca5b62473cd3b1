import { DatabaseError } from 'pg';
import { BrokerError } from '../../../shared/errors';
import { DeadlineExceeded } from '../../../shared/query/deadline';
import { classifyDbError } from '../../../shared/query/errors';

/** Every failure the query path can meet, as the library raises it, and what the caller is answered. */

function pgError(code: string, message = 'server said something that may quote data: Ada Lovelace'): DatabaseError {
  const e = new DatabaseError(message, message.length, 'error');
  e.code = code;
  e.severity = 'ERROR';
  return e;
}
const sysError = (code: string, message: string) => Object.assign(new Error(message), { code });
const gaxios = (status: number) =>
  Object.assign(new Error(`Request failed with status code ${status}`), { response: { status } });

const cases: [string, unknown, { code: string; status: number; reason?: string; retryAfter?: number }][] = [
  ['42501 insufficient privilege', pgError('42501'), { code: 'db_permission_denied', status: 403 }],
  ['25006 write in a read-only transaction', pgError('25006'), { code: 'db_permission_denied', status: 403 }],
  ['57014 statement timeout', pgError('57014'), { code: 'query_timeout', status: 504, retryAfter: 1 }],
  [
    '28P01 password authentication failed',
    pgError('28P01'),
    { code: 'db_unavailable', status: 503, reason: 'login_refused', retryAfter: 5 },
  ],
  [
    '28000 invalid authorization',
    pgError('28000'),
    { code: 'db_unavailable', status: 503, reason: 'login_refused', retryAfter: 5 },
  ],
  [
    '57P01 admin shutdown',
    pgError('57P01'),
    { code: 'db_unavailable', status: 503, reason: 'database_unavailable', retryAfter: 5 },
  ],
  [
    '57P03 cannot connect now (starting, recovering)',
    pgError('57P03'),
    { code: 'db_unavailable', status: 503, reason: 'database_unavailable', retryAfter: 5 },
  ],
  ['08006 connection failure', pgError('08006'), { code: 'db_unavailable', status: 503, reason: 'database_unavailable' }],
  ['53300 too many connections', pgError('53300'), { code: 'db_unavailable', status: 503, reason: 'database_unavailable' }],
  ['22P02 invalid text representation', pgError('22P02'), { code: 'invalid_parameter', status: 400 }],
  ['42P01 undefined table', pgError('42P01'), { code: 'target_misconfigured', status: 502 }],
  ['XX000 internal error', pgError('XX000'), { code: 'upstream_error', status: 502 }],
  ['SQL Admin 401', gaxios(401), { code: 'db_unavailable', status: 503, reason: 'token_refused' }],
  ['SQL Admin 403', gaxios(403), { code: 'db_unavailable', status: 503, reason: 'token_refused' }],
  ['SQL Admin 503', gaxios(503), { code: 'db_unavailable', status: 503, reason: 'sqladmin_unavailable' }],
  [
    'TLS certificate failure',
    sysError('ERR_TLS_CERT_ALTNAME_INVALID', 'Hostname/IP does not match certificate'),
    { code: 'db_unavailable', status: 503, reason: 'tls_failed' },
  ],
  ['pg connect timeout', new Error('timeout expired'), { code: 'db_unavailable', status: 503, reason: 'connect_timeout' }],
  ['pg query read timeout', new Error('Query read timeout'), { code: 'query_timeout', status: 504 }],
  [
    'connector metadata failure',
    sysError('ESQLADMIN', 'Failed to get instance metadata'),
    { code: 'db_unavailable', status: 503, reason: 'sqladmin_unavailable' },
  ],
  [
    'connection refused',
    sysError('ECONNREFUSED', 'connect ECONNREFUSED 127.0.0.1:3307'),
    { code: 'db_unavailable', status: 503, reason: 'instance_unreachable' },
  ],
  [
    'connection cut mid-request',
    new Error('Connection terminated unexpectedly'),
    { code: 'db_unavailable', status: 503, reason: 'instance_unreachable' },
  ],
  [
    'deadline: connect',
    new DeadlineExceeded('connect', 3000),
    { code: 'db_unavailable', status: 503, reason: 'database_unresponsive', retryAfter: 5 },
  ],
  [
    'deadline: preamble',
    new DeadlineExceeded('preamble', 3000),
    { code: 'db_unavailable', status: 503, reason: 'database_unresponsive', retryAfter: 5 },
  ],
  ['deadline: query', new DeadlineExceeded('query', 4000), { code: 'query_timeout', status: 504, retryAfter: 1 }],
  ['something unknown', { weird: true }, { code: 'upstream_error', status: 502 }],
  ['undefined', undefined, { code: 'upstream_error', status: 502 }],
];

test.each(cases)('%s', (_name, thrown, want) => {
  const e = classifyDbError(thrown);
  expect(e).toBeInstanceOf(BrokerError);
  expect({ code: e.code, status: e.status }).toEqual({ code: want.code, status: want.status });
  if (want.reason) expect(e.detail?.reason).toBe(want.reason);
  if (want.retryAfter !== undefined) expect(e.retryAfterSeconds).toBe(want.retryAfter);
  // The database's own text (which can quote data) never becomes the client message.
  expect(e.message).not.toMatch(/Ada Lovelace|ECONNREFUSED|127\.0\.0\.1/);
});

test('a BrokerError passes through unchanged', () => {
  const e = new BrokerError('not_granted', 'no');
  expect(classifyDbError(e)).toBe(e);
});
