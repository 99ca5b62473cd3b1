import { writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { Session } from 'node:inspector';
import { monitorEventLoopDelay, PerformanceObserver } from 'node:perf_hooks';
import type { AddressInfo } from 'node:net';
import { startLocalHost } from '../local/host';
import { preloadWorkerModules, registrationsCalling } from './broker-worker';
import { appContext, createContext } from '../shared/app/context';
import { handlersOf } from '../shared/app/handlers';
import { httpHandler } from '../shared/http/handler';
import { startSandbox, type Sandbox } from '../local/sandbox';
import { SANDBOX } from '../local/ids';
import type { Emulator } from '../local/emulators/harness';
import { gcNow, telemetryWithoutExporter } from './telemetry-off';
import { cpuMicros } from './load';

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
  /** The floor of any function here: a trivial function through the same local host, with and without httpHandler. */
  trivialPath: string;
  trivialNoWrapPath: string;
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

/**
 * The Google access tokens minted so far, by kind (service account and scopes): generateAccessToken calls that
 * asked for the same token are what single flight must coalesce; two kinds (the login token handed out and the
 * broker's own Admin-API token for the connect settings) are two calls by design.
 */
function mints(sandbox: Sandbox): CallCounts {
  const out: CallCounts = {};
  for (const m of sandbox.google.iamcredentials.issued) {
    const kind = `${m.serviceAccount.split('@')[0]} ${[...m.scopes]
      .map((x) => x.replace('https://www.googleapis.com/auth/', ''))
      .sort()
      .join('+')}`;
    out[kind] = (out[kind] ?? 0) + 1;
  }
  return out;
}

/** Total time the emulators spent answering, per emulator:route (latency and their own work). */
function durations(sandbox: Sandbox): CallCounts {
  const out: CallCounts = {};
  for (const e of emulatorsOf(sandbox))
    for (const c of e.calls) out[`${e.name}:${c.route}`] = (out[`${e.name}:${c.route}`] ?? 0) + c.durationMs;
  return out;
}

/**
 * The V8 CPU profiler over a window the driver chooses (bench/profile-server.ts): `prof-start`, then `prof-stop` with
 * the file to write; each answers with the process's CPU usage at that moment.
 */
let inspector: Session | undefined;
async function profiler(cmd: 'prof-start' | 'prof-stop', file?: string): Promise<void> {
  const s = (inspector ??= new Session());
  if (cmd === 'prof-start') s.connect();
  const post = (method: string, params: object = {}) =>
    new Promise<unknown>((resolve, reject) => s.post(method, params, (e, r) => (e ? reject(e) : resolve(r))));
  if (cmd === 'prof-start') {
    await post('Profiler.enable');
    await post('Profiler.setSamplingInterval', { interval: 200 });
    await post('Profiler.start');
    process.send?.({ cpu: process.cpuUsage() });
    return;
  }
  const cpu = process.cpuUsage();
  const { profile } = (await post('Profiler.stop')) as { profile: unknown };
  if (file) writeFileSync(file, JSON.stringify(profile));
  s.disconnect();
  inspector = undefined;
  process.send?.({ cpu });
}

async function main(): Promise<void> {
  const stopTelemetry = telemetryWithoutExporter();
  const sandbox = await startSandbox({
    env: { LOG_LEVEL: process.env.BENCH_LOG_LEVEL ?? 'info', GOOGLE_TOKEN_PREWARM: process.env.BENCH_PREWARM ?? 'true' },
  });
  sandbox.applyEnv();
  await preloadWorkerModules();
  // The functions start on the process's app context, the one the start-up prewarm of functions/app.ts (loaded
  // with the registrations below) warms, as in a Functions worker; `reset-caches` replaces it with a new context
  // (a cache miss with warm code). A context of its own here left the prewarmed tokens in a context no request used.
  let app = appContext();
  let handlers: Record<string, unknown> = handlersOf(app);
  const registrations = registrationsCalling(() => handlers);
  // The denominators: a trivial function through the same host, with the same wrapper every broker function has
  // (correlation, trace context, per-request logger, one 'request' line), and without it.
  const ok = () => Promise.resolve({ status: 200, jsonBody: { ok: true } });
  const trivial = httpHandler(app, 'benchTrivial', 'problem', ok);
  registrations.push(
    {
      name: 'benchTrivial',
      options: { route: 'bench/trivial', methods: ['GET', 'POST'], authLevel: 'anonymous', handler: trivial },
    },
    {
      name: 'benchTrivialNoWrap',
      options: {
        route: 'bench/trivial-nowrap',
        methods: ['GET', 'POST'],
        authLevel: 'anonymous',
        handler: ok,
      },
    },
  );
  const host = await startLocalHost({ port: 0, registrations });
  const bare = createServer((req, res) => {
    const answer = () => {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end('{"ok":true}');
    };
    if (req.method === 'GET') return answer();
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      Buffer.concat(chunks).toString('utf8');
      answer();
    });
  });
  bare.keepAliveTimeout = 65_000;
  await new Promise<void>((r) => bare.listen(0, '127.0.0.1', () => r()));
  const info: ServerInfo = {
    brokerUrl: host.url,
    bareUrl: `http://127.0.0.1:${(bare.address() as AddressInfo).port}/`,
    trivialPath: '/api/bench/trivial',
    trivialNoWrapPath: '/api/bench/trivial-nowrap',
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
  process.on('message', (msg: { cmd: string; n?: number; offset?: number; latencyMs?: number; file?: string }) => {
    if (msg.cmd === 'env') process.send?.({ env: sandbox.env });
    if (msg.cmd === 'cpu') process.send?.({ cpu: cpuMicros() });
    if (msg.cmd === 'counts') process.send?.({ counts: counts(sandbox), durations: durations(sandbox) });
    if (msg.cmd === 'mints') process.send?.({ mints: mints(sandbox) });
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
    if (msg.cmd === 'prof-start' || msg.cmd === 'prof-stop') void profiler(msg.cmd, msg.file);
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
