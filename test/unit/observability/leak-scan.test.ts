import { spawnSync } from 'node:child_process';
import { resolve } from 'node:path';
import { generateKeyPairSync } from 'node:crypto';
import { testLogger as createLogger } from '../../helpers/app';
import { findLeaks, LeakScanner, needlesFor } from '../../helpers/leak-scan';
import { addTestLogTap as addLogTap } from '../../helpers/app';
import { captureLogs } from '../../helpers/invoke';

/**
 * The token-leak scan itself: what it looks for, that it sees lines whatever the sink, and that a
 * deliberate leak really fails a jest run (a child run of a fixture that leaks on purpose).
 */

const ROOT = resolve(__dirname, '..', '..', '..');
const JWT = 'eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJlLXBhcnQtb2YtYS1qd3QtMTIzNDU2Nzg5MA';
const SIG = JWT.split('.')[2]!;

describe('needles', () => {
  test('a JWT is found whole and by its signature alone', () => {
    const n = needlesFor(JWT);
    expect(n.map((x) => x.kind)).toEqual(['token', 'jwt-signature']);
    expect(findLeaks(`{"msg":"x","note":"${SIG}"}`, n)).toHaveLength(1);
    expect(
      findLeaks(`{"msg":"x","note":"${JWT}"}`, n)
        .map((l) => l.kind)
        .sort(),
    ).toEqual(['jwt-signature', 'token']);
    expect(findLeaks('{"msg":"x","note":"[redacted]"}', n)).toEqual([]);
  });

  test('the leaked text is masked in the report, never printed', () => {
    const [leak] = findLeaks(`{"note":"${SIG}"}`, needlesFor(JWT));
    expect(leak!.line).not.toContain(SIG);
    expect(leak!.line).toContain('[LEAKED jwt-signature]');
    expect(leak!.fingerprint).toMatch(/^[0-9a-f]{12}$/);
  });

  test('a Cosmos resource token is found by its signature', () => {
    const token = 'type=resource&ver=1.0&sig=QmFzZTY0U2lnbmF0dXJlT2ZUaGVQZXJtaXNzaW9u%3D%3D;cD0xMjM0NTY3ODkwYWJjZGVm;';
    const n = needlesFor(token);
    expect(findLeaks('{"h":"sig=QmFzZTY0U2lnbmF0dXJlT2ZUaGVQZXJtaXNzaW9u==;"}', n)).not.toEqual([]);
    expect(findLeaks(`{"h":"${token}"}`, n)).not.toEqual([]);
    expect(findLeaks('{"h":"type=resource&ver=1.0&sig=[redacted]"}', n)).toEqual([]);
  });

  test('a service-account key JSON is found by its private key, also JSON-escaped inside a line', () => {
    const pem = generateKeyPairSync('rsa', { modulusLength: 1024 })
      .privateKey.export({ type: 'pkcs8', format: 'pem' })
      .toString();
    const keyJson = JSON.stringify({ type: 'service_account', private_key: pem });
    const n = needlesFor(keyJson);
    expect(n.some((x) => x.kind === 'private-key')).toBe(true);
    const bodyLine = pem.split('\n')[3]!; // not the first body line: only the derived first line is a needle
    expect(findLeaks(JSON.stringify({ msg: 'key', v: pem }), needlesFor(pem))).not.toEqual([]);
    expect(findLeaks(JSON.stringify({ msg: 'dump', v: keyJson }), n)).not.toEqual([]);
    expect(findLeaks(JSON.stringify({ v: bodyLine.slice(0, 10) }), n)).toEqual([]);
  });

  test('short values are not needles (too common to mean anything)', () => {
    expect(needlesFor('short-value')).toEqual([]);
  });
});

describe('the log tap', () => {
  test('sees every line even under a test-installed sink, after redaction', () => {
    // A credential of a private registry (not the emulators'), so the suite-wide scan is not tripped.
    const issued = new Set<string>([JWT]);
    const scanner = new LeakScanner(() => issued);
    const found: string[] = [];
    const captured = captureLogs();
    const remove = addLogTap((r) => found.push(...scanner.scan(JSON.stringify(r)).map((l) => l.kind)));
    try {
      const log = createLogger({ correlationId: 'c-12345678' });
      log.info('whole token is redacted by the logger', { value: JWT });
      log.info('but a bare signature is not', { value: SIG });
    } finally {
      remove();
      captured.restore();
    }
    expect(captured.records).toHaveLength(2);
    expect(found).toEqual(['jwt-signature']);
  });

  test('the scanner picks up credentials issued after it was created', () => {
    const issued = new Set<string>();
    const scanner = new LeakScanner(() => issued);
    expect(scanner.scan(`x ${SIG}`)).toEqual([]);
    issued.add(JWT);
    expect(scanner.scan(`x ${SIG}`)).toHaveLength(1);
  });

  test('a throwing tap never breaks logging', () => {
    const captured = captureLogs();
    const remove = addLogTap(() => {
      throw new Error('tap failed');
    });
    try {
      createLogger().info('still written');
    } finally {
      remove();
      captured.restore();
    }
    expect(captured.records.map((r) => r.msg)).toEqual(['still written']);
  });
});

describe('a jest run that leaks fails', () => {
  jest.setTimeout(120_000);

  test('child run of a fixture that logs issued tokens: the leaking test and the leaking afterAll fail', () => {
    const run = spawnSync(
      process.execPath,
      [
        require.resolve('jest/bin/jest'),
        '--config',
        JSON.stringify({
          // eslint-disable-next-line @typescript-eslint/no-require-imports -- the project config is CommonJS
          ...(require(resolve(ROOT, 'test', 'jest-common.js')) as object),
          rootDir: ROOT,
          roots: [resolve(__dirname, 'fixtures')],
          testMatch: ['**/leaks.fixture.ts'],
        }),
        '--ci',
        '--watchman=false',
        '--maxWorkers=1',
      ],
      { cwd: ROOT, encoding: 'utf8', env: { ...process.env, NODE_OPTIONS: '--experimental-vm-modules' }, timeout: 110_000 },
    );
    const out = `${run.stdout}\n${run.stderr}`;
    expect(run.status).toBe(1);
    expect(out).toMatch(/Tests:\s+1 failed, 1 passed, 2 total/); // the clean test passes
    expect(out).toMatch(/● leaks a JWT signature through a raw field/);
    expect(out).toContain('Token leak (during this test): 1 log line(s)');
    expect(out).toContain('Token leak (in an afterAll hook): 1 log line(s)');
    expect(out).toContain('[LEAKED jwt-signature]');
    expect(out).not.toMatch(/eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{20,}/);
  });
});
