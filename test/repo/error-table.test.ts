import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';
import { BrokerError, specOf } from '../../shared/errors';
import { errorResponse } from '../../shared/http/responses';

/** shared/errors.ts is the one source of status, OAuth error, title and Retry-After (issue #18 item 2). */
const ROOT = join(__dirname, '..', '..');
const files = (dir: string): string[] =>
  readdirSync(dir).flatMap((n) =>
    statSync(join(dir, n)).isDirectory() ? files(join(dir, n)) : n.endsWith('.ts') ? [join(dir, n)] : [],
  );

test('no module sets a literal Retry-After on an error: the defaults live in the table', () => {
  const offenders = [...files(join(ROOT, 'shared')), ...files(join(ROOT, 'functions'))]
    .filter((f) => !f.endsWith(join('shared', 'errors.ts')))
    .flatMap((f) =>
      readFileSync(f, 'utf8')
        .split('\n')
        .map((line, i) => ({ line, where: `${relative(ROOT, f)}:${i + 1}` }))
        .filter(({ line }) => /retryAfterSeconds:\s*\d/.test(line) || /DEFAULT_RETRY_AFTER/.test(line)),
    )
    .map((o) => o.where);
  expect(offenders).toEqual([]);
});

test.each([
  ['upstream_unavailable', '5'],
  ['upstream_timeout', '5'],
  ['db_unavailable', '5'],
  ['query_timeout', '1'],
  ['config_invalid', '30'],
  ['not_granted', null],
] as const)('%s answers Retry-After %s from the table', (code, header) => {
  const res = errorResponse(new BrokerError(code, 'x'), 'problem', 'corr-00000001');
  expect((res.headers as Record<string, string>)['retry-after'] ?? null).toBe(header);
  expect(res.status).toBe(specOf(code).status);
});

test("an upstream's own Retry-After wins over the table's", () => {
  const res = errorResponse(new BrokerError('upstream_throttled', 'x', { retryAfterSeconds: 17 }), 'oauth', 'corr-00000001');
  expect((res.headers as Record<string, string>)['retry-after']).toBe('17');
});
