import { spawnSync } from 'node:child_process';
import { resolve } from 'node:path';

/**
 * The app's process guard (shared/observability/process-guard.ts) in a real Node process of its own (jest has its own
 * handlers): an unhandled rejection inside an invocation is logged with that invocation's correlation id
 * and the process keeps serving; an uncaught exception is logged, then the process ends as Node's default.
 */
const guard = resolve(__dirname, '../../../dist/shared/observability/process-guard.js');
const log = resolve(__dirname, '../../../dist/shared/observability/log.js');

function run(body: string): { status: number | null; lines: Record<string, unknown>[]; stdout: string } {
  const script = `const guard = require(${JSON.stringify(guard)});\nconst { createLogger } = require(${JSON.stringify(log)});\nconst inInvocation = (scope, fn) => guard.inInvocation(scope, createLogger, fn);\n${body}`;
  const r = spawnSync(process.execPath, ['-e', script], {
    encoding: 'utf8',
    env: { ...process.env, LOG_LEVEL: 'info', NODE_OPTIONS: '' },
    timeout: 10_000,
  });
  const lines = r.stdout
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l) as Record<string, unknown>);
  return { status: r.status, lines, stdout: r.stdout };
}

test('an unhandled rejection inside an invocation is logged with its correlation id; the process keeps serving', () => {
  const r = run(`
    inInvocation({ fn: 'query', correlationId: 'corr-abc-123', invocationId: 'inv-1' }, async () => {
      await new Promise((ok) => setTimeout(ok, 5));
      void Promise.reject(new Error('nobody awaited this'));
    });
    setTimeout(() => { console.log('STILL-SERVING'); }, 100);
  `);
  expect(r.status).toBe(0);
  expect(r.stdout).toContain('STILL-SERVING');
  const line = r.lines.find((l) => l.event === 'process.unhandled-rejection');
  expect(line).toMatchObject({ level: 'error', fn: 'query', correlationId: 'corr-abc-123', invocationId: 'inv-1' });
  expect((line!.cause as { message: string }).message).toBe('nobody awaited this');
});

test('outside any invocation the line names the process; an uncaught exception is logged before the process ends', () => {
  const r = run(`
    inInvocation({ fn: 'token', correlationId: 'corr-xyz-789' }, () => {
      setTimeout(() => { throw new Error('bug in a callback'); }, 5);
    });
    guard.installProcessGuard(createLogger);
    Promise.reject(new Error('top-level'));
  `);
  expect(r.status).not.toBe(0); // Node's default for an uncaught exception stays
  expect(r.lines.find((l) => l.event === 'process.unhandled-rejection')).toMatchObject({ fn: 'process' });
  expect(r.lines.find((l) => l.event === 'process.uncaught-exception')).toMatchObject({
    fn: 'token',
    correlationId: 'corr-xyz-789',
    origin: 'uncaughtException',
  });
});
