import autocannon from 'autocannon';
import { fork } from 'node:child_process';
import { closeSync, openSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { QueryServerInfo } from './query';

/**
 * (7) at 16 callers, one side per run, for a profile of the server process: bench/query.ts forked (with
 * PROFILE_NODE_ARGS, e.g. `--cpu-prof --cpu-prof-dir=/tmp/prof-q --cpu-prof-interval=250`), 2 s of warm-up, then
 * PROFILE_SECONDS (8) of autocannon at 16 connections on PROFILE_SIDE (`broker`: POST /api/query/order-count;
 * `baseline`: the hand-built endpoint, sent the same request headers). Prints req/s and the server's CPU per query,
 * and, when the process wrote a `.cpuprofile`, the profile's CPU per query by the nearest frame of our code or of a
 * package over the measured window (socket writes apart, by who wrote), scaled to the measured CPU:
 *
 *   node dist/bench/profile-query16.js            PROFILE_SIDE=baseline node dist/bench/profile-query16.js
 */

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string };
  children?: number[];
}
interface CpuProfile {
  nodes: ProfileNode[];
  startTime: number;
  endTime: number;
  samples: number[];
  timeDeltas: number[];
}

/** Our module (`own:shared/query/transaction`) or a package (`pkg:pg-protocol`) a frame belongs to, else undefined. */
function ownerOf(url: string): string | undefined {
  const pkg = /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(url);
  if (pkg) return `pkg:${pkg[1]}`;
  const own = /\/dist\/(.*)\.js$/.exec(url);
  return own ? `own:${own[1]}` : undefined;
}

const SYSCALLS = new Set(['writev', 'writeBuffer', 'writeUtf8String', 'writeLatin1String']);

/** µs of samples per bucket between `from` and `to` (profile clock, µs), idle left out. */
function attribute(p: CpuProfile, from: number, to: number): Map<string, number> {
  const byId = new Map(p.nodes.map((n) => [n.id, n]));
  const parent = new Map<number, number>();
  for (const n of p.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  const out = new Map<string, number>();
  let t = p.startTime;
  for (let i = 0; i < p.samples.length; i++) {
    t += p.timeDeltas[i]!;
    if (t < from || t > to) continue;
    const leaf = byId.get(p.samples[i]!)!;
    if (leaf.callFrame.functionName === '(idle)') continue;
    let owner: string | undefined;
    for (let n: ProfileNode | undefined = leaf; n && !owner; n = byId.get(parent.get(n.id) ?? -1))
      owner = ownerOf(n.callFrame.url);
    const f = leaf.callFrame;
    const key =
      !f.url && SYSCALLS.has(f.functionName)
        ? `socket/file write by ${owner ?? 'node (TLS emulator relay)'}`
        : (owner ?? `node:${f.url.replace(/^node:/, '') || f.functionName}`);
    out.set(key, (out.get(key) ?? 0) + (p.timeDeltas[i + 1] ?? p.timeDeltas[i]!));
  }
  return out;
}

async function main(): Promise<void> {
  const side = process.env.PROFILE_SIDE === 'baseline' ? 'baseline' : 'broker';
  const seconds = Number(process.env.PROFILE_SECONDS ?? 8);
  const nodeArgs = (process.env.PROFILE_NODE_ARGS ?? '').split(' ').filter(Boolean);
  const profDir = /--cpu-prof-dir=(\S+)/.exec(nodeArgs.join(' '))?.[1];
  const fd = openSync(process.env.PROFILE_LOG ?? '/dev/null', 'w');
  const child = fork(join(__dirname, 'query.js'), [], {
    stdio: ['ignore', fd, 'inherit', 'ipc'],
    execArgv: ['--experimental-vm-modules', ...nodeArgs],
  });
  closeSync(fd);
  const ready = await new Promise<{ ready?: QueryServerInfo; skipped?: string }>((r) => child.once('message', r));
  if (!ready.ready) throw new Error(`query server: ${ready.skipped}`);
  const info = ready.ready;
  const cpu = () =>
    new Promise<{ cpu: number }>((r) => {
      child.once('message', (m) => r(m as { cpu: number }));
      child.send({ cmd: 'cpu' });
    });
  const opts =
    side === 'broker'
      ? {
          url: info.brokerUrl.replace(/\/api$/, ''),
          requests: [{ method: 'POST' as const, path: '/api/query/order-count', headers: info.brokerHeaders, body: '{}' }],
        }
      : {
          url: info.baselineUrl,
          requests: [{ method: 'POST' as const, path: '/order-count', headers: info.brokerHeaders, body: '{}' }],
        };
  await autocannon({ ...opts, connections: 16, duration: 2 });
  const c0 = await cpu();
  const t0 = Date.now();
  const r = await autocannon({ ...opts, connections: 16, duration: seconds });
  const t1 = Date.now();
  const c1 = await cpu();
  child.send({ cmd: 'stop' });
  await new Promise((resolve) => child.once('exit', resolve));
  const end = Date.now();
  const n = Math.max(1, r.requests.total);
  const cpuPerQuery = (c1.cpu - c0.cpu) / n;
  process.stdout.write(
    `${side}: ${r.requests.average.toFixed(0)} req/s, ${cpuPerQuery.toFixed(0)} µs server CPU per query, ${r.non2xx + r.errors} failed\n`,
  );
  if (!profDir) return;
  const file = readdirSync(profDir)
    .filter((f) => f.endsWith('.cpuprofile') && f.includes(`.${child.pid}.`))
    .map((f) => join(profDir, f))[0];
  if (!file) return;
  const p = JSON.parse(readFileSync(file, 'utf8')) as CpuProfile;
  // The measured window, placed from the profile's end (the process exits right after the stop).
  const buckets = attribute(p, p.endTime - (end - t0) * 1000, p.endTime - (end - t1) * 1000);
  const total = [...buckets.values()].reduce((a, b) => a + b, 0);
  process.stdout.write(`${file}: µs per query (samples scaled to the measured CPU; ${(total / n).toFixed(0)} µs sampled)\n`);
  for (const [k, v] of [...buckets].sort((a, b) => b[1] - a[1]).slice(0, Number(process.env.PROFILE_TOP ?? 30)))
    process.stdout.write(`${((v * cpuPerQuery) / total).toFixed(1).padStart(8)}  ${k}\n`);
}

if (require.main === module)
  main().catch((e: unknown) => {
    process.stderr.write(`${(e as Error).stack}\n`);
    process.exit(1);
  });
