import autocannon from 'autocannon';
import { fork } from 'node:child_process';
import { closeSync, mkdirSync, openSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { SANDBOX } from '../local/ids';
import type { ServerInfo } from './server';

/**
 * The bench server profiled per endpoint (issue 27): `node dist/bench/profile-server.js <cloudsql|cosmos|trivial>
 * [out-dir]` forks bench/server.js, warms the one endpoint (3 s, 8 connections), then drives only it with autocannon
 * (PROFILE_SECONDS, 8; PROFILE_CONNECTIONS, 32) while the server's V8 CPU profiler runs (IPC `prof-start` /
 * `prof-stop`, 200 µs sampling), and prints per request: server CPU (user, system), answer and log bytes.
 * `node dist/bench/profile-server.js diff A.cpuprofile nA B.cpuprofile nB [fn|pkg]` compares two such profiles per
 * request, by function or package, self and inclusive time. The profile's times are wall time of the sampled thread
 * (a thread preempted inside `writev` is charged there); CPU per request is the process's.
 */

const CLOUDSQL = `cloudsql://${SANDBOX.google.project}/${SANDBOX.google.region}/${SANDBOX.google.instance}/${SANDBOX.google.database}`;
const COSMOS = `cosmos://${SANDBOX.cosmos.account}/${SANDBOX.cosmos.database}/${SANDBOX.cosmos.container}`;

interface CpuProfile {
  nodes: { id: number; callFrame: { functionName: string; url: string; lineNumber: number }; children?: number[] }[];
  samples: number[];
  timeDeltas: number[];
}

async function profile(target: string, outDir: string): Promise<void> {
  mkdirSync(outDir, { recursive: true });
  const logFile = join(outDir, `${target}.log`);
  const fd = openSync(logFile, 'w');
  const child = fork(join(__dirname, 'server.js'), [], { stdio: ['ignore', fd, 'inherit', 'ipc'] });
  closeSync(fd);
  const ask = <T>(cmd: string, extra: Record<string, unknown> = {}) =>
    new Promise<T>((resolve) => {
      child.once('message', (m) => resolve(m as T));
      child.send({ cmd, ...extra });
    });
  const info = await new Promise<ServerInfo>((resolve) =>
    child.once('message', (m: { ready?: ServerInfo }) => m.ready && resolve(m.ready)),
  );
  const base = info.brokerUrl.replace(/\/api$/, '');
  const body = new URLSearchParams({
    grant_type: 'urn:ietf:params:oauth:grant-type:token-exchange',
    subject_token_type: 'urn:ietf:params:oauth:token-type:access_token',
    subject_token: info.callerToken,
    resource: target === 'cosmos' ? COSMOS : CLOUDSQL,
  }).toString();
  const request = {
    method: 'POST' as const,
    path: target === 'trivial' ? info.trivialPath : '/api/token',
    headers: { authorization: `Bearer ${info.gatewayToken}`, 'content-type': 'application/x-www-form-urlencoded' },
    body,
  };
  const first = await fetch(base + request.path, { method: 'POST', headers: request.headers, body });
  const answer = await first.text();
  await autocannon({ url: base, duration: 3, connections: 8, requests: [request] });
  const logBefore = statSync(logFile).size;
  const c0 = (await ask<{ cpu: NodeJS.CpuUsage }>('prof-start')).cpu;
  const r = await autocannon({
    url: base,
    duration: Number(process.env.PROFILE_SECONDS ?? 8),
    connections: Number(process.env.PROFILE_CONNECTIONS ?? 32),
    requests: [request],
  });
  const file = join(outDir, `${target}.cpuprofile`);
  const c1 = (await ask<{ cpu: NodeJS.CpuUsage }>('prof-stop', { file })).cpu;
  await new Promise((res) => setTimeout(res, 200)); // the log writer's last batch
  const n = Math.max(1, r.requests.total);
  const figures = {
    target,
    status: first.status,
    requests: n,
    rps: Math.round(r.requests.average),
    cpuUsPerRequest: +((c1.user - c0.user + c1.system - c0.system) / n).toFixed(1),
    userUs: +((c1.user - c0.user) / n).toFixed(1),
    systemUs: +((c1.system - c0.system) / n).toFixed(1),
    answerBytes: Buffer.byteLength(answer),
    logBytesPerRequest: Math.round((statSync(logFile).size - logBefore) / n),
    errors: r.errors + r.non2xx,
    profile: file,
  };
  writeFileSync(join(outDir, `${target}.json`), JSON.stringify(figures, null, 2));
  process.stdout.write(`${JSON.stringify(figures)}\n`);
  await new Promise<void>((resolve) => {
    child.once('exit', () => resolve());
    child.send({ cmd: 'stop' });
    setTimeout(() => child.kill('SIGKILL'), 5000).unref();
  });
}

/** Self and inclusive time per request of each function (or package) of a profile. */
function perRequest(file: string, n: number, by: 'fn' | 'pkg'): { self: Map<string, number>; incl: Map<string, number> } {
  const p = JSON.parse(readFileSync(file, 'utf8')) as CpuProfile;
  const byId = new Map(p.nodes.map((x) => [x.id, x]));
  const parent = new Map<number, number>();
  for (const x of p.nodes) for (const c of x.children ?? []) parent.set(c, x.id);
  const time = new Map<number, number>();
  p.samples.forEach((id, i) => time.set(id, (time.get(id) ?? 0) + (p.timeDeltas[i + 1] ?? p.timeDeltas[i] ?? 0)));
  const key = (id: number): string => {
    const f = byId.get(id)!.callFrame;
    const url = f.url.replace(/^file:\/\//, '').replace(/^.*\/dist\//, '');
    if (by === 'pkg') {
      const m = /node_modules\/((@[^/]+\/)?[^/]+)/.exec(url);
      if (m) return m[1]!;
      if (url.startsWith('node:')) return url.replace(/^node:internal\/(\w+).*/, 'node:$1');
      return url ? url.replace(/\/[^/]+$/, '/') : f.functionName;
    }
    return `${f.functionName || '(anonymous)'} ${url.split('/').slice(-2).join('/')}:${f.lineNumber + 1}`;
  };
  const self = new Map<string, number>();
  const incl = new Map<string, number>();
  for (const [id, us] of time) {
    self.set(key(id), (self.get(key(id)) ?? 0) + us / n);
    const seen = new Set<string>();
    for (let cur: number | undefined = id; cur !== undefined; cur = parent.get(cur)) {
      const k = key(cur);
      if (seen.has(k)) continue;
      seen.add(k);
      incl.set(k, (incl.get(k) ?? 0) + us / n);
    }
  }
  return { self, incl };
}

function diff(args: string[]): void {
  const [fa, na, fb, nb, by = 'fn'] = args;
  const a = perRequest(fa!, Number(na), by as 'fn' | 'pkg');
  const b = perRequest(fb!, Number(nb), by as 'fn' | 'pkg');
  for (const kind of ['self', 'incl'] as const) {
    const keys = new Set([...a[kind].keys(), ...b[kind].keys()]);
    const rows = [...keys]
      .map((k) => [k, a[kind].get(k) ?? 0, b[kind].get(k) ?? 0] as const)
      .sort((x, y) => Math.abs(y[1] - y[2]) - Math.abs(x[1] - x[2]))
      .slice(0, 40);
    process.stdout.write(`\n${kind}, µs per request: A, B, A - B\n`);
    for (const [k, x, y] of rows)
      process.stdout.write(`${x.toFixed(1).padStart(7)} ${y.toFixed(1).padStart(7)} ${(x - y).toFixed(1).padStart(7)}  ${k}\n`);
  }
}

const [mode, ...rest] = process.argv.slice(2);
if (mode === 'diff') diff(rest);
else
  profile(mode ?? 'cloudsql', rest[0] ?? '/tmp/broker-profile').catch((e: unknown) => {
    process.stderr.write(`${(e as Error).stack}\n`);
    process.exit(1);
  });
