import { readdirSync, readFileSync } from 'node:fs';
import { Agent, request } from 'node:http';

/**
 * An open-loop, fixed-rate load generator with sub-millisecond latency resolution (autocannon reports whole
 * milliseconds, too coarse to compare a ~1 ms p99 with another). Requests are scheduled in 1 ms slots;
 * each latency is measured from its scheduled send time, so a stalled server cannot hide its queueing
 * (no coordinated omission).
 */

export interface FixedRateRequest {
  readonly method: string;
  readonly path: string;
  readonly headers: Record<string, string>;
  readonly body?: string;
}

export interface LatencySummary {
  readonly n: number;
  readonly errors: number;
  readonly rps: number;
  readonly p50: number;
  readonly p90: number;
  readonly p99: number;
  readonly max: number;
}

export function percentile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return NaN;
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[i]!;
}

export function summarise(latencies: number[], errors: number, seconds: number): LatencySummary {
  const s = [...latencies].sort((a, b) => a - b);
  return {
    n: s.length,
    errors,
    rps: s.length / seconds,
    p50: percentile(s, 50),
    p90: percentile(s, 90),
    p99: percentile(s, 99),
    max: s[s.length - 1] ?? NaN,
  };
}

export async function fixedRate(
  base: string,
  req: FixedRateRequest,
  rate: number,
  seconds: number,
  maxSockets = 32,
): Promise<LatencySummary> {
  const url = new URL(base);
  const agent = new Agent({ keepAlive: true, maxSockets });
  const latencies: number[] = [];
  let errors = 0;
  const total = Math.round(rate * seconds);
  const start = performance.now();
  let sent = 0;
  const inflight = new Set<Promise<void>>();
  const one = (scheduled: number): Promise<void> =>
    new Promise<void>((resolve) => {
      const r = request(
        { host: url.hostname, port: url.port, method: req.method, path: req.path, headers: req.headers, agent },
        (res) => {
          res.on('data', () => undefined);
          res.on('end', () => {
            if ((res.statusCode ?? 0) >= 400) errors++;
            else latencies.push(performance.now() - scheduled);
            resolve();
          });
        },
      );
      r.on('error', () => {
        errors++;
        resolve();
      });
      r.end(req.body);
    });
  await new Promise<void>((done) => {
    const tick = () => {
      const now = performance.now();
      const due = Math.min(total, Math.floor(((now - start) / 1000) * rate));
      while (sent < due) {
        const scheduled = start + (sent / rate) * 1000;
        const p = one(scheduled).then(() => {
          inflight.delete(p);
        });
        inflight.add(p);
        sent++;
      }
      if (sent >= total) return done();
      setTimeout(tick, 1);
    };
    tick();
  });
  await Promise.all(inflight);
  agent.destroy();
  return summarise(latencies, errors, seconds);
}

/** Sequential requests (one at a time) through a keep-alive connection: per-request latency in ms. */
export async function sequential(n: number, fn: () => Promise<void>, warmup = 20): Promise<number[]> {
  for (let i = 0; i < warmup; i++) await fn();
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    const t = performance.now();
    await fn();
    out.push(performance.now() - t);
  }
  return out;
}

/** CPU (user + system, µs) of this process so far: the parent divides deltas by the requests it sent. */
export function cpuMicros(): number {
  const c = process.cpuUsage();
  return c.user + c.system;
}

/** CPU (µs) of every child of a process (PostgreSQL's backends under its postmaster), from /proc. */
export function childrenCpuMicros(parentPid: number | undefined): number {
  if (!parentPid) return NaN;
  const tick = 1e6 / 100; // USER_HZ is 100 on Linux
  let sum = 0;
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const stat = readFileSync(`/proc/${d}/stat`, 'utf8');
      const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      if (Number(f[1]) === parentPid) sum += (Number(f[11]) + Number(f[12])) * tick;
    } catch {
      // gone meanwhile
    }
  }
  return sum;
}
