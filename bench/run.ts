import autocannon from 'autocannon';
import { fork, spawnSync, type ChildProcess } from 'node:child_process';
import { closeSync, mkdirSync, openSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { CallCounts, ServerInfo } from './server';
import { SANDBOX } from '../local/ids';
import { fixedRate, percentile, type LatencySummary } from './load';
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

async function throughput(): Promise<void> {
  const s = await startServer();
  const { info } = s;
  try {
    const bareRuns: number[] = [];
    const bareRun = async () => {
      const r = await load({ url: info.bareUrl });
      check(r, 'bare');
      bareRuns.push(r.requests.average);
      return r.requests.average;
    };
    // Interleaved: bare, cloudsql, bare, cosmos, bare. Each broker run is compared with the bare runs beside it.
    let before = await bareRun();
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
      const logBefore = statSync(s.logFile).size;
      const r = await load({
        url: info.brokerUrl.replace(/\/api$/, ''),
        requests: [
          { method: 'POST', path: '/api/token', headers: tokenHeaders(info), body: tokenBody(resource, info.callerToken) },
        ],
      });
      check(r, name);
      await new Promise((res) => setTimeout(res, 200)); // let the log writer drain
      const logBytesPerRequest = (statSync(s.logFile).size - logBefore) / Math.max(1, r.requests.total);
      const after = await bareRun();
      const bareRps = (before + after) / 2;
      const ratio = r.requests.average / bareRps;
      figures[`token_${name}`] = {
        rps: r.requests.average,
        p50: r.latency.p50,
        p99: r.latency.p99,
        bareRps,
        ratioToBare: ratio,
        logBytesPerRequest,
      };
      rows.push({
        id: '2',
        what: `POST /api/token cache hit (${name}), logging on: req/s, ratio to bare`,
        value: `${r.requests.average.toFixed(0)} req/s vs bare ${bareRps.toFixed(0)} = ${ratio.toFixed(2)}; p50/p99 ${r.latency.p50}/${r.latency.p99} ms; ${logBytesPerRequest.toFixed(0)} log bytes/req`,
        target: '≥ 0.5',
        pass: ratio >= 0.5,
      });
      before = after;
    }
    figures.bare = { rps: mean(bareRuns), runs: bareRuns };
    rows.unshift({
      id: '1',
      what: 'bare Node HTTP server, requests/s (mean of the interleaved runs)',
      value: `${mean(bareRuns).toFixed(0)} (${bareRuns.map((x) => x.toFixed(0)).join(', ')})`,
    });

    // Fixed rate, open loop, sub-ms resolution: bare, broker, bare; the broker's p99 over the mean of the bare p99s.
    const bareReq = { method: 'GET', path: new URL(info.bareUrl).pathname, headers: {} };
    const brokerBase = info.brokerUrl.replace(/\/api$/, '');
    const brokerReq = {
      method: 'POST',
      path: '/api/token',
      headers: tokenHeaders(info),
      body: tokenBody(CLOUDSQL, info.callerToken),
    };
    const fixedSeconds = Math.max(3, DURATION);
    const b1 = await fixedRate(info.bareUrl, bareReq, RATE, fixedSeconds);
    await ask(s.child, 'eld-reset');
    const broker = await fixedRate(brokerBase, brokerReq, RATE, fixedSeconds);
    const { eld } = await ask<{
      eld: { p50: number; p99: number; max: number; gc: { count: number; totalMs: number; maxMs: number } };
    }>(s.child, 'eld');
    const b2 = await fixedRate(info.bareUrl, bareReq, RATE, fixedSeconds);
    const bareP99 = (b1.p99 + b2.p99) / 2;
    const ratio = broker.p99 / bareP99;
    figures.fixedRate = {
      rate: RATE,
      seconds: fixedSeconds,
      broker,
      bare: [b1, b2],
      bareP99,
      p99Ratio: ratio,
      serverEventLoopDelayMs: eld,
    };
    const fmt = (x: LatencySummary) => `p50 ${x.p50.toFixed(2)}, p99 ${x.p99.toFixed(2)} ms`;
    rows.push({
      id: '3',
      what: `p99 at a fixed ${RATE} req/s (Cloud SQL cache hit) / bare server p99 at the same rate`,
      value: `${broker.p99.toFixed(2)} / ${bareP99.toFixed(2)} ms = ${ratio.toFixed(2)}× (broker ${fmt(broker)}, ${broker.errors} errors; bare ${fmt(b1)} | ${fmt(b2)})`,
      target: '≤ 1.5×',
      pass: ratio <= 1.5 && broker.errors === 0,
    });
    rows.push({
      id: '3',
      what: '  server event-loop delay during the broker run, p99 / max; GC',
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
      const statuses = await Promise.all(Array.from({ length: 1000 }, async () => (await exchange(s.info, resource)).status));
      const after = (await ask<{ counts: CallCounts }>(s.child, 'counts')).counts;
      const delta = diff(before, after);
      const ok = statuses.filter((x) => x === 200).length;
      figures[`burst_${name}`] = { ok, calls: delta };
      const relevant = Object.entries(delta).filter(([k]) => kinds.some((kind) => k.toLowerCase().includes(kind.toLowerCase())));
      const exactlyOne = relevant.length === kinds.length && relevant.every(([, v]) => v === 1);
      rows.push({
        id: '4',
        what: `1,000 concurrent identical cold requests (${name}): upstream calls`,
        value: `${ok}/1000 ok; ${
          Object.entries(delta)
            .map(([k, v]) => `${k}=${v}`)
            .join(', ') || 'none'
        }`,
        target: 'exactly 1 per kind',
        pass: ok === 1000 && exactlyOne,
      });
    } finally {
      await stopServer(s);
    }
  }
}

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
  // own work: signing tokens, TLS on their side); the broker's cost is the rest of the exchange's time.
  const upstreamCalls = async (s: Server, resource: string, subject = s.info.callerToken, extra: Record<string, string> = {}) => {
    const before = await ask<{ counts: CallCounts; durations: CallCounts }>(s.child, 'counts');
    const r = await exchange(s.info, resource, subject, extra);
    const after = await ask<{ counts: CallCounts; durations: CallCounts }>(s.child, 'counts');
    const delta = diff(before.counts, after.counts);
    const calls = Object.values(delta).reduce((a, b) => a + b, 0);
    const upstreamMs = Object.keys(delta).reduce((a, k) => a + (after.durations[k] ?? 0) - (before.durations[k] ?? 0), 0);
    return { r, delta, calls, upstreamMs, overhead: r.ms - upstreamMs };
  };
  const list = (delta: CallCounts) =>
    Object.entries(delta)
      .map(([k, v]) => `${k}=${v}`)
      .join(', ') || 'none';
  const s = await startServer({ BENCH_PRELOAD: '1', BENCH_PREWARM: 'false' });
  try {
    // The process-cold first exchange (informational), then warm code paths and measure cache misses.
    await ask(s.child, 'latency', { latencyMs: LATENCY_MS });
    await warmJwks(s.info);
    for (const [name, resource] of TARGETS) {
      const m = await upstreamCalls(s, resource);
      figures[`firstInProcess_${name}`] = {
        status: m.r.status,
        ms: m.r.ms,
        upstreamCalls: m.delta,
        upstreamMs: m.upstreamMs,
        overheadMs: m.overhead,
      };
      rows.push({
        id: '8',
        what: `  first ${name} exchange of a fresh process, no prewarm (code paths cold too)`,
        value: `${m.r.ms.toFixed(1)} ms vs ${m.upstreamMs.toFixed(1)} ms upstream: +${m.overhead.toFixed(1)} ms`,
      });
    }
    // The cache misses of a running worker: a Cloud SQL token that must be re-minted (its cached entry outlives the
    // cap asked: generateAccessToken, the federated token still cached), and a Cosmos caller seen for the first time.
    type Sample = { ms: number; overhead: number; calls: number; upstreamMs: number; delta: CallCounts; status: number };
    const misses: Record<string, Sample[]> = { cloudsql: [], cosmos: [] };
    const { tokens: fresh } = await ask<{ tokens: string[] }>(s.child, 'mint-callers', { n: 5, offset: 900_000 });
    for (let i = 0; i < 5; i++) {
      const c = await upstreamCalls(s, CLOUDSQL, s.info.callerToken, { requested_lifetime: String(800 - i * 60) });
      misses.cloudsql!.push({
        ms: c.r.ms,
        overhead: c.overhead,
        calls: c.calls,
        upstreamMs: c.upstreamMs,
        delta: c.delta,
        status: c.r.status,
      });
      const m = await upstreamCalls(s, COSMOS, fresh[i]);
      misses.cosmos!.push({
        ms: m.r.ms,
        overhead: m.overhead,
        calls: m.calls,
        upstreamMs: m.upstreamMs,
        delta: m.delta,
        status: m.r.status,
      });
    }
    for (const [name, what] of [
      ['cloudsql', 'Cloud SQL token re-minted (cached one outlives the cap asked)'],
      ['cosmos', 'Cosmos caller seen for the first time'],
    ] as const) {
      const xs = misses[name]!;
      const med = [...xs].sort((a, b) => a.overhead - b.overhead)[Math.floor(xs.length / 2)]!;
      figures[`miss_${name}`] = { latencyMs: LATENCY_MS, median: med, samples: xs };
      rows.push({
        id: '8',
        what: `cache miss in a warm worker, ${what}, upstreams at ${LATENCY_MS} ms: total vs upstream sum, median of ${xs.length}`,
        value: `${med.ms.toFixed(1)} ms vs ${med.calls} calls answered in ${med.upstreamMs.toFixed(1)} ms: +${med.overhead.toFixed(1)} ms (${list(med.delta)})`,
        target: '≤ sum + 3 ms',
        pass: xs.every((x) => x.status === 200) && med.overhead <= 3,
      });
    }
    const samples: Record<string, Sample[]> = { cloudsql: [], cosmos: [] };
    for (let i = 0; i < 5; i++) {
      await ask(s.child, 'reset-caches');
      for (const [name, resource] of TARGETS) {
        const m = await upstreamCalls(s, resource);
        samples[name]!.push({
          ms: m.r.ms,
          overhead: m.overhead,
          calls: m.calls,
          upstreamMs: m.upstreamMs,
          delta: m.delta,
          status: m.r.status,
        });
      }
    }
    for (const [name] of TARGETS) {
      const xs = samples[name]!;
      const med = [...xs].sort((a, b) => a.overhead - b.overhead)[Math.floor(xs.length / 2)]!;
      figures[`cold_${name}`] = { latencyMs: LATENCY_MS, median: med, samples: xs };
      rows.push({
        id: '8',
        what: `cold ${name} exchange (all caches dropped, code warm), upstreams at ${LATENCY_MS} ms: total vs upstream sum, median of ${xs.length}`,
        value: `${med.ms.toFixed(1)} ms vs ${med.calls} calls answered in ${med.upstreamMs.toFixed(1)} ms: +${med.overhead.toFixed(1)} ms (${list(med.delta)})`,
        target: '≤ sum + 3 ms',
        pass: xs.every((x) => x.status === 200) && med.overhead <= 3,
      });
    }
  } finally {
    await stopServer(s);
  }
  const w = await startServer({ BENCH_PRELOAD: '1', BENCH_PREWARM: 'true' });
  try {
    await ask(w.child, 'latency', { latencyMs: LATENCY_MS });
    await new Promise((res) => setTimeout(res, 1000 + 6 * LATENCY_MS)); // the start-up prewarm runs
    await warmJwks(w.info);
    const m = await upstreamCalls(w, CLOUDSQL);
    figures.prewarmedFirstCloudsql = { status: m.r.status, ms: m.r.ms, upstreamCalls: m.delta };
    rows.push({
      id: '8',
      what: 'first Cloud SQL exchange after start with prewarm on (same latency)',
      value: `${m.r.ms.toFixed(1)} ms, upstream calls: ${list(m.delta)}`,
      target: 'no Google call',
      pass: m.r.status === 200 && !Object.keys(m.delta).some((k) => k.startsWith('google')),
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
 * then after N more. Bounded caches: the second wave must not grow it by more than 10 %.
 */
async function memory(): Promise<void> {
  const s = await startServer({ BENCH_PREWARM: 'false' });
  const { env } = await ask<{ env: Record<string, string> }>(s.child, 'env');
  const logFile = join(logDir, 'broker-memory.log');
  const fd = openSync(logFile, 'w');
  const broker = fork(join(__dirname, 'broker-host.js'), [], {
    stdio: ['ignore', fd, 'inherit', 'ipc'],
    env: { ...process.env, ...env, LOG_LEVEL: 'info', GOOGLE_TOKEN_PREWARM: 'false' },
    execArgv: ['--expose-gc'],
  });
  closeSync(fd);
  try {
    const brokerUrl = await new Promise<string>((resolve, reject) => {
      broker.once('message', (m: { ready?: string }) => (m.ready ? resolve(m.ready) : reject(new Error('bad ready message'))));
      broker.once('exit', (code) => reject(new Error(`broker host exited with ${code}`)));
    });
    const info: ServerInfo = { ...s.info, brokerUrl };
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
      const m = await ask<{ rss: number; heapUsed: number; heapTotal: number; external: number }>(broker, 'rss');
      return { ...m, bad, failures };
    };
    await exchange(info, CLOUDSQL);
    await exchange(info, COSMOS);
    const base = await ask<{ rss: number; heapUsed: number }>(broker, 'rss');
    const w1 = await wave(0);
    const w2 = await wave(MEMORY_CALLERS);
    const growth = (w2.rss - w1.rss) / w1.rss;
    const mb = (x: number) => `${(x / 1048576).toFixed(0)} MB`;
    figures.memory = {
      callersPerWave: MEMORY_CALLERS,
      startRss: base.rss,
      startHeap: base.heapUsed,
      wave1: w1,
      wave2: w2,
      growth,
    };
    rows.push({
      id: '9',
      what: `broker RSS after ${MEMORY_CALLERS.toLocaleString('en')} distinct callers (both kinds), then ${MEMORY_CALLERS.toLocaleString('en')} more`,
      value: `${mb(base.rss)} → ${mb(w1.rss)} → ${mb(w2.rss)} (${(growth * 100).toFixed(1)} %; heap used ${mb(base.heapUsed)} → ${mb(w1.heapUsed)} → ${mb(w2.heapUsed)}, heap total ${mb(w1.heapTotal)} → ${mb(w2.heapTotal)}, external ${mb(w1.external)} → ${mb(w2.external)}; ${w1.bad + w2.bad} failed${w1.bad + w2.bad ? ` ${JSON.stringify({ ...w1.failures, ...w2.failures })}` : ''})`,
      target: 'second wave ≤ +10 %',
      pass: growth <= 0.1 && w1.bad + w2.bad === 0,
    });
  } finally {
    await new Promise<void>((resolve) => {
      broker.once('exit', () => resolve());
      broker.send({ cmd: 'stop' });
      setTimeout(() => broker.kill('SIGKILL'), 5000).unref();
    });
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

interface QueryOut {
  skipped?: string;
  poolMax?: number;
  sequential?: {
    broker: { p50: number; p99: number };
    baseline: { p50: number; p99: number };
    medianRatio: number;
    p99Ratio: number;
  };
  concurrent16?: {
    broker: { rps: number; p50: number; p99: number; non2xx: number };
    baseline: { rps: number };
    throughputRatio: number;
  };
}

async function query(): Promise<void> {
  const logFile = join(logDir, 'query.log');
  const fd = openSync(logFile, 'w');
  const out = await new Promise<QueryOut>((resolve) => {
    const child = fork(join(__dirname, 'query.js'), [], {
      stdio: ['ignore', fd, 'inherit', 'ipc'],
      execArgv: ['--experimental-vm-modules'],
    });
    child.once('message', (m) => {
      resolve(m as QueryOut);
      setTimeout(() => child.kill('SIGKILL'), 10_000).unref(); // it exits by itself after cleaning up
    });
    child.once('exit', (code) => resolve({ skipped: `query bench exited with ${code}` }));
    setTimeout(() => child.kill('SIGKILL'), 150_000).unref();
  });
  closeSync(fd);
  figures.query = out;
  if (!out.sequential || !out.concurrent16) {
    rows.push({
      id: '7',
      what: 'POST /api/query/{name} vs a minimal endpoint on the same connector',
      value: `n/a: ${out.skipped ?? 'query bench unavailable'}`,
    });
    return;
  }
  const q = out.sequential;
  rows.push({
    id: '7',
    what: `POST /api/query/order-count vs a minimal unauthenticated endpoint (same connector, TLS instance, pool of ${out.poolMax}), sequential medians`,
    value: `${q.broker.p50.toFixed(2)} vs ${q.baseline.p50.toFixed(2)} ms = ${q.medianRatio.toFixed(2)}×; p99 ${q.broker.p99.toFixed(2)} vs ${q.baseline.p99.toFixed(2)} ms = ${q.p99Ratio.toFixed(2)}×`,
    target: '≤ 1.3×',
    pass: q.medianRatio <= 1.3,
  });
  const c = out.concurrent16;
  rows.push({
    id: '7',
    what: '  same at 16 concurrent callers: throughput',
    value: `${c.broker.rps.toFixed(0)} vs ${c.baseline.rps.toFixed(0)} req/s = ${c.throughputRatio.toFixed(2)}; broker p50/p99 ${c.broker.p50}/${c.broker.p99} ms, ${c.broker.non2xx} failed`,
    target: '≥ 0.8',
    pass: c.throughputRatio >= 0.8 && c.broker.non2xx === 0,
  });
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
    memory,
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
