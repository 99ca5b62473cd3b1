import { fork, type ChildProcess } from 'node:child_process';
import { closeSync, openSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SANDBOX } from '../local/ids';
import type { PhaseMark } from './broker-host';
import type { ServerInfo } from './server';

/**
 * Profile of the Cosmos cache miss in a warm worker ((8) "Cosmos caller seen for the first time"), the layout of
 * `npm run bench`: the emulators in bench/server.ts, the broker alone in bench/broker-host.ts (so only the broker's
 * CPU is sampled). `node dist/bench/profile-cosmos-miss.js [N]`: warms the broker with N/10 misses, then runs N misses
 * one at a time (each a new caller: a user upsert, a permission upsert), printing the broker's CPU per miss. With
 * PROFILE_CPU_DIR=<dir> the broker runs under `--cpu-prof` and writes its .cpuprofile there on exit (the warm-up is in
 * it too; bench/cpuprofile-summary.ts reads it). Upstream latency 0 (the emulators answer at once): CPU, not time.
 * PROFILE_PHASES=1: the measured misses split by phase (request arrives → users sent → answer read → permissions
 * sent → answer read → response written), the broker's CPU and wall per phase, median (bench/broker-host.ts marks
 * them on Node's HTTP diagnostics channels).
 */

const COSMOS = `cosmos://${SANDBOX.cosmos.account}/${SANDBOX.cosmos.database}/${SANDBOX.cosmos.container}`;
const CLOUDSQL = `cloudsql://${SANDBOX.google.project}/${SANDBOX.google.region}/${SANDBOX.google.instance}/${SANDBOX.google.database}`;
const log = join(tmpdir(), `profile-cosmos-miss-${process.pid}`);

function ask<T>(child: ChildProcess, cmd: string, extra: Record<string, unknown> = {}): Promise<T> {
  return new Promise((resolve) => {
    child.once('message', (m) => resolve(m as T));
    child.send({ cmd, ...extra });
  });
}

function start(script: string, env: Record<string, string>, execArgv: string[]): ChildProcess {
  const fd = openSync(`${log}-${script}.log`, 'w');
  const child = fork(join(__dirname, script), [], {
    stdio: ['ignore', fd, 'inherit', 'ipc'],
    env: { ...process.env, ...env },
    execArgv,
  });
  closeSync(fd);
  return child;
}

function ready<T>(child: ChildProcess): Promise<T> {
  return new Promise((resolve, reject) => {
    child.once('message', (m: { ready?: T }) => (m.ready ? resolve(m.ready) : reject(new Error('bad ready message'))));
    child.once('exit', (code) => reject(new Error(`${child.spawnfile} exited with ${code}`)));
  });
}

function stop(child: ChildProcess): Promise<void> {
  return new Promise((resolve) => {
    child.once('exit', () => resolve());
    child.send({ cmd: 'stop' });
  });
}

/** PROFILE_GAP_MS: an idle pause before each request (caches go cold as between (8)'s upstream calls). */
const GAP_MS = Number(process.env.PROFILE_GAP_MS ?? 0);

/** Median CPU and wall per phase (between consecutive marks of the same label sequence). */
function phaseTable(requests: PhaseMark[][]): string {
  const by = new Map<string, { cpu: number[]; wall: number[] }>();
  for (const marks of requests)
    for (let i = 1; i < marks.length; i++) {
      const key = `${marks[i - 1]![0]} → ${marks[i]![0]}`;
      let e = by.get(key);
      if (!e) by.set(key, (e = { cpu: [], wall: [] }));
      e.cpu.push((marks[i]![2] - marks[i - 1]![2]) / 1000);
      e.wall.push(marks[i]![1] - marks[i - 1]![1]);
    }
  const med = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
  return [...by]
    .map(
      ([k, e]) =>
        `  ${k.padEnd(40)} CPU ${med(e.cpu).toFixed(2)} ms, wall ${med(e.wall).toFixed(2)} ms (median of ${e.cpu.length})`,
    )
    .join('\n');
}

async function miss(info: ServerInfo, brokerUrl: string, caller: string, resource = COSMOS): Promise<void> {
  if (GAP_MS > 0) await new Promise((r) => setTimeout(r, GAP_MS));
  const res = await fetch(`${brokerUrl}/token`, {
    method: 'POST',
    headers: { authorization: `Bearer ${info.gatewayToken}`, 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({
      grant_type: 'urn:ietf:params:oauth:grant-type:token-exchange',
      subject_token_type: 'urn:ietf:params:oauth:token-type:access_token',
      subject_token: caller,
      resource,
    }).toString(),
  });
  await res.arrayBuffer();
  if (res.status !== 200) throw new Error(`status ${res.status}`);
}

async function main(): Promise<void> {
  const n = Number(process.argv[2] ?? 300);
  const warm = Math.max(20, Math.floor(n / 10));
  const server = start('server.js', { BENCH_PREWARM: 'false' }, ['--experimental-vm-modules']);
  const info = await ready<ServerInfo>(server);
  const { env } = await ask<{ env: Record<string, string> }>(server, 'env');
  const dir = process.env.PROFILE_CPU_DIR;
  const phases = process.env.PROFILE_PHASES === '1';
  const broker = start(
    'broker-host.js',
    { ...env, LOG_LEVEL: 'info', GOOGLE_TOKEN_PREWARM: 'false', BENCH_PRELOAD: '1', ...(phases ? { BENCH_PHASES: '1' } : {}) },
    [
      ...(dir ? ['--cpu-prof', `--cpu-prof-dir=${dir}`] : []),
      ...(process.env.PROFILE_NODE_ARGS ?? '').split(' ').filter(Boolean),
    ],
  );
  const brokerUrl = await ready<string>(broker);
  try {
    // PROFILE_LATENCY_MS: every upstream answers after that long (what (8) sets; 0 by default).
    await ask(server, 'latency', { latencyMs: Number(process.env.PROFILE_LATENCY_MS ?? 0) });
    const { tokens } = await ask<{ tokens: string[] }>(server, 'mint-callers', { n: warm + n, offset: 700_000 });
    // PROFILE_TARGET=cloudsql: the same new callers on a cached Cloud SQL token instead (no upstream call).
    const target = process.env.PROFILE_TARGET === 'cloudsql' ? CLOUDSQL : COSMOS;
    for (let i = 0; i < warm; i++) await miss(info, brokerUrl, tokens[i]!, target);
    const c0 = (await ask<{ cpu: number }>(broker, 'cpu')).cpu;
    const t0 = performance.now();
    if (phases) await ask(broker, 'phases'); // the warm-up's marks dropped
    for (let i = warm; i < warm + n; i++) await miss(info, brokerUrl, tokens[i]!, target);
    const ms = (performance.now() - t0) / n;
    const c1 = (await ask<{ cpu: number }>(broker, 'cpu')).cpu;
    if (phases) process.stderr.write(`phases:\n${phaseTable((await ask<{ phases: PhaseMark[][] }>(broker, 'phases')).phases)}\n`);
    process.stderr.write(
      `${n} ${target === COSMOS ? 'Cosmos misses' : 'new callers'}: ${ms.toFixed(2)} ms each, broker CPU ${((c1 - c0) / n / 1000).toFixed(2)} ms per miss\n`,
    );
    // The broker's CPU while it waits (timers): counted in a miss's CPU for as long as the miss takes.
    const i0 = (await ask<{ cpu: number }>(broker, 'cpu')).cpu;
    await new Promise((r) => setTimeout(r, 5000));
    const i1 = (await ask<{ cpu: number }>(broker, 'cpu')).cpu;
    process.stderr.write(`idle broker: ${((i1 - i0) / 5000).toFixed(2)} ms CPU per second\n`);
    if (process.env.PROFILE_CALLERS_ONLY === '1') {
      // The same number of new callers on a cached Cloud SQL token: what a caller seen for the first time costs
      // without an upstream call (its token verified, the hit path).
      const more = (await ask<{ tokens: string[] }>(server, 'mint-callers', { n, offset: 800_000 })).tokens;
      await miss(info, brokerUrl, tokens[0]!, CLOUDSQL);
      const k0 = (await ask<{ counts: Record<string, number> }>(server, 'counts')).counts;
      const c2 = (await ask<{ cpu: number }>(broker, 'cpu')).cpu;
      for (const t of more) await miss(info, brokerUrl, t, CLOUDSQL);
      const c3 = (await ask<{ cpu: number }>(broker, 'cpu')).cpu;
      const k1 = (await ask<{ counts: Record<string, number> }>(server, 'counts')).counts;
      const calls = Object.keys(k1).filter((k) => k1[k] !== k0[k]);
      if (calls.length > 0) process.stderr.write(`(upstream calls during the new callers: ${calls.join(', ')})\n`);
      for (let i = 0; i < n; i++) await miss(info, brokerUrl, tokens[0]!, CLOUDSQL);
      const c4 = (await ask<{ cpu: number }>(broker, 'cpu')).cpu;
      process.stderr.write(
        `${n} new callers on a cached Cloud SQL token: broker CPU ${((c3 - c2) / n / 1000).toFixed(2)} ms each; ` +
          `the same caller again: ${((c4 - c3) / n / 1000).toFixed(2)} ms each\n`,
      );
    }
  } finally {
    await stop(broker);
    await stop(server);
  }
}

void main();
