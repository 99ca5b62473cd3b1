import autocannon from 'autocannon';
import { fork, spawnSync, type ChildProcess } from 'node:child_process';
import http from 'node:http';
import { closeSync, mkdirSync, openSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { CallCounts, ServerInfo } from './server';
import type { BrokerMemory } from './broker-host';
import { SANDBOX } from '../local/ids';
import { fixedRate, percentile, sequential, summarise, type LatencySummary } from './load';
import type { McpServerInfo } from './mcp';
import { isCosmosToolName } from '../shared/mcp/cosmos-tools';
import type { QueryServerInfo } from './query';
import { updateReadme, type BenchResults, type Row } from './readme-table';

/**
 * `npm run bench`: runs the broker as production does (LOG_LEVEL=info, log lines on stdout redirected to a
 * file, telemetry on without an exporter), prints a table with PASS/FAIL beside each target, writes
 * bench/results/latest.json and regenerates the table of bench/README.md from it. Ratios compare runs made in the same
 * process, interleaved (bare, broker, bare, …), so a noisy machine moves both sides. Never fails CI.
 */

const DURATION = Number(process.env.BENCH_SECONDS ?? 5);
const CONNECTIONS = Number(process.env.BENCH_CONNECTIONS ?? 32);
const RATE = Number(process.env.BENCH_FIXED_RATE ?? 1000);
const LATENCY_MS = Number(process.env.BENCH_UPSTREAM_LATENCY_MS ?? 30);
const MEMORY_CALLERS = Number(process.env.BENCH_MEMORY_CALLERS ?? 10_000);
const MEMORY_SETTLE_MS = Number(process.env.BENCH_MEMORY_SETTLE_MS ?? 10_000);
const root = join(__dirname, '..', '..');
const dist = join(root, 'dist');
const logDir = join(tmpdir(), `broker-bench-${process.pid}`);
mkdirSync(logDir, { recursive: true });

const rows: Row[] = [];
const figures: Record<string, unknown> = {};

interface Server {
  child: ChildProcess;
  info: ServerInfo;
  logFile: string;
}

let serverSeq = 0;
function startServer(env: Record<string, string> = {}, execArgv: string[] = []): Promise<Server> {
  const logFile = join(logDir, `server-${++serverSeq}.log`);
  const fd = openSync(logFile, 'w');
  return new Promise((resolve, reject) => {
    const child = fork(join(__dirname, 'server.js'), [], {
      stdio: ['ignore', fd, 'inherit', 'ipc'],
      env: { ...process.env, ...env },
      execArgv: ['--experimental-vm-modules', ...execArgv, ...(process.env.BENCH_NODE_ARGS ?? '').split(' ').filter(Boolean)],
    });
    closeSync(fd);
    child.once('message', (m: { ready?: ServerInfo }) =>
      m.ready ? resolve({ child, info: m.ready, logFile }) : reject(new Error('bad ready message')),
    );
    child.once('exit', (code) => reject(new Error(`bench server exited with ${code}`)));
  });
}

/**
 * The broker alone in a process of its own (bench/broker-host.ts), with the app settings of the sandbox `s` runs:
 * the emulators' work never runs on the broker's event loop.
 */
async function startBroker(s: Server, env: Record<string, string> = {}, execArgv: string[] = []): Promise<Broker> {
  const { env: sandboxEnv } = await ask<{ env: Record<string, string> }>(s.child, 'env');
  const logFile = join(logDir, `broker-${++serverSeq}.log`);
  const fd = openSync(logFile, 'w');
  const child = fork(join(__dirname, 'broker-host.js'), [], {
    stdio: ['ignore', fd, 'inherit', 'ipc'],
    env: { ...process.env, ...sandboxEnv, LOG_LEVEL: 'info', GOOGLE_TOKEN_PREWARM: 'false', ...env },
    execArgv: [...execArgv, ...(process.env.BENCH_NODE_ARGS ?? '').split(' ').filter(Boolean)],
  });
  closeSync(fd);
  const url = await new Promise<string>((resolve, reject) => {
    child.once('message', (m: { ready?: string }) => (m.ready ? resolve(m.ready) : reject(new Error('bad ready message'))));
    child.once('exit', (code) => reject(new Error(`broker host exited with ${code}`)));
  });
  return { child, info: { ...s.info, brokerUrl: url }, logFile };
}

type Broker = Server;

function ask<T>(child: ChildProcess, cmd: string, extra: Record<string, unknown> = {}): Promise<T> {
  return new Promise((resolve) => {
    child.once('message', (m) => resolve(m as T));
    child.send({ cmd, ...extra });
  });
}

async function stopServer(s: Server): Promise<void> {
  await new Promise<void>((resolve) => {
    s.child.once('exit', () => resolve());
    s.child.send({ cmd: 'stop' });
    setTimeout(() => s.child.kill('SIGKILL'), 5000).unref();
  });
}

function tokenBody(resource: string, subject: string, extra: Record<string, string> = {}): string {
  return new URLSearchParams({
    grant_type: 'urn:ietf:params:oauth:grant-type:token-exchange',
    subject_token_type: 'urn:ietf:params:oauth:token-type:access_token',
    subject_token: subject,
    resource,
    ...extra,
  }).toString();
}

function tokenHeaders(info: ServerInfo): Record<string, string> {
  return { authorization: `Bearer ${info.gatewayToken}`, 'content-type': 'application/x-www-form-urlencoded' };
}

async function load(opts: autocannon.Options): Promise<autocannon.Result> {
  return autocannon({ duration: DURATION, connections: CONNECTIONS, ...opts });
}

function check(r: autocannon.Result, label: string): void {
  const bad = r.non2xx + r.errors + r.timeouts;
  if (bad > 0) process.stderr.write(`warning: ${label}: ${r.non2xx} non-2xx, ${r.errors} errors, ${r.timeouts} timeouts\n`);
}

const CLOUDSQL = `cloudsql://${SANDBOX.google.project}/${SANDBOX.google.region}/${SANDBOX.google.instance}/${SANDBOX.google.database}`;
const COSMOS = `cosmos://${SANDBOX.cosmos.account}/${SANDBOX.cosmos.database}/${SANDBOX.cosmos.container}`;
const TARGETS = [
  ['cloudsql', CLOUDSQL],
  ['cosmos', COSMOS],
] as const;

async function exchange(
  info: ServerInfo,
  resource: string,
  subject = info.callerToken,
  extra: Record<string, string> = {},
): Promise<{ status: number; ms: number }> {
  const t = performance.now();
  const res = await fetch(`${info.brokerUrl}/token`, {
    method: 'POST',
    headers: tokenHeaders(info),
    body: tokenBody(resource, subject, extra),
  });
  await res.arrayBuffer();
  return { status: res.status, ms: performance.now() - t };
}

const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
const r2 = (x: number) => Math.round(x * 100) / 100;

/** Today's figures before the optimisations of issue 27: the CPU-per-hit target is a ratio to them. */
const BASELINE_FILE = join(root, 'bench', 'results', 'baseline-2026-12-07.json');
function baselineFigure(key: string): number | undefined {
  try {
    const b = JSON.parse(readFileSync(BASELINE_FILE, 'utf8')) as { figures: Record<string, { cpuUsPerReq?: number }> };
    return b.figures[key]?.cpuUsPerReq;
  } catch {
    return undefined;
  }
}

interface LoadRun {
  rps: number;
  cpuUsPerReq: number;
  p50: number;
  p99: number;
  total: number;
}

/** One autocannon run against the server, with the server process's CPU per request over the run. */
async function measured(s: Server, opts: autocannon.Options, label: string): Promise<LoadRun> {
  const c0 = (await ask<{ cpu: number }>(s.child, 'cpu')).cpu;
  const r = await load(opts);
  const c1 = (await ask<{ cpu: number }>(s.child, 'cpu')).cpu;
  check(r, label);
  const total = Math.max(1, r.requests.total);
  return { rps: r.requests.average, cpuUsPerReq: (c1 - c0) / total, p50: r.latency.p50, p99: r.latency.p99, total };
}

async function throughput(): Promise<void> {
  const s = await startServer();
  const { info } = s;
  const base = info.brokerUrl.replace(/\/api$/, '');
  const post = (path: string, resource = CLOUDSQL) => ({
    method: 'POST' as const,
    path,
    headers: tokenHeaders(info),
    body: tokenBody(resource, info.callerToken),
  });
  const fmt = (x: LoadRun) => `${x.rps.toFixed(0)} req/s, ${x.cpuUsPerReq.toFixed(0)} µs CPU/req`;
  try {
    // The physical references (informational): bare node:http GET and POST with the body read, a trivial function
    // through the local host without the wrapper. Every request carries the token request's headers and body.
    const bareGet = await measured(s, { url: info.bareUrl }, 'bare GET');
    const barePost = await measured(s, { url: info.bareUrl, requests: [post('/')] }, 'bare POST');
    const noWrap = await measured(s, { url: base, requests: [post(info.trivialNoWrapPath)] }, 'trivial, no wrapper');
    figures.bare = { get: bareGet, post: barePost };
    figures.trivialNoWrapper = noWrap;
    rows.push(
      { id: '1', what: 'bare node:http GET (same server process)', value: fmt(bareGet) },
      { id: '1', what: 'bare node:http POST, token-request body read', value: fmt(barePost) },
      { id: '1', what: 'trivial function through the local host, no wrapper', value: fmt(noWrap) },
    );
    // The denominator: the trivial function with the httpHandler wrapper, interleaved: trivial, cloudsql, trivial,
    // cosmos, trivial. Each cache hit is compared with the trivial runs beside it.
    const trivialRuns: LoadRun[] = [];
    const trivialRun = async () => {
      const r = await measured(s, { url: base, requests: [post(info.trivialPath)] }, 'trivial');
      trivialRuns.push(r);
      return r;
    };
    let before = await trivialRun();
    for (const [name, resource] of TARGETS) {
      const first = await exchange(info, resource);
      if (first.status !== 200) {
        rows.push({
          id: '2',
          what: `POST /api/token cache hit (${name})`,
          value: `n/a: first exchange answered ${first.status}`,
        });
        continue;
      }
      // Unmeasured first: 2 s of hits, as a worker that has served traffic (the provider and its SDK loaded, the hit
      // path compiled); the trivial function's figure comes after 15 s of the same host and wrapper.
      await load({ url: base, duration: 2, connections: 8, requests: [post('/api/token', resource)] });
      const logBefore = statSync(s.logFile).size;
      const r = await measured(s, { url: base, requests: [post('/api/token', resource)] }, name);
      await new Promise((res) => setTimeout(res, 200)); // let the log writer drain
      const logBytesPerRequest = (statSync(s.logFile).size - logBefore) / r.total;
      const after = await trivialRun();
      const trivialRps = (before.rps + after.rps) / 2;
      const trivialCpu = (before.cpuUsPerReq + after.cpuUsPerReq) / 2;
      const ratio = r.rps / trivialRps;
      const baseCpu = baselineFigure(`token_${name}`);
      const cpuRatio = baseCpu ? r.cpuUsPerReq / baseCpu : undefined;
      figures[`token_${name}`] = {
        ...r,
        trivialRps,
        trivialCpuUsPerReq: trivialCpu,
        ratioToTrivial: ratio,
        baselineCpuUsPerReq: baseCpu,
        cpuRatioToBaseline: cpuRatio,
        logBytesPerRequest,
      };
      rows.push({
        id: '2',
        what: `POST /api/token cache hit (${name}): req/s over the trivial function with wrapper`,
        value: `${fmt(r)} vs trivial ${trivialRps.toFixed(0)} req/s, ${trivialCpu.toFixed(0)} µs = ${ratio.toFixed(2)}; p50/p99 ${r.p50}/${r.p99} ms; ${logBytesPerRequest.toFixed(0)} log bytes/req`,
        target: '≥ 0.65',
        pass: ratio >= 0.65,
      });
      rows.push({
        id: '2',
        what: `  server CPU per cache hit (${name}) over the baseline of ${BASELINE_FILE.split('/').pop()}`,
        value: baseCpu
          ? `${r.cpuUsPerReq.toFixed(0)} vs ${baseCpu.toFixed(0)} µs = ${cpuRatio!.toFixed(2)}`
          : `${r.cpuUsPerReq.toFixed(0)} µs (no baseline recorded)`,
        target: '≤ 0.70',
        pass: cpuRatio !== undefined && cpuRatio <= 0.7,
      });
      before = after;
    }
    figures.trivial = {
      rps: mean(trivialRuns.map((x) => x.rps)),
      cpuUsPerReq: mean(trivialRuns.map((x) => x.cpuUsPerReq)),
      runs: trivialRuns,
    };
    rows.push({
      id: '1',
      what: 'trivial function, httpHandler wrapper + its request line (the denominator; mean of the interleaved runs)',
      value: `${mean(trivialRuns.map((x) => x.rps)).toFixed(0)} req/s (${trivialRuns.map((x) => x.rps.toFixed(0)).join(', ')}), ${mean(trivialRuns.map((x) => x.cpuUsPerReq)).toFixed(0)} µs CPU/req`,
    });

    // Fixed rate, open loop, sub-ms resolution: trivial, broker, three times; the median of the three p99s each.
    const trivialReq = post(info.trivialPath);
    const brokerReq = post('/api/token');
    const fixedSeconds = Number(process.env.BENCH_FIXED_SECONDS ?? 10);
    const t: LatencySummary[] = [];
    const b: LatencySummary[] = [];
    await ask(s.child, 'eld-reset');
    for (let i = 0; i < 3; i++) {
      t.push(await fixedRate(base, trivialReq, RATE, fixedSeconds));
      b.push(await fixedRate(base, brokerReq, RATE, fixedSeconds));
    }
    const { eld } = await ask<{
      eld: { p50: number; p99: number; max: number; gc: { count: number; totalMs: number; maxMs: number } };
    }>(s.child, 'eld');
    const med3 = (xs: LatencySummary[]) => [...xs].map((x) => x.p99).sort((x, y) => x - y)[1]!;
    const trivialP99 = med3(t);
    const brokerP99 = med3(b);
    const ratio = brokerP99 / trivialP99;
    const errors = b.reduce((a, x) => a + x.errors, 0);
    figures.fixedRate = {
      rate: RATE,
      seconds: fixedSeconds,
      broker: b,
      trivial: t,
      trivialP99,
      brokerP99,
      p99Ratio: ratio,
      serverEventLoopDelayMs: eld,
    };
    rows.push({
      id: '3',
      what: `p99 at a fixed ${RATE} req/s, ${fixedSeconds} s × 3 interleaved runs (Cloud SQL cache hit) / trivial function with wrapper`,
      value: `${brokerP99.toFixed(2)} / ${trivialP99.toFixed(2)} ms = ${ratio.toFixed(2)}× (median of p99s; broker ${b.map((x) => x.p99.toFixed(2)).join(', ')}, trivial ${t.map((x) => x.p99.toFixed(2)).join(', ')} ms; ${errors} errors)`,
      target: '≤ 1.5×',
      pass: ratio <= 1.5 && errors === 0,
    });
    rows.push({
      id: '3',
      what: '  server event-loop delay over the six fixed-rate runs, p99 / max; GC',
      value: `${eld.p99.toFixed(1)} / ${eld.max.toFixed(1)} ms; GC ${eld.gc.count}× ${eld.gc.totalMs.toFixed(0)} ms, longest ${eld.gc.maxMs.toFixed(1)} ms`,
    });
  } finally {
    await stopServer(s);
  }
}

async function burst(): Promise<void> {
  for (const [name, resource, kinds] of [
    ['cloudsql', CLOUDSQL, ['sts', 'generateAccessToken']],
    ['cosmos', COSMOS, ['cosmos.user', 'cosmos.permission']],
  ] as const) {
    const s = await startServer({ BENCH_PREWARM: 'false' });
    try {
      const before = (await ask<{ counts: CallCounts }>(s.child, 'counts')).counts;
      const mintsBefore = (await ask<{ mints: CallCounts }>(s.child, 'mints')).mints;
      const statuses = await Promise.all(Array.from({ length: 1000 }, async () => (await exchange(s.info, resource)).status));
      const after = (await ask<{ counts: CallCounts }>(s.child, 'counts')).counts;
      const minted = diff(mintsBefore, (await ask<{ mints: CallCounts }>(s.child, 'mints')).mints);
      const delta = diff(before, after);
      const ok = statuses.filter((x) => x === 200).length;
      figures[`burst_${name}`] = { ok, calls: delta, googleTokensByKind: minted };
      const relevant = Object.entries(delta).filter(([k]) => kinds.some((kind) => k.toLowerCase().includes(kind.toLowerCase())));
      // One call per kind of upstream answer: for generateAccessToken, one per kind of Google token (service account
      // and scopes; the exchange needs the login token and, for the connect settings, an Admin-API token), so the
      // calls must equal the kinds of token minted, each minted once.
      const perCall = ([k, v]: [string, number]) =>
        k.endsWith('iam.generateAccessToken')
          ? v === Object.keys(minted).length && Object.values(minted).every((x) => x === 1)
          : v === 1;
      const exactlyOne = relevant.length === kinds.length && relevant.every(perCall);
      const tokens = Object.entries(minted)
        .map(([k, v]) => `${k} ×${v}`)
        .join(', ');
      rows.push({
        id: '4',
        what: `1,000 concurrent identical cold requests (${name}): upstream calls`,
        value: `${ok}/1000 ok; ${
          Object.entries(delta)
            .map(([k, v]) => `${k}=${v}`)
            .join(', ') || 'none'
        }${tokens ? ` (Google tokens minted, by kind: ${tokens})` : ''}`,
        target: 'exactly 1 per kind',
        pass: ok === 1000 && exactlyOne,
      });
    } finally {
      await stopServer(s);
    }
  }
}

const listCalls = (delta: CallCounts) =>
  Object.entries(delta)
    .map(([k, v]) => `${k}=${v}`)
    .join(', ') || 'none';

function diff(before: CallCounts, after: CallCounts): CallCounts {
  const out: CallCounts = {};
  for (const [k, v] of Object.entries(after))
    if (v - (before[k] ?? 0) > 0 && !k.startsWith('entra:')) out[k] = v - (before[k] ?? 0);
  return out;
}

/**
 * (8) Cold exchange with every upstream answering after LATENCY_MS: the broker's own cost is the time above
 * (upstream calls made × latency). "Cold" = every credential cache and client dropped, code paths warm (a cache
 * miss in a running worker: expiry, a new partition, a policy change). Also reported: the first exchange of a fresh
 * process without prewarm (code paths cold too), and the first caller of a process that prewarms.
 */
async function cold(): Promise<void> {
  // The upstream time is what the emulators took to answer the broker's calls (the configured latency plus their
  // own work: signing tokens, TLS on their side); the broker's cost is the rest of the exchange's time. The broker
  // runs in a process of its own (bench/broker-host.ts), the emulators in the sandbox's (bench/server.ts): their
  // work outside the time they record (reading the request, writing the answer) is not on the broker's event loop.
  // BENCH_MISS_SHARED=1: the layout before (the broker on the emulators' event loop), to compare the two.
  const shared = process.env.BENCH_MISS_SHARED === '1';
  const s = await startServer({ BENCH_PREWARM: 'false', ...(shared ? { BENCH_PRELOAD: '1' } : {}) });
  const b = shared ? s : await startBroker(s, { BENCH_PRELOAD: '1' });
  type Sample = {
    ms: number;
    overhead: number;
    calls: number;
    upstreamMs: number;
    /** CPU of the broker's process over the exchange (µs; with BENCH_MISS_SHARED=1 the emulators' too). */
    brokerCpuUs: number;
    delta: CallCounts;
    status: number;
  };
  const upstreamCalls = async (resource: string, subject = b.info.callerToken, extra: Record<string, string> = {}) => {
    const before = await ask<{ counts: CallCounts; durations: CallCounts }>(s.child, 'counts');
    const c0 = (await ask<{ cpu: number }>(b.child, 'cpu')).cpu;
    const r = await exchange(b.info, resource, subject, extra);
    const c1 = (await ask<{ cpu: number }>(b.child, 'cpu')).cpu;
    const after = await ask<{ counts: CallCounts; durations: CallCounts }>(s.child, 'counts');
    const delta = diff(before.counts, after.counts);
    const calls = Object.values(delta).reduce((x, y) => x + y, 0);
    const upstreamMs = Object.keys(delta).reduce((x, k) => x + (after.durations[k] ?? 0) - (before.durations[k] ?? 0), 0);
    const sample: Sample = {
      ms: r.ms,
      overhead: r.ms - upstreamMs,
      calls,
      upstreamMs,
      brokerCpuUs: c1 - c0,
      delta,
      status: r.status,
    };
    return sample;
  };
  const median = (xs: Sample[]) => [...xs].sort((x, y) => x.overhead - y.overhead)[Math.floor(xs.length / 2)]!;
  const cpuMs = (xs: Sample[]) => [...xs].map((x) => x.brokerCpuUs / 1000).sort((x, y) => x - y)[Math.floor(xs.length / 2)]!;
  try {
    // The process-cold first exchange (informational), then warm code paths and measure cache misses.
    await ask(s.child, 'latency', { latencyMs: LATENCY_MS });
    await warmJwks(b.info);
    for (const [name, resource] of TARGETS) {
      const m = await upstreamCalls(resource);
      figures[`firstInProcess_${name}`] = {
        status: m.status,
        ms: m.ms,
        upstreamCalls: m.delta,
        upstreamMs: m.upstreamMs,
        overheadMs: m.overhead,
        brokerCpuUs: m.brokerCpuUs,
      };
      rows.push({
        id: '8',
        what: `  first ${name} exchange of a fresh process, no prewarm (code paths cold too)`,
        value: `${m.ms.toFixed(1)} ms vs ${m.upstreamMs.toFixed(1)} ms upstream: +${m.overhead.toFixed(1)} ms`,
      });
    }
    // The cache misses of a running worker: a Cloud SQL token that must be re-minted (its cached entry outlives the
    // cap asked: generateAccessToken, the federated token still cached), and a Cosmos caller seen for the first time.
    const misses: Record<string, Sample[]> = { cloudsql: [], cosmos: [], cosmosVerified: [] };
    const { tokens: fresh } = await ask<{ tokens: string[] }>(s.child, 'mint-callers', { n: 13, offset: 900_000 });
    // A worker that has served traffic: the request path warmed by cache hits of both kinds, and three misses of
    // each kind not measured (the first misses also compile the miss path).
    const base = b.info.brokerUrl.replace(/\/api$/, '');
    for (const [, resource] of TARGETS)
      await autocannon({
        url: base,
        duration: 2,
        connections: 8,
        requests: [
          { method: 'POST', path: '/api/token', headers: tokenHeaders(b.info), body: tokenBody(resource, b.info.callerToken) },
        ],
      });
    for (let i = 0; i < 3; i++) {
      await exchange(b.info, CLOUDSQL, b.info.callerToken, { requested_lifetime: String(890 - i * 10) });
      await exchange(b.info, COSMOS, fresh[5 + i]);
    }
    for (let i = 0; i < 5; i++) {
      misses.cloudsql!.push(await upstreamCalls(CLOUDSQL, b.info.callerToken, { requested_lifetime: String(800 - i * 60) }));
      misses.cosmos!.push(await upstreamCalls(COSMOS, fresh[i]));
      // The same Cosmos miss for a caller whose token the broker has already verified (its Cloud SQL token, a cache
      // hit, came first): the Cloud SQL row's condition, so the two rows differ only by the upstream work.
      await exchange(b.info, CLOUDSQL, fresh[8 + i]);
      misses.cosmosVerified!.push(await upstreamCalls(COSMOS, fresh[8 + i]));
    }
    for (const [name, what] of [
      ['cloudsql', 'Cloud SQL token re-minted (cached one outlives the cap asked)'],
      ['cosmos', 'Cosmos caller seen for the first time'],
      ['cosmosVerified', 'Cosmos caller seen for the first time, its token already verified (informational)'],
    ] as const) {
      const xs = misses[name]!;
      const med = median(xs);
      figures[`miss_${name}`] = { latencyMs: LATENCY_MS, median: med, brokerCpuMsMedian: cpuMs(xs), samples: xs };
      const target = name !== 'cosmosVerified';
      rows.push({
        id: '8',
        what: `cache miss in a worker that has served traffic, ${what}, upstreams at ${LATENCY_MS} ms: total vs upstream sum, median of ${xs.length}`,
        value: `${med.ms.toFixed(1)} ms vs ${med.calls} calls answered in ${med.upstreamMs.toFixed(1)} ms: +${med.overhead.toFixed(1)} ms (${listCalls(med.delta)}; broker CPU ${cpuMs(xs).toFixed(1)} ms per miss, median)`,
        ...(target
          ? {
              target: '≤ 2 ms + 2.5 ms per upstream call',
              pass: xs.every((x) => x.status === 200) && med.overhead <= 2 + 2.5 * med.calls,
            }
          : {}),
      });
    }
    const samples: Record<string, Sample[]> = { cloudsql: [], cosmos: [] };
    for (let i = 0; i < 5; i++) {
      await ask(b.child, 'reset-caches');
      for (const [name, resource] of TARGETS) samples[name]!.push(await upstreamCalls(resource));
    }
    for (const [name] of TARGETS) {
      const xs = samples[name]!;
      const med = median(xs);
      figures[`cold_${name}`] = { latencyMs: LATENCY_MS, median: med, brokerCpuMsMedian: cpuMs(xs), samples: xs };
      rows.push({
        id: '8',
        what: `cold ${name} exchange (all caches dropped, code warm), upstreams at ${LATENCY_MS} ms: total vs upstream sum, median of ${xs.length}`,
        value: `${med.ms.toFixed(1)} ms vs ${med.calls} calls answered in ${med.upstreamMs.toFixed(1)} ms: +${med.overhead.toFixed(1)} ms (${listCalls(med.delta)}; budget at the miss target ${(2 + 2.5 * med.calls).toFixed(1)} ms; broker CPU ${cpuMs(xs).toFixed(1)} ms)`,
      });
    }
  } finally {
    if (b !== s) await stopServer(b);
    await stopServer(s);
  }
  const w = await startServer({ BENCH_PRELOAD: '1', BENCH_PREWARM: 'true' });
  try {
    await ask(w.child, 'latency', { latencyMs: LATENCY_MS });
    await new Promise((res) => setTimeout(res, 1000 + 6 * LATENCY_MS)); // the start-up prewarm runs
    await warmJwks(w.info);
    const before = (await ask<{ counts: CallCounts }>(w.child, 'counts')).counts;
    const r = await exchange(w.info, CLOUDSQL);
    const delta = diff(before, (await ask<{ counts: CallCounts }>(w.child, 'counts')).counts);
    figures.prewarmedFirstCloudsql = { status: r.status, ms: r.ms, upstreamCalls: delta };
    rows.push({
      id: '8',
      what: 'first Cloud SQL exchange after start with prewarm on (same latency)',
      value: `${r.ms.toFixed(1)} ms, upstream calls: ${listCalls(delta)}`,
      target: 'no Google call',
      pass: r.status === 200 && !Object.keys(delta).some((k) => k.startsWith('google')),
    });
  } finally {
    await stopServer(w);
  }
}

async function warmJwks(info: ServerInfo): Promise<void> {
  const res = await fetch(`${info.brokerUrl}/policy/explain`, {
    method: 'POST',
    headers: tokenHeaders(info),
    body: new URLSearchParams({ subject_token: info.callerToken, resource: CLOUDSQL }).toString(),
  });
  await res.arrayBuffer();
}

/**
 * (9) RSS of the broker's process (alone: the emulators run in the sandbox process) after N distinct callers
 * through every cache (a Cloud SQL and a Cosmos exchange each: JWT, Google token, Cosmos resource token caches),
 * then after N more, then N more again (bounded caches plateau; a leak grows by the same step each wave). Each reading
 * is taken after a full GC, and again after BENCH_MEMORY_SETTLE_MS idle (the target's). The second wave must not
 * grow it by more than 10 %. MALLOC_ARENA_MAX in the environment reaches the broker (glibc arenas, bench/README.md).
 */
async function memory(): Promise<void> {
  const s = await startServer({ BENCH_PREWARM: 'false' });
  const broker = await startBroker(s, {}, ['--expose-gc']);
  try {
    const info = broker.info;
    const wave = async (offset: number) => {
      const { tokens } = await ask<{ tokens: string[] }>(s.child, 'mint-callers', { n: MEMORY_CALLERS, offset });
      let next = 0;
      let bad = 0;
      const failures: Record<string, number> = {};
      await Promise.all(
        Array.from({ length: 16 }, async () => {
          while (next < tokens.length) {
            const t = tokens[next++]!;
            for (const [name, resource] of TARGETS) {
              const { status } = await exchange(info, resource, t);
              if (status !== 200) {
                bad++;
                failures[`${name}:${status}`] = (failures[`${name}:${status}`] ?? 0) + 1;
              }
            }
          }
        }),
      );
      const m = await ask<BrokerMemory>(broker.child, 'rss');
      const settled = await ask<BrokerMemory>(broker.child, 'rss', { settleMs: MEMORY_SETTLE_MS });
      return { ...m, settled, bad, failures };
    };
    await exchange(info, CLOUDSQL);
    await exchange(info, COSMOS);
    const base = await ask<BrokerMemory>(broker.child, 'rss', { settleMs: MEMORY_SETTLE_MS });
    const w1 = await wave(0);
    const w2 = await wave(MEMORY_CALLERS);
    // A third wave: bounded caches plateau; a leak keeps growing by about the same step.
    const w3 = await wave(2 * MEMORY_CALLERS);
    // The target reads the settled figures: after a full GC and 10 s idle, when V8 has given back the young
    // generation it grew under load (~28 MB) — what an idle worker holds. The readings right after the GC are kept.
    const growth = (w2.settled.rss - w1.settled.rss) / w1.settled.rss;
    const growth3 = (w3.settled.rss - w2.settled.rss) / w2.settled.rss;
    const pct = (x: number) => `${(x * 100).toFixed(1)} %`;
    const mb = (x: number) => `${(x / 1048576).toFixed(0)} MB`;
    const bad = w1.bad + w2.bad + w3.bad;
    figures.memory = {
      callersPerWave: MEMORY_CALLERS,
      settleMs: MEMORY_SETTLE_MS,
      mallocArenaMax: process.env.MALLOC_ARENA_MAX,
      start: base,
      wave1: w1,
      wave2: w2,
      wave3: w3,
      growth,
      growthThirdWave: growth3,
      growthRightAfterGc: (w2.rss - w1.rss) / w1.rss,
    };
    const arenas = process.env.MALLOC_ARENA_MAX ? `, MALLOC_ARENA_MAX=${process.env.MALLOC_ARENA_MAX}` : '';
    rows.push({
      id: '9',
      what: `broker RSS after ${MEMORY_CALLERS.toLocaleString('en')} distinct callers (both kinds), then ${MEMORY_CALLERS.toLocaleString('en')} more, then a third wave (full GC, ${MEMORY_SETTLE_MS / 1000} s idle${arenas})`,
      value: `${mb(base.rss)} → ${mb(w1.settled.rss)} → ${mb(w2.settled.rss)} → ${mb(w3.settled.rss)} (second wave ${pct(growth)}, third ${pct(growth3)}; right after the GC ${mb(w1.rss)} → ${mb(w2.rss)} → ${mb(w3.rss)}; heap used ${mb(w1.heapUsed)} → ${mb(w2.heapUsed)} → ${mb(w3.heapUsed)}, heap total ${mb(w1.settled.heapTotal)} → ${mb(w2.settled.heapTotal)} → ${mb(w3.settled.heapTotal)}, outside the V8 heap ${mb(w1.settled.rss - w1.settled.heapTotal)} → ${mb(w2.settled.rss - w2.settled.heapTotal)} → ${mb(w3.settled.rss - w3.settled.heapTotal)}; ${bad} failed${bad ? ` ${JSON.stringify({ ...w1.failures, ...w2.failures, ...w3.failures })}` : ''})`,
      target: 'second wave ≤ +10 %',
      pass: growth <= 0.1 && bad === 0,
    });
  } finally {
    await stopServer(broker);
    await stopServer(s);
  }
}

function jwtValidation(): void {
  const r = spawnSync(process.execPath, [join(__dirname, 'jwt-validate.js')], { encoding: 'utf8' });
  const out = JSON.parse(r.stdout || '{}') as { perSecond?: number };
  figures.jwtValidationPerSecond = out.perSecond;
  rows.push({
    id: '5',
    what: 'JWT validation alone (one core), validations/s',
    value: out.perSecond ? out.perSecond.toFixed(0) : `failed: ${r.stderr.slice(0, 200)}`,
  });
}

function coldImports(): void {
  const runs = Number(process.env.BENCH_IMPORT_RUNS ?? 5);
  const time = (modules: string[]): number => {
    const script = `const t=process.hrtime.bigint();${modules.map((m) => `require(${JSON.stringify(m)});`).join('')}process.stdout.write(String(Number(process.hrtime.bigint()-t)/1e6));`;
    const xs: number[] = [];
    for (let i = 0; i < runs; i++) {
      const r = spawnSync(process.execPath, ['-e', script], {
        encoding: 'utf8',
        cwd: root,
        env: { ...process.env, GOOGLE_TOKEN_PREWARM: 'false' },
      });
      xs.push(Number(r.stdout));
    }
    return percentile(
      [...xs].sort((a, b) => a - b),
      50,
    );
  };
  const fnDir = join(dist, 'functions');
  const files = readdirSync(fnDir)
    .filter((f) => f.endsWith('.js'))
    .sort();
  const all: Record<string, number> = {};
  for (const f of files) {
    const ms = time([join(fnDir, f)]);
    all[f] = ms;
    const isToken = f === 'token.js';
    rows.push({
      id: '6',
      what: `cold import of functions/${f} (median of ${runs})`,
      value: `${ms.toFixed(0)} ms`,
      ...(isToken ? { target: '< 300 ms', pass: ms < 300 } : {}),
    });
  }
  const whole = time(files.map((f) => join(fnDir, f)));
  all['(whole app)'] = whole;
  rows.push({ id: '6', what: `cold import of the whole app (median of ${runs})`, value: `${whole.toFixed(0)} ms` });
  figures.coldImportMs = all;
}

interface QueryPhase {
  p50: number;
  p99: number;
  rps: number;
  nodeCpuUsPerReq: number;
  pgCpuUsPerReq: number;
  failed: number;
}

/**
 * (7) The query server (bench/query.ts) in a child process; the load from this one. Interleaved: baseline, broker,
 * baseline, broker sequentially, then baseline, broker, baseline at 16 concurrent callers; each phase with the
 * server process's CPU and PostgreSQL's backends' CPU per request.
 */
async function query(): Promise<void> {
  const N = Number(process.env.BENCH_QUERY_N ?? 400);
  const SECONDS = Number(process.env.BENCH_QUERY_SECONDS ?? 4);
  const logFile = join(logDir, 'query.log');
  const fd = openSync(logFile, 'w');
  const child = fork(join(__dirname, 'query.js'), [], {
    stdio: ['ignore', fd, 'inherit', 'ipc'],
    execArgv: ['--experimental-vm-modules', ...(process.env.BENCH_QUERY_NODE_ARGS ?? '').split(' ').filter(Boolean)],
  });
  closeSync(fd);
  const killer = setTimeout(() => child.kill('SIGKILL'), 300_000);
  killer.unref();
  const ready = await new Promise<{ ready?: QueryServerInfo; skipped?: string }>((resolve) => {
    child.once('message', (m) => resolve(m as { ready?: QueryServerInfo; skipped?: string }));
    child.once('exit', (code) => resolve({ skipped: `query bench exited with ${code}` }));
  });
  if (!ready.ready) {
    figures.query = { skipped: ready.skipped };
    rows.push({
      id: '7',
      what: 'POST /api/query/{name} vs a hand-built endpoint on the same connector',
      value: `n/a: ${ready.skipped}`,
    });
    child.kill('SIGKILL');
    return;
  }
  const info = ready.ready;
  const cpu = () => ask<{ cpu: number; pg: number }>(child, 'cpu');
  const brokerCall = async () => {
    const res = await fetch(`${info.brokerUrl}/query/order-count`, { method: 'POST', headers: info.brokerHeaders, body: '{}' });
    await res.arrayBuffer();
    if (res.status !== 200) throw new Error(`query answered ${res.status}`);
  };
  // The same request on both sides (the hand-built endpoint reads none of the broker's headers, but parses them as
  // the broker's host does): only what each side does with it differs.
  const baselineCall = async () => {
    const res = await fetch(`${info.baselineUrl}/order-count`, { method: 'POST', headers: info.brokerHeaders, body: '{}' });
    await res.arrayBuffer();
    if (res.status !== 200) throw new Error(`baseline answered ${res.status}`);
  };
  const seq = { broker: [] as number[], baseline: [] as number[] };
  const seqCpu = { broker: { node: 0, pg: 0, n: 0 }, baseline: { node: 0, pg: 0, n: 0 } };
  try {
    for (let round = 0; round < 2; round++)
      for (const [k, fn] of [
        ['baseline', baselineCall],
        ['broker', brokerCall],
      ] as const) {
        for (let i = 0; i < 20; i++) await fn();
        const c0 = await cpu();
        seq[k].push(...(await sequential(N / 2, fn, 0)));
        const c1 = await cpu();
        seqCpu[k].node += c1.cpu - c0.cpu;
        seqCpu[k].pg += c1.pg - c0.pg;
        seqCpu[k].n += N / 2;
      }
    const concurrent = async (url: string, path: string, headers: Record<string, string>): Promise<QueryPhase> => {
      const c0 = await cpu();
      const r = await autocannon({
        url,
        duration: SECONDS,
        connections: 16,
        requests: [{ method: 'POST', path, headers, body: '{}' }],
      });
      const c1 = await cpu();
      const n = Math.max(1, r.requests.total);
      return {
        rps: r.requests.average,
        p50: r.latency.p50,
        p99: r.latency.p99,
        nodeCpuUsPerReq: (c1.cpu - c0.cpu) / n,
        pgCpuUsPerReq: (c1.pg - c0.pg) / n,
        failed: r.non2xx + r.errors + r.timeouts,
      };
    };
    const baseUrl = info.brokerUrl.replace(/\/api$/, '');
    const b1 = await concurrent(info.baselineUrl, '/order-count', info.brokerHeaders);
    const br = await concurrent(baseUrl, '/api/query/order-count', info.brokerHeaders);
    const b2 = await concurrent(info.baselineUrl, '/order-count', info.brokerHeaders);
    const sumSeq = (xs: number[]) => summarise(xs, 0, xs.reduce((a, b) => a + b, 0) / 1000);
    const sBroker = sumSeq(seq.broker);
    const sBase = sumSeq(seq.baseline);
    const per = (k: 'broker' | 'baseline') => ({
      node: seqCpu[k].node / seqCpu[k].n,
      pg: seqCpu[k].pg / seqCpu[k].n,
    });
    const cb = per('broker');
    const cBase = per('baseline');
    const baseRps = (b1.rps + b2.rps) / 2;
    const medianRatio = sBroker.p50 / sBase.p50;
    const thrRatio = br.rps / baseRps;
    // PostgreSQL CPU per query is judged at 16 callers: /proc counts it in 10 ms ticks, and the sequential phases
    // (a few hundred queries, 5–10 ticks each) moved the ratio between 0.57 and 1.10 across runs of the same code;
    // the concurrent phases count thousands of queries per side.
    const basePg = (b1.pgCpuUsPerReq + b2.pgCpuUsPerReq) / 2;
    const pgRatio = br.pgCpuUsPerReq / basePg;
    figures.query = {
      n: N,
      poolMax: info.poolMax,
      sequential: { broker: sBroker, baseline: sBase, medianRatio, cpu: { broker: cb, baseline: cBase } },
      concurrent16: { broker: br, baseline: [b1, b2], throughputRatio: thrRatio, pgCpuRatio: pgRatio },
    };
    rows.push({
      id: '7',
      what: `POST /api/query/order-count vs a hand-built endpoint (same connector, TLS instance, pool of ${info.poolMax}), sequential medians`,
      value: `${sBroker.p50.toFixed(2)} vs ${sBase.p50.toFixed(2)} ms = ${medianRatio.toFixed(2)}×; p99 ${sBroker.p99.toFixed(2)} vs ${sBase.p99.toFixed(2)} ms`,
      target: '≤ 1.35×',
      pass: medianRatio <= 1.35,
    });
    rows.push({
      id: '7',
      what: '  same at 16 concurrent callers: throughput',
      value: `${br.rps.toFixed(0)} vs ${baseRps.toFixed(0)} req/s = ${thrRatio.toFixed(2)}; broker p50/p99 ${br.p50}/${br.p99} ms, ${br.failed} failed`,
      target: '≥ 0.6',
      pass: thrRatio >= 0.6 && br.failed === 0,
    });
    rows.push({
      id: '7',
      what: '  PostgreSQL CPU per query (its backends, /proc), at 16 callers; sequential beside it (few ticks: informational)',
      value: `${br.pgCpuUsPerReq.toFixed(0)} vs ${basePg.toFixed(0)} µs = ${pgRatio.toFixed(2)}; sequential ${cb.pg.toFixed(0)} vs ${cBase.pg.toFixed(0)} µs`,
      target: '≤ 0.8',
      pass: pgRatio <= 0.8,
    });
    rows.push({
      id: '7',
      what: '  server process CPU per query (broker, or hand-built endpoint; both beside the TLS instance emulator), sequential / 16 callers',
      value: `${cb.node.toFixed(0)} vs ${cBase.node.toFixed(0)} µs; ${br.nodeCpuUsPerReq.toFixed(0)} vs ${((b1.nodeCpuUsPerReq + b2.nodeCpuUsPerReq) / 2).toFixed(0)} µs`,
    });
  } finally {
    child.send({ cmd: 'stop' });
    await new Promise<void>((resolve) => {
      child.once('exit', () => resolve());
      setTimeout(() => {
        child.kill('SIGKILL');
        resolve();
      }, 10_000).unref();
    });
  }
}

/**
 * (10) The MCP server (bench/mcp.ts) in a child process, the load from this one: sequential requests interleaved
 * in rounds — POST /api/query/order-count, tools/call order-count, tools/list (100 catalogued queries granted) — each
 * phase with the server process's CPU per request. Targets of issue 24: tools/call ≤ 1.2× the median of /api/query,
 * tools/list ≤ 2 ms median.
 */
async function mcp(): Promise<void> {
  const N = Number(process.env.BENCH_MCP_N ?? 600);
  const ROUNDS = 3;
  const logFile = join(logDir, 'mcp.log');
  const fd = openSync(logFile, 'w');
  const child = fork(join(__dirname, 'mcp.js'), [], {
    stdio: ['ignore', fd, 'inherit', 'ipc'],
    execArgv: ['--experimental-vm-modules', ...(process.env.BENCH_MCP_NODE_ARGS ?? '').split(' ').filter(Boolean)],
  });
  closeSync(fd);
  const killer = setTimeout(() => child.kill('SIGKILL'), 300_000);
  killer.unref();
  const ready = await new Promise<{ ready?: McpServerInfo; skipped?: string }>((resolve) => {
    child.once('message', (m) => resolve(m as { ready?: McpServerInfo; skipped?: string }));
    child.once('exit', (code) => resolve({ skipped: `mcp bench exited with ${code}` }));
  });
  if (!ready.ready) {
    figures.mcp = { skipped: ready.skipped };
    rows.push({ id: '10', what: 'MCP tools/call and tools/list', value: `n/a: ${ready.skipped}` });
    child.kill('SIGKILL');
    return;
  }
  const info = ready.ready;
  const cpu = () => ask<{ cpu: number; pg: number }>(child, 'cpu');
  const rpc = (method: string, params?: Record<string, unknown>) =>
    JSON.stringify({ jsonrpc: '2.0', id: 1, method, ...(params ? { params } : {}) });
  const callBody = rpc('tools/call', { name: 'order-count', arguments: {} });
  const listBody = rpc('tools/list');
  // node:http on one kept-alive socket, not fetch: undici's fetch alone adds 0.4-1 ms to a request here (more with a
  // 120 KB answer), which is the client's time, not the server's, and would swamp a 2 ms target.
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  const base = new URL(info.brokerUrl);
  const post = (path: string, headers: Record<string, string>, body: string): Promise<string> =>
    new Promise((resolve, reject) => {
      const req = http.request(
        { host: base.hostname, port: base.port, path: `${base.pathname}${path}`, method: 'POST', agent, headers },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('end', () => {
            const text = Buffer.concat(chunks).toString('utf8');
            if (res.statusCode === 200) resolve(text);
            else reject(new Error(`${path} answered ${res.statusCode}: ${text.slice(0, 200)}`));
          });
          res.on('error', reject);
        },
      );
      req.on('error', reject);
      req.end(body);
    });
  const phases = {
    query: () => post('/query/order-count', info.queryHeaders, '{}'),
    call: () => post('/mcp', info.mcpHeaders, callBody),
    list: () => post('/mcp', info.mcpHeaders, listBody),
  };
  try {
    // What is measured is what it claims to be: a tool result with rows, and the 100 granted tools listed.
    const call = JSON.parse(await phases.call()) as { result?: { isError?: boolean; structuredContent?: { rows: unknown[] } } };
    if (!call.result || call.result.isError || !call.result.structuredContent?.rows.length)
      throw new Error(`tools/call order-count did not answer rows: ${JSON.stringify(call).slice(0, 300)}`);
    const list = JSON.parse(await phases.list()) as { result?: { tools: { name: string }[] } };
    // The catalogued queries' tools: explain_access and the Cosmos read tools of the caller's containers aside.
    const tools = list.result?.tools.filter((t) => t.name !== 'explain_access' && !isCosmosToolName(t.name)).length;
    if (tools !== info.granted) throw new Error(`tools/list listed ${tools} catalogued queries, not ${info.granted}`);
    const lat = { query: [] as number[], call: [] as number[], list: [] as number[] };
    const cpuUs = { query: 0, call: 0, list: 0 };
    for (let round = 0; round < ROUNDS; round++)
      for (const k of ['query', 'call', 'list'] as const) {
        const n = Math.round(N / ROUNDS);
        const fn = async () => void (await phases[k]());
        for (let i = 0; i < 20; i++) await fn();
        const c0 = await cpu();
        lat[k].push(...(await sequential(n, fn, 0)));
        const c1 = await cpu();
        cpuUs[k] += (c1.cpu - c0.cpu) / (n * ROUNDS);
      }
    const sumSeq = (xs: number[]) => summarise(xs, 0, xs.reduce((a, b) => a + b, 0) / 1000);
    const sQuery = sumSeq(lat.query);
    const sCall = sumSeq(lat.call);
    const sList = sumSeq(lat.list);
    const ratio = sCall.p50 / sQuery.p50;
    figures.mcp = {
      n: N,
      rounds: ROUNDS,
      granted: info.granted,
      sequential: { query: sQuery, toolsCall: sCall, toolsList: sList, callOverQuery: ratio },
      serverCpuUsPerRequest: cpuUs,
    };
    rows.push({
      id: '10',
      what: 'MCP tools/call order-count vs POST /api/query/order-count (same process, interleaved), sequential medians',
      value: `${sCall.p50.toFixed(2)} vs ${sQuery.p50.toFixed(2)} ms = ${ratio.toFixed(2)}×; p99 ${sCall.p99.toFixed(2)} vs ${sQuery.p99.toFixed(2)} ms`,
      target: '≤ 1.2×',
      pass: ratio <= 1.2,
    });
    rows.push({
      id: '10',
      what: `  MCP tools/list, ${info.granted} catalogued queries granted (HTTP, the real endpoint), sequential median`,
      value: `${sList.p50.toFixed(2)} ms; p99 ${sList.p99.toFixed(2)} ms`,
      target: '≤ 2 ms',
      pass: sList.p50 <= 2,
    });
    rows.push({
      id: '10',
      what: '  server process CPU per request: /api/query, tools/call, tools/list (beside the TLS instance emulator)',
      value: `${cpuUs.query.toFixed(0)}, ${cpuUs.call.toFixed(0)}, ${cpuUs.list.toFixed(0)} µs`,
    });
  } finally {
    agent.destroy();
    child.send({ cmd: 'stop' });
    await new Promise<void>((resolve) => {
      child.once('exit', () => resolve());
      setTimeout(() => {
        child.kill('SIGKILL');
        resolve();
      }, 10_000).unref();
    });
  }
}

/**
 * (11) Caller identity mode (bench/caller-mode.ts): cold caller vs its hand-built floor, warm vs the service account's
 * query, memory with BENCH_CALLER_MEMORY distinct callers. In a child process of its own (a sandbox with PostgreSQL,
 * `--expose-gc` for the heap figures).
 */
async function callerMode(): Promise<void> {
  const child = fork(join(__dirname, 'caller-mode.js'), [], {
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    execArgv: ['--expose-gc', '--experimental-vm-modules'],
  });
  const killer = setTimeout(() => child.kill('SIGKILL'), 600_000);
  killer.unref();
  const r = await new Promise<{ result?: { rows: Row[]; figures: Record<string, unknown> }; failed?: string }>((resolve) => {
    child.once('message', (m) => resolve(m as { result: { rows: Row[]; figures: Record<string, unknown> } }));
    child.once('exit', (code) => resolve({ failed: `caller-mode bench exited with ${code}` }));
  });
  clearTimeout(killer);
  if (!r.result) {
    figures.callerMode = { skipped: r.failed };
    rows.push({ id: '11', what: 'caller identity mode (bench/caller-mode.ts)', value: `n/a: ${r.failed}` });
    return;
  }
  rows.push(...r.result.rows);
  figures.callerMode = r.result.figures;
}

function print(): void {
  const w = (s: string, n: number) => (s.length > n ? s : s + ' '.repeat(n - s.length));
  const lines = ['', `${w('#', 3)}${w('measure', 80)}${w('value', 70)}${w('target', 22)}result`];
  for (const r of rows)
    lines.push(
      `${w(r.id, 3)}${w(r.what, 80)}${w(r.value, 70)}${w(r.target ?? '', 22)}${r.pass === undefined ? '' : r.pass ? 'PASS' : 'FAIL'}`,
    );
  process.stdout.write(lines.join('\n') + '\n\n');
}

async function main(): Promise<void> {
  const only = process.env.BENCH_ONLY?.split(',');
  const want = (k: string) => !only || only.includes(k);
  const started = Date.now();
  const sections: Record<string, () => unknown> = {
    throughput,
    burst,
    cold,
    jwt: jwtValidation,
    imports: coldImports,
    query,
    mcp,
    memory,
    caller: callerMode,
  };
  const seconds: Record<string, number> = {};
  for (const [name, run] of Object.entries(sections)) {
    if (!want(name)) continue;
    const t = Date.now();
    process.stderr.write(`bench: ${name} …\n`);
    await run();
    seconds[name] = r2((Date.now() - t) / 1000);
  }
  figures.sectionSeconds = seconds;
  rows.sort((a, b) => Number(a.id) - Number(b.id));
  print();
  const results: BenchResults = {
    at: new Date().toISOString(),
    node: process.version,
    durationSeconds: DURATION,
    connections: CONNECTIONS,
    wallSeconds: r2((Date.now() - started) / 1000),
    partial: only ? only : undefined,
    rows,
    figures,
  };
  const dir = join(root, 'bench', 'results');
  mkdirSync(dir, { recursive: true });
  const file = join(dir, only ? 'partial.json' : 'latest.json');
  writeFileSync(file, JSON.stringify(results, null, 2) + '\n');
  process.stdout.write(`Figures written to ${file}\n`);
  if (!only) {
    updateReadme(join(root, 'bench', 'README.md'), results);
    process.stdout.write('bench/README.md benchmark table regenerated from it\n');
  }
  rmSync(logDir, { recursive: true, force: true });
}

main().catch((e: unknown) => {
  process.stderr.write(`bench failed: ${(e as Error).stack}\n`);
  process.exit(1);
});
