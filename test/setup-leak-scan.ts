/**
 * Token-leak scan, run in every test file (jest `setupFilesAfterEnv`): every structured log line,
 * whatever sink is installed (the silent default, or a test's own captureLogs()), is checked as it is
 * written against every credential the emulators have issued so far in this file (a credential can only
 * be logged after it was issued). A leak fails the test during which it was logged (afterEach) or, if it
 * happened in a hook, the file (after each of the file's own afterAll hooks, and in ours).
 * LEAK_SCAN_STATS=1 prints, per file, how many lines and credentials were scanned and the time spent.
 */
import { issuedTokens } from '../local/emulators/issued-tokens';
import { addTestLogTap as addLogTap } from './helpers/app';
import { describeLeaks, LeakScanner, type Leak } from './helpers/leak-scan';

const scanner = new LeakScanner(issuedTokens);
const leaks: Leak[] = [];
let reported = 0;

const stats = process.env.LEAK_SCAN_STATS ? { lines: 0, ns: 0n } : undefined;

addLogTap((record) => {
  const t0 = stats ? process.hrtime.bigint() : 0n;
  const found = scanner.scan(JSON.stringify(record));
  if (found.length > 0) leaks.push(...found);
  if (stats) {
    stats.lines++;
    stats.ns += process.hrtime.bigint() - t0;
  }
});

function check(where: string): void {
  if (leaks.length === reported) return;
  const fresh = leaks.slice(reported);
  reported = leaks.length;
  throw new Error(describeLeaks(fresh, where));
}

afterEach(() => check('during this test'));

// Our afterAll runs before the file's own (hooks run in registration order), so the check also runs
// after each afterAll the test file registers: lines logged while it cleans up are covered too.
type HookFn = Parameters<typeof afterAll>[0];
const jestAfterAll = globalThis.afterAll;
(globalThis as { afterAll: typeof afterAll }).afterAll = (fn: HookFn, timeout?: number) =>
  fn.length > 0
    ? jestAfterAll(fn, timeout) // done-callback hooks are left alone (our own afterAll still checks)
    : jestAfterAll(async function (this: unknown) {
        await (fn as () => unknown).call(this);
        check('in an afterAll hook');
      }, timeout);

jestAfterAll(() => {
  if (stats) {
    process.stderr.write(
      `leak scan: ${stats.lines} lines, ${scanner.needleCount} needles, ${(Number(stats.ns) / 1e6).toFixed(1)} ms (${expect.getState().testPath ?? ''})\n`,
    );
  }
  check('in a beforeAll/afterAll hook');
});
