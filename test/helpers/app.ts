import type { HttpHandler, InvocationContext, Timer } from '@azure/functions';
import { createContext, type AppContext, type ContextOptions } from '../../shared/app/context';
import { handlersOf, type AppHandlers } from '../../shared/app/handlers';
import { stdoutSink, type LogFields, type Logger, type LogSink } from '../../shared/observability/log';

/**
 * The test suite's app contexts: settings re-read on every call (tests rewrite process.env between calls), log
 * records to the suite's sink (silent, TEST_LOGS=1 prints them; captureLogs() collects them) and observed by the
 * suite's taps (the token-leak scan, the process guard check).
 */

const taps: LogSink[] = [];
let sink: LogSink = process.env.TEST_LOGS ? stdoutSink : () => undefined;

export const testLogSink: LogSink = (record) => {
  for (const tap of taps) {
    try {
      tap(record);
    } catch {
      // a tap never breaks logging
    }
  }
  sink(record);
};

/** Observe every record of every test context (after redaction). Returns the remover. */
export function addTestLogTap(tap: LogSink): () => void {
  taps.push(tap);
  return () => {
    const i = taps.indexOf(tap);
    if (i >= 0) taps.splice(i, 1);
  };
}

/** Where the test contexts' records go; returns the previous sink. */
export function replaceTestLogSink(next: LogSink): LogSink {
  const prev = sink;
  sink = next;
  return prev;
}

/** Every context a test file built: closed after the file (test/setup-close-contexts.ts), so no pool outlives it. */
const opened = new Set<AppContext>();

export function testContext(opts: ContextOptions = {}): AppContext {
  const ctx = createContext({ settingsRecheckMs: 0, logSink: testLogSink, ...opts });
  opened.add(ctx);
  return ctx;
}

/** Close every context the test file built (their database pools, Cosmos clients); idempotent. */
export async function closeTestContexts(): Promise<void> {
  const all = [...opened];
  opened.clear();
  await Promise.all(all.map((c) => c.close().catch(() => undefined)));
}

/** A logger writing where the test contexts write (for code a test calls directly with a logger). */
export function testLogger(fields: LogFields = {}): Logger {
  return testContext().logger(fields);
}

type Name = keyof AppHandlers;

/**
 * A test's app: a context and its handlers. `renew()` starts over with a fresh context (empty caches, new clients),
 * what a new process would have; the handlers `handler(name)` returns follow it.
 */
export class TestApp {
  app: AppContext;
  private handlers: AppHandlers;

  constructor(private readonly opts: ContextOptions = {}) {
    this.app = testContext(opts);
    this.handlers = handlersOf(this.app);
  }

  renew(opts: ContextOptions = this.opts): AppContext {
    void this.app.close();
    this.app = testContext(opts);
    this.handlers = handlersOf(this.app);
    return this.app;
  }

  handler(name: Exclude<Name, 'prewarmTimer' | 'rotationTimer'>): HttpHandler {
    return (req, ctx) => this.handlers[name](req, ctx);
  }

  timer(name: 'prewarmTimer' | 'rotationTimer'): (timer: Timer, ctx: InvocationContext) => Promise<void> {
    return (timer, ctx) => this.handlers[name](timer, ctx);
  }

  /** Forget the issued Cosmos resource tokens and the known users (the clients stay). */
  async clearCosmosTokens(): Promise<void> {
    const cosmos = await this.app.cosmos();
    cosmos.resourceTokens.clear();
    cosmos.knownUsers.clear();
  }

  close(): Promise<void> {
    return this.app.close();
  }
}
