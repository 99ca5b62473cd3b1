import { createServer } from 'node:http';
import { monitorEventLoopDelay, PerformanceObserver } from 'node:perf_hooks';
import type { AddressInfo } from 'node:net';
import { isHttp, loadRegistrations, startLocalHost, type Registration } from '../local/host';
import { createContext } from '../shared/app/context';
import { handlersOf } from '../shared/app/handlers';
import type { HttpHandler } from '@azure/functions';
import { startSandbox, type Sandbox } from '../local/sandbox';
import { SANDBOX } from '../local/ids';
import type { Emulator } from '../local/emulators/harness';
import { gcNow, telemetryWithoutExporter } from './telemetry-off';

/**
 * The benchmark's server process: the sandbox (emulators on ephemeral ports), the broker behind the
 * local host, and a bare Node HTTP server as the physical reference. Driven over IPC by bench/run.ts so
 * the load generator never shares an event loop with the server under test.
 *
 * Production defaults: LOG_LEVEL=info and the real log sink (JSON lines on stdout, which bench/run.ts
 * redirects to a file), and the telemetry facade on (OpenTelemetry SDK meter and tracer providers with
 * periodic/batch processing, exporting nowhere).
 */

export interface ServerInfo {
  brokerUrl: string;
  bareUrl: string;
  gatewayToken: string;
  callerToken: string;
  analystToken: string;
}

export type CallCounts = Record<string, number>;

/** Every emulator reachable from the sandbox object. */
export function emulatorsOf(sandbox: Pick<Sandbox, 'emulators'>): readonly Emulator[] {
  return sandbox.emulators;
}

function counts(sandbox: Sandbox): CallCounts {
  const out: CallCounts = {};
  for (const e of emulatorsOf(sandbox))
    for (const c of e.calls) out[`${e.name}:${c.route}`] = (out[`${e.name}:${c.route}`] ?? 0) + 1;
  return out;
}

/** Total time the emulators spent answering, per emulator:route (latency and their own work). */
function durations(sandbox: Sandbox): CallCounts {
  const out: CallCounts = {};
  for (const e of emulatorsOf(sandbox))
    for (const c of e.calls) out[`${e.name}:${c.route}`] = (out[`${e.name}:${c.route}`] ?? 0) + c.durationMs;
  return out;
}

async function main(): Promise<void> {
  const stopTelemetry = telemetryWithoutExporter();
  const sandbox = await startSandbox({
    env: { LOG_LEVEL: process.env.BENCH_LOG_LEVEL ?? 'info', GOOGLE_TOKEN_PREWARM: process.env.BENCH_PREWARM ?? 'true' },
  });
  sandbox.applyEnv();
  if (process.env.BENCH_PRELOAD) {
    // What a Functions worker has loaded after its first calls: the providers and their SDKs (cold import is (6)).
    await Promise.all([
      import('../shared/cloudsql/provider'),
      import('../shared/cosmos/provider'),
      import('google-auth-library'),
      import('@azure/cosmos'),
      import('@azure/keyvault-secrets'),
      import('@azure/identity'),
    ]);
  }
  // The functions run on an app context of their own, replaced by `reset-caches` (a cache miss with warm code).
  let app = createContext();
  let handlers: Record<string, unknown> = handlersOf(app);
  const registrations: Registration[] = loadRegistrations().map((r) =>
    isHttp(r) ? { ...r, options: { ...r.options, handler: (req, ic) => (handlers[r.name] as HttpHandler)(req, ic) } } : r,
  );
  const host = await startLocalHost({ port: 0, registrations });
  const bare = createServer((_req, res) => {
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end('{"ok":true}');
  });
  bare.keepAliveTimeout = 65_000;
  await new Promise<void>((r) => bare.listen(0, '127.0.0.1', () => r()));
  const info: ServerInfo = {
    brokerUrl: host.url,
    bareUrl: `http://127.0.0.1:${(bare.address() as AddressInfo).port}/`,
    gatewayToken: await sandbox.entra.mint({
      oid: SANDBOX.gatewayObjectId,
      appId: SANDBOX.gatewayAppId,
      aud: SANDBOX.clientAudience,
      version: '1.0',
      expiresIn: 7200,
    }),
    callerToken: await sandbox.entra.mint({
      oid: SANDBOX.readerObjectId,
      aud: SANDBOX.subjectAudience,
      roles: ['Orders.Read'],
      expiresIn: 7200,
    }),
    analystToken: await sandbox.entra.mint({
      oid: SANDBOX.strangerObjectId,
      aud: SANDBOX.subjectAudience,
      roles: ['Orders.Analyst'],
      expiresIn: 7200,
    }),
  };
  // Event-loop delay of the server process: tells a stall of the broker from the machine's scheduling.
  const eld = monitorEventLoopDelay({ resolution: 1 });
  eld.enable();
  let gc = { count: 0, totalMs: 0, maxMs: 0 };
  new PerformanceObserver((list) => {
    for (const e of list.getEntries())
      gc = { count: gc.count + 1, totalMs: gc.totalMs + e.duration, maxMs: Math.max(gc.maxMs, e.duration) };
  }).observe({ entryTypes: ['gc'] });
  process.on('message', (msg: { cmd: string; n?: number; offset?: number; latencyMs?: number }) => {
    if (msg.cmd === 'env') process.send?.({ env: sandbox.env });
    if (msg.cmd === 'counts') process.send?.({ counts: counts(sandbox), durations: durations(sandbox) });
    if (msg.cmd === 'eld-reset') {
      eld.reset();
      gc = { count: 0, totalMs: 0, maxMs: 0 };
      process.send?.({ ok: true });
    }
    if (msg.cmd === 'eld')
      process.send?.({ eld: { p50: eld.percentile(50) / 1e6, p99: eld.percentile(99) / 1e6, max: eld.max / 1e6, gc } });
    if (msg.cmd === 'latency') {
      // Every upstream the broker calls; not Entra, which only the STS emulator calls during an exchange (to verify
      // the managed identity token: inside STS's own latency in the real service). The broker's JWKS is warmed first.
      sandbox.setEmulatorFaults(msg.latencyMs ? { all: { latencyMs: msg.latencyMs }, byName: { entra: {} } } : undefined);
      process.send?.({ ok: true });
    }
    if (msg.cmd === 'reset-caches') {
      // A cache miss with warm code: every credential cache and client dropped (Google tokens, the managed identity
      // token behind them, Cosmos resource tokens, the Key Vault and Cosmos clients), modules and JWKS kept.
      void (async () => {
        const old = app;
        app = createContext();
        handlers = handlersOf(app);
        await old.close();
        process.send?.({ ok: true });
      })();
    }
    if (msg.cmd === 'rss') {
      gcNow();
      const m = process.memoryUsage();
      process.send?.({ rss: m.rss, heapUsed: m.heapUsed });
    }
    if (msg.cmd === 'mint-callers') {
      // Distinct callers (distinct object ids, so distinct Cosmos users and partitions), Orders.Read.
      void (async () => {
        const tokens: string[] = [];
        for (let i = 0; i < (msg.n ?? 0); i++) {
          const oid = `0b5e0000-0000-4000-8000-${(0x100000000 + (msg.offset ?? 0) + i).toString(16).slice(-12).padStart(12, '0')}`;
          tokens.push(await sandbox.entra.mint({ oid, aud: SANDBOX.subjectAudience, roles: ['Orders.Read'], expiresIn: 7200 }));
        }
        process.send?.({ tokens });
      })();
    }
    if (msg.cmd === 'stop') {
      void (async () => {
        await host.close();
        bare.close();
        await sandbox.stop();
        await stopTelemetry().catch(() => undefined);
        process.exit(0);
      })();
    }
  });
  process.send?.({ ready: info });
}

main().catch((e: unknown) => {
  process.stderr.write(`bench server failed: ${(e as Error).stack}\n`);
  process.exit(1);
});
