import { AsyncLocalStorage } from 'node:async_hooks';
import type { LogFields, Logger } from './log';

/**
 * The last line of defence of the worker process: an unhandled promise rejection or an uncaught exception
 * anywhere in the app is logged (at error, with the correlation id and function of the invocation it
 * happened in, when it happened inside one) instead of vanishing or crashing the worker unannounced.
 *
 * - Unhandled rejections are logged and the process keeps serving (Node's default would end the worker,
 *   and with it every request in flight on it; the rejected promise's work is already lost).
 * - Uncaught exceptions are observed only (`uncaughtExceptionMonitor`): the process state is unknown
 *   after one, so the host's default handling (the worker restarts) stays; the line is written first
 *   (error lines are written synchronously).
 *
 * Installed once per process by the first invocation scope (every HTTP handler and timer opens one).
 */

export interface InvocationScope {
  readonly fn: string;
  readonly correlationId?: string;
  readonly invocationId?: string;
}

const current = new AsyncLocalStorage<InvocationScope>();
let installed = false;

/**
 * `log`: the loggers of the app context that installs it (the first invocation's). Exported for a process that wants
 * the guard before its first invocation (the guard's own test runs it in a child process).
 * @public
 */
export function installProcessGuard(log: (fields: LogFields) => Logger): void {
  if (installed) return;
  installed = true;
  const logger = () => {
    const s = current.getStore();
    return log(s ? { ...s } : { fn: 'process' });
  };
  process.on('unhandledRejection', (reason) => {
    logger().error('unhandled promise rejection', { event: 'process.unhandled-rejection', cause: reason });
  });
  process.on('uncaughtExceptionMonitor', (err, origin) => {
    logger().error('uncaught exception', { event: 'process.uncaught-exception', origin, cause: err });
  });
}

/** Run `fn` as one invocation: whatever it leaves unhandled is logged with this scope. */
export function inInvocation<T>(scope: InvocationScope, log: (fields: LogFields) => Logger, fn: () => T): T {
  installProcessGuard(log);
  return current.run(scope, fn);
}
