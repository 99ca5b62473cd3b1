import { createServer } from 'node:http';
import { monitorEventLoopDelay, PerformanceObserver } from 'node:perf_hooks';
import type { AddressInfo } from 'node:net';
import { startLocalHost } from '../local/host';
import { startSandbox, type Sandbox } from '../local/sandbox';
import { SANDBOX } from '../local/ids';
import type { Emulator } from '../local/emulators/harness';
import { setLogSink } from '../shared/log';

/**
 * The benchmark's server process: the sandbox (emulators on ephemeral ports), the broker behind the
 * local host, and a bare Node HTTP server as the physical reference. Driven over IPC by bench/run.ts so
 * the load generator never shares an event loop with the server under test.
 */

export interface ServerInfo {
  brokerUrl: string;
  bareUrl: string;
  gatewayToken: string;
  callerToken: string;
  analystToken: string;
}

export type CallCounts = Record<string, number>;

/** Every emulator reachable from the sandbox object, found by shape (name + calls + count). */
export function emulatorsOf(root: unknown, seen = new Set<unknown>()): Emulator[] {
  if (!root || typeof root !== 'object' || seen.has(root)) return [];
  seen.add(root);
  const o = root as Partial<Emulator>;
  if (typeof o.name === 'string' && Array.isArray(o.calls) && typeof o.count === 'function') return [o as Emulator];
  return Object.values(root as Record<string, unknown>).flatMap((v) => emulatorsOf(v, seen));
}

function counts(sandbox: Sandbox): CallCounts {
  const out: CallCounts = {};
  for (const e of emulatorsOf(sandbox)) for (const c of e.calls) out[`${e.name}:${c.route}`] = (out[`${e.name}:${c.route}`] ?? 0) + 1;
  return out;
}

async function main(): Promise<void> {
  if (!process.env.BENCH_LOGS) setLogSink(() => undefined);
  const sandbox = await startSandbox({ env: { LOG_LEVEL: 'warn' } });
  sandbox.applyEnv();
  const host = await startLocalHost({ port: 0 });
  const bare = createServer((_req, res) => {
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end('{"ok":true}');
  });
  await new Promise<void>((r) => bare.listen(0, '127.0.0.1', () => r()));
  const info: ServerInfo = {
    brokerUrl: host.url,
    bareUrl: `http://127.0.0.1:${(bare.address() as AddressInfo).port}/`,
    gatewayToken: await sandbox.entra.mint({ oid: SANDBOX.gatewayObjectId, appId: SANDBOX.gatewayAppId, aud: SANDBOX.clientAudience, version: '1.0', expiresIn: 7200 }),
    callerToken: await sandbox.entra.mint({ oid: SANDBOX.readerObjectId, aud: SANDBOX.subjectAudience, roles: ['Orders.Read'], expiresIn: 7200 }),
    analystToken: await sandbox.entra.mint({ oid: SANDBOX.strangerObjectId, aud: SANDBOX.subjectAudience, roles: ['Orders.Analyst'], expiresIn: 7200 }),
  };
  // Event-loop delay of the server process: tells a stall of the broker from the machine's scheduling.
  const eld = monitorEventLoopDelay({ resolution: 1 });
  eld.enable();
  let gc = { count: 0, totalMs: 0, maxMs: 0 };
  new PerformanceObserver((list) => {
    for (const e of list.getEntries()) gc = { count: gc.count + 1, totalMs: gc.totalMs + e.duration, maxMs: Math.max(gc.maxMs, e.duration) };
  }).observe({ entryTypes: ['gc'] });
  process.on('message', (msg: { cmd: string }) => {
    if (msg.cmd === 'counts') process.send?.({ counts: counts(sandbox) });
    if (msg.cmd === 'eld-reset') {
      eld.reset();
      gc = { count: 0, totalMs: 0, maxMs: 0 };
      process.send?.({ ok: true });
    }
    if (msg.cmd === 'eld') process.send?.({ eld: { p50: eld.percentile(50) / 1e6, p99: eld.percentile(99) / 1e6, max: eld.max / 1e6, gc } });
    if (msg.cmd === 'stop') {
      void (async () => {
        await host.close();
        bare.close();
        await sandbox.stop();
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
