/**
 * No unhandled rejection and no uncaught exception anywhere in the suite (issue #19), run in every test
 * file (jest `setupFilesAfterEnv`, beside the token-leak scan): the app's own guard (shared/observability/process-guard.ts)
 * logs them as `process.unhandled-rejection` / `process.uncaught-exception` lines, and a listener here
 * catches the ones raised outside any invocation. Either fails the test during which it happened, or the
 * file when it happened in a hook.
 */
import { addTestLogTap as addLogTap } from './helpers/app';

const seen: string[] = [];
let reported = 0;

const describeCause = (c: unknown): string => (c instanceof Error ? `${c.name}: ${c.message}\n${c.stack ?? ''}` : String(c));

addLogTap((record) => {
  if (record.event === 'process.unhandled-rejection' || record.event === 'process.uncaught-exception') {
    const cause = record.cause as { message?: string; stack?: string } | undefined;
    seen.push(
      `${String(record.event)} (correlation id ${String(record.correlationId ?? 'none')}): ${cause?.stack ?? cause?.message ?? ''}`,
    );
  }
});

const onRejection = (reason: unknown) => seen.push(`unhandled rejection outside any invocation: ${describeCause(reason)}`);
process.on('unhandledRejection', onRejection);

function check(where: string): void {
  if (seen.length === reported) return;
  const fresh = seen.slice(reported);
  reported = seen.length;
  throw new Error(`${fresh.length} unhandled error(s) ${where}:\n${fresh.join('\n\n')}`);
}

afterEach(() => check('during this test'));
afterAll(() => {
  process.off('unhandledRejection', onRejection);
  check('in a beforeAll/afterAll hook of this file');
});
