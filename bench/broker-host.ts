import { subscribe } from 'node:diagnostics_channel';
import type { ClientRequest, IncomingMessage } from 'node:http';
import { getHeapSpaceStatistics, getHeapStatistics } from 'node:v8';
import { startLocalHost } from '../local/host';
import { preloadWorkerModules, registrationsCalling } from './broker-worker';
import { createContext } from '../shared/app/context';
import { handlersOf } from '../shared/app/handlers';
import { gcNow, telemetryWithoutExporter } from './telemetry-off';
import { cpuMicros } from './load';

/**
 * The broker alone in its own process, behind the local host (the sandbox's emulators run in bench/server.ts): what
 * (8) times the cache misses of and (9) measures the memory of, so neither the emulators' own work (TLS, JSON, token
 * signing: CPU on the broker's event loop when they shared a process) nor their state (20,000 Cosmos users, every
 * token they issued) is counted as the broker's. Its environment is the sandbox's app settings; its stdout (the log
 * lines) goes to a file. Driven over IPC by bench/run.ts.
 */

export interface BrokerMemory {
  rss: number;
  heapUsed: number;
  heapTotal: number;
  external: number;
  arrayBuffers: number;
  /** V8's committed old-space and new-space sizes, and the heap's malloced memory (outside the JS heap). */
  oldSpaceCommitted: number;
  newSpaceCommitted: number;
  mallocedMemory: number;
}

function memory(): BrokerMemory {
  gcNow();
  const m = process.memoryUsage();
  const spaces = getHeapSpaceStatistics();
  const committed = (name: string) => spaces.find((s) => s.space_name === name)?.physical_space_size ?? 0;
  return {
    rss: m.rss,
    heapUsed: m.heapUsed,
    heapTotal: m.heapTotal,
    external: m.external,
    arrayBuffers: m.arrayBuffers,
    oldSpaceCommitted: committed('old_space'),
    newSpaceCommitted: committed('new_space'),
    mallocedMemory: getHeapStatistics().malloced_memory,
  };
}

/** One phase mark of a token request: what happened, when (ms), the process's CPU then (µs). */
export type PhaseMark = readonly [string, number, number];

/**
 * BENCH_PHASES=1: marks at each HTTP event of every /api/token request (arrival, each upstream request sent and its
 * answer read, the response finished), so a miss's CPU and wall split by phase (bench/profile-cosmos-miss.ts reads
 * them with the `phases` command). Diagnostics channels only: nothing in the broker changes.
 */
function phaseMarks(): () => PhaseMark[][] {
  const done: PhaseMark[][] = [];
  let current: PhaseMark[] | undefined;
  const mark = (what: string) => current?.push([what, performance.now(), cpuMicros()]);
  subscribe('http.server.request.start', (m) => {
    if ((m as { request: IncomingMessage }).request.url?.includes('/token')) current = [];
    mark('request arrives');
  });
  subscribe('http.client.request.start', (m) =>
    mark(`${(m as { request: ClientRequest }).request.path.split('?')[0]!.split('/').pop()} sent`),
  );
  subscribe('http.client.response.finish', () => mark('answer read'));
  subscribe('http.server.response.finish', () => {
    mark('response written');
    if (current) done.push(current);
    current = undefined;
  });
  return () => done.splice(0);
}

async function main(): Promise<void> {
  const phases = process.env.BENCH_PHASES === '1' ? phaseMarks() : undefined;
  const stopTelemetry = telemetryWithoutExporter();
  await preloadWorkerModules();
  // The functions run on an app context of their own, replaced by `reset-caches` (a cache miss with warm code).
  let app = createContext();
  let handlers: Record<string, unknown> = handlersOf(app);
  const registrations = registrationsCalling(() => handlers);
  const host = await startLocalHost({ port: 0, app, registrations });
  process.on('message', (msg: { cmd: string; settleMs?: number }) => {
    // After a full GC; with settleMs, after that long idle first (V8's memory reducer shrinks an idle heap).
    if (msg.cmd === 'rss') setTimeout(() => process.send?.(memory()), msg.settleMs ?? 0);
    if (msg.cmd === 'cpu') process.send?.({ cpu: cpuMicros() });
    if (msg.cmd === 'phases') process.send?.({ phases: phases?.() ?? [] });
    if (msg.cmd === 'reset-caches') {
      // Every credential cache and client dropped (Google tokens, the managed identity token behind them, Cosmos
      // resource tokens, the Key Vault and Cosmos clients), modules and JWKS kept.
      void (async () => {
        const old = app;
        app = createContext();
        handlers = handlersOf(app);
        await old.close();
        process.send?.({ ok: true });
      })();
    }
    if (msg.cmd === 'stop') {
      void (async () => {
        await host.close();
        await app.close();
        await stopTelemetry().catch(() => undefined);
        process.exit(0);
      })();
    }
  });
  process.send?.({ ready: host.url });
}

main().catch((e: unknown) => {
  process.stderr.write(`bench broker host failed: ${(e as Error).stack}\n`);
  process.exit(1);
});
