import { createServer as createHttpServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { AddressInfo, Socket } from 'node:net';

/**
 * The shared base of every emulator: a loopback HTTP(S) server with a tiny router, a record of the
 * calls it served (by route name), and fault injection (down, hang, slow, fixed status) so tests,
 * the sandbox and benchmarks exercise the same failure modes.
 */

export interface EmuRequest {
  readonly method: string;
  readonly url: URL;
  readonly path: string;
  readonly headers: IncomingMessage['headers'];
  readonly body: Buffer;
  readonly params: Readonly<Record<string, string>>;
  text(): string;
  /** Parsed JSON body, or undefined when the body is not valid JSON. */
  json(): unknown;
  form(): URLSearchParams;
  header(name: string): string | undefined;
}

export interface EmuResponse {
  readonly status: number;
  readonly headers?: Record<string, string>;
  /** Objects are sent as JSON. */
  readonly body?: string | Buffer | object;
}

export interface Route {
  readonly method: string;
  /** Express-like path with `:name` params, or a RegExp whose named groups become params. */
  readonly path: string | RegExp;
  /** A stable name for call counting, e.g. `sts.token`. */
  readonly name: string;
  handle(req: EmuRequest): EmuResponse | Promise<EmuResponse>;
}

export type Fault =
  | { readonly kind: 'down' } // connections refused
  | { readonly kind: 'hang' } // accepts, never answers
  | { readonly kind: 'slow'; readonly delayMs: number }
  | {
      readonly kind: 'status';
      readonly status: number;
      readonly body?: EmuResponse['body'];
      readonly headers?: Record<string, string>;
    };

export interface FaultRule {
  readonly fault: Fault;
  /** Only routes with these names (default all). */
  readonly routes?: readonly string[];
  /** Only this many requests (default unlimited). */
  times?: number;
}

/**
 * Throttling: answer 429 with Retry-After (and the service's own retry header, e.g. Cosmos
 * `x-ms-retry-after-ms`) to a share of the requests. Deterministic: `every` throttles requests
 * N, 2N, 3N, … (counted over the routes it applies to); `rate` throttles that fraction using a
 * seeded PRNG (same seed, same sequence). `every: 1` is sustained throttling.
 */
export interface ThrottleOptions {
  readonly every?: number;
  readonly rate?: number;
  /** PRNG seed for `rate` (default 1). */
  readonly seed?: number;
  /** Retry-After in whole seconds (default 1). */
  readonly retryAfterSeconds?: number;
  /** Only routes with these names (default all). */
  readonly routes?: readonly string[];
}

/** Latency and throttling of one emulator, as the sandbox and the benchmarks set them. */
export interface EmulatorFaultOptions {
  /** Added before every answer (default 0). */
  readonly latencyMs?: number;
  readonly throttle?: ThrottleOptions;
}

export interface CallRecord {
  readonly route: string;
  readonly method: string;
  readonly path: string;
  readonly at: number;
  readonly status: number;
  /** From the end of the request body to the answer: the service's own time, latency included. */
  readonly durationMs: number;
}

export interface Emulator {
  readonly name: string;
  readonly url: string;
  readonly port: number;
  readonly host: string;
  readonly calls: readonly CallRecord[];
  count(route?: string): number;
  resetCalls(): void;
  /** Inject a fault; returns a function that removes it. */
  inject(rule: FaultRule): () => void;
  clearFaults(): void;
  /** Delay every answer by this many ms (0 turns it off). */
  setLatency(ms: number): void;
  /** Throttle a share of the requests with 429 + Retry-After (undefined turns it off; restarts the count). */
  setThrottle(t: ThrottleOptions | undefined): void;
  /** Requests answered 429 by the throttle since it was last set. */
  throttled(): number;
  close(): Promise<void>;
}

export interface EmulatorOptions {
  readonly name: string;
  readonly routes: readonly Route[];
  readonly host?: string;
  readonly port?: number;
  readonly tls?: { readonly key: string; readonly cert: string };
  /** How this service shapes an error body (default `{ error: { code, message } }`). */
  readonly errorBody?: (status: number, message: string) => EmuResponse['body'];
  readonly maxBodyBytes?: number;
  /** Extra headers of this service's 429 answer (e.g. Cosmos `x-ms-retry-after-ms`), given Retry-After in ms. */
  readonly throttleHeaders?: (retryAfterMs: number) => Record<string, string>;
  /** Initial latency and throttle (tests and the sandbox can change them later). */
  readonly faults?: EmulatorFaultOptions;
}

/** mulberry32: a tiny seeded PRNG, so a throttle `rate` gives the same sequence every run. */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function validThrottle(t: ThrottleOptions): ThrottleOptions {
  if (t.every !== undefined && (!Number.isInteger(t.every) || t.every < 1))
    throw new Error(`throttle.every must be a whole number ≥ 1, got ${t.every}`);
  if (t.rate !== undefined && !(t.rate >= 0 && t.rate <= 1))
    throw new Error(`throttle.rate must be between 0 and 1, got ${t.rate}`);
  if (t.every === undefined && t.rate === undefined) throw new Error('throttle needs every or rate');
  if (t.retryAfterSeconds !== undefined && (!Number.isInteger(t.retryAfterSeconds) || t.retryAfterSeconds < 0)) {
    throw new Error(`throttle.retryAfterSeconds must be a whole number ≥ 0, got ${t.retryAfterSeconds}`);
  }
  return t;
}

/**
 * Parse the sandbox's env form of latency/throttle: `SANDBOX_EMULATOR_LATENCY_MS=30`,
 * `SANDBOX_EMULATOR_THROTTLE=every=10,retryAfter=1` or `rate=0.05,seed=7`. Bad values throw, naming the setting.
 */
export function faultOptionsFromEnv(env: NodeJS.ProcessEnv = process.env): EmulatorFaultOptions | undefined {
  const out: { latencyMs?: number; throttle?: ThrottleOptions } = {};
  const lat = env.SANDBOX_EMULATOR_LATENCY_MS?.trim();
  if (lat) {
    if (!/^\d{1,6}$/.test(lat)) throw new Error(`SANDBOX_EMULATOR_LATENCY_MS must be whole milliseconds, got "${lat}"`);
    out.latencyMs = Number(lat);
  }
  const thr = env.SANDBOX_EMULATOR_THROTTLE?.trim();
  if (thr) {
    const t: { every?: number; rate?: number; seed?: number; retryAfterSeconds?: number } = {};
    for (const part of thr.split(',')) {
      const [k, v] = part.split('=').map((x) => x.trim());
      const n = Number(v);
      if (!v || !Number.isFinite(n)) throw new Error(`SANDBOX_EMULATOR_THROTTLE: "${part}" is not key=number`);
      if (k === 'every') t.every = n;
      else if (k === 'rate') t.rate = n;
      else if (k === 'seed') t.seed = n;
      else if (k === 'retryAfter') t.retryAfterSeconds = n;
      else throw new Error(`SANDBOX_EMULATOR_THROTTLE: unknown key "${k}" (every, rate, seed, retryAfter)`);
    }
    try {
      out.throttle = validThrottle(t);
    } catch (e) {
      throw new Error(`SANDBOX_EMULATOR_THROTTLE: ${(e as Error).message}`, { cause: e });
    }
  }
  return out.latencyMs === undefined && out.throttle === undefined ? undefined : out;
}

function compile(path: string | RegExp): RegExp {
  if (path instanceof RegExp) return path;
  const src = path
    .split('/')
    .map((seg) => (seg.startsWith(':') ? `(?<${seg.slice(1)}>[^/]+)` : seg.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')))
    .join('/');
  return new RegExp(`^${src}$`);
}

function send(res: ServerResponse, r: EmuResponse): void {
  const headers: Record<string, string> = { ...(r.headers ?? {}) };
  let payload: Buffer | string = '';
  if (r.body !== undefined) {
    if (typeof r.body === 'string' || Buffer.isBuffer(r.body)) payload = r.body;
    else {
      payload = JSON.stringify(r.body);
      if (!Object.keys(headers).some((h) => h.toLowerCase() === 'content-type'))
        headers['content-type'] = 'application/json; charset=utf-8';
    }
  }
  res.writeHead(r.status, headers);
  res.end(payload);
}

export async function startEmulator(opts: EmulatorOptions): Promise<Emulator> {
  const host = opts.host ?? '127.0.0.1';
  const routes = opts.routes.map((r) => ({ ...r, re: compile(r.path) }));
  const calls: CallRecord[] = [];
  let faults: FaultRule[] = [];
  const sockets = new Set<Socket>();
  const errorBody = opts.errorBody ?? ((status: number, message: string) => ({ error: { code: status, message } }));
  const maxBody = opts.maxBodyBytes ?? 4 * 1024 * 1024;
  let latencyMs = 0;
  let throttle: { opts: ThrottleOptions; seen: number; hits: number; random: () => number } | undefined;
  const setLatency = (ms: number) => {
    if (!Number.isFinite(ms) || ms < 0) throw new Error(`latencyMs must be ≥ 0, got ${ms}`);
    latencyMs = ms;
  };
  const setThrottle = (t: ThrottleOptions | undefined) => {
    throttle = t ? { opts: validThrottle(t), seen: 0, hits: 0, random: seededRandom(t.seed ?? 1) } : undefined;
  };
  if (opts.faults?.latencyMs !== undefined) setLatency(opts.faults.latencyMs);
  if (opts.faults?.throttle) setThrottle(opts.faults.throttle);
  /** Whether this request is one the throttle answers with 429. */
  const throttles = (routeName: string): boolean => {
    const t = throttle;
    if (!t || (t.opts.routes && !t.opts.routes.includes(routeName))) return false;
    t.seen++;
    const hit = t.opts.every !== undefined ? t.seen % t.opts.every === 0 : t.random() < (t.opts.rate ?? 0);
    if (hit) t.hits++;
    return hit;
  };

  const listener = (req: IncomingMessage, res: ServerResponse): void => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (c: Buffer) => {
      size += c.length;
      if (size <= maxBody) chunks.push(c);
    });
    req.on('end', () => {
      const started = performance.now();
      void (async () => {
        const url = new URL(req.url ?? '/', `${opts.tls ? 'https' : 'http'}://${req.headers.host ?? host}`);
        const method = (req.method ?? 'GET').toUpperCase();
        let match: { route: (typeof routes)[number]; params: Record<string, string> } | undefined;
        for (const r of routes) {
          if (r.method !== method && r.method !== '*') continue;
          const m = r.re.exec(url.pathname);
          if (m) {
            match = { route: r, params: { ...(m.groups ?? {}) } };
            break;
          }
        }
        const routeName = match?.route.name ?? 'unmatched';
        const record = (status: number) =>
          calls.push({
            route: routeName,
            method,
            path: url.pathname,
            at: Date.now(),
            status,
            durationMs: performance.now() - started,
          });
        if (size > maxBody) {
          record(413);
          return send(res, { status: 413, body: errorBody(413, 'Request body too large') });
        }
        if (latencyMs > 0) await new Promise((r) => setTimeout(r, latencyMs));
        if (throttle && throttles(routeName)) {
          const seconds = throttle.opts.retryAfterSeconds ?? 1;
          record(429);
          return send(res, {
            status: 429,
            headers: { 'retry-after': String(seconds), ...(opts.throttleHeaders?.(seconds * 1000) ?? {}) },
            body: errorBody(429, 'Too many requests (emulated throttling)'),
          });
        }
        const rule = faults.find((f) => !f.routes || f.routes.includes(routeName));
        if (rule) {
          if (rule.times !== undefined && --rule.times <= 0) faults = faults.filter((f) => f !== rule);
          const fault = rule.fault;
          if (fault.kind === 'hang') {
            record(0);
            return; // never answer; the client's timeout must fire
          }
          if (fault.kind === 'slow') await new Promise((r) => setTimeout(r, fault.delayMs));
          if (fault.kind === 'status') {
            record(fault.status);
            return send(res, {
              status: fault.status,
              headers: fault.headers,
              body: fault.body ?? errorBody(fault.status, 'Injected fault'),
            });
          }
        }
        if (!match) {
          record(404);
          return send(res, { status: 404, body: errorBody(404, `No route for ${method} ${url.pathname}`) });
        }
        const body = Buffer.concat(chunks);
        const er: EmuRequest = {
          method,
          url,
          path: url.pathname,
          headers: req.headers,
          body,
          params: match.params,
          text: () => body.toString('utf8'),
          json: () => {
            try {
              return JSON.parse(body.toString('utf8')) as unknown;
            } catch {
              return undefined;
            }
          },
          form: () => new URLSearchParams(body.toString('utf8')),
          header: (name) => {
            const v = req.headers[name.toLowerCase()];
            return Array.isArray(v) ? v[0] : v;
          },
        };
        let out: EmuResponse;
        try {
          out = await match.route.handle(er);
        } catch (e) {
          out = { status: 500, body: errorBody(500, `Emulator error: ${(e as Error).message}`) };
        }
        record(out.status);
        send(res, out);
      })();
    });
  };

  const make = (): Server => {
    const s = opts.tls ? createHttpsServer({ key: opts.tls.key, cert: opts.tls.cert }, listener) : createHttpServer(listener);
    s.keepAliveTimeout = 5000;
    s.on('connection', (sock: Socket) => {
      sockets.add(sock);
      sock.on('close', () => sockets.delete(sock));
    });
    return s;
  };
  const listen = (s: Server, port: number) =>
    new Promise<number>((resolve, reject) => {
      s.once('error', reject);
      s.listen(port, host, () => resolve((s.address() as AddressInfo).port));
    });
  const closeServer = (s: Server) =>
    new Promise<void>((resolve) => {
      for (const sock of sockets) sock.destroy();
      s.close(() => resolve());
    });

  let server = make();
  const port = await listen(server, opts.port ?? 0);
  let down = false;
  const url = `${opts.tls ? 'https' : 'http'}://${host}:${port}`;

  let chain: Promise<void> = Promise.resolve();
  const doApply = async () => {
    const wantDown = faults.some((f) => f.fault.kind === 'down');
    if (wantDown && !down) {
      down = true;
      await closeServer(server);
    } else if (!wantDown && down) {
      down = false;
      server = make();
      await listen(server, port);
    }
  };
  // Serialised, so a test can await the last change with settle().
  const applyDown = (): Promise<void> => (chain = chain.then(doApply, doApply));

  const emu: Emulator = {
    name: opts.name,
    url,
    port,
    host,
    calls,
    count: (route) => (route ? calls.filter((c) => c.route === route).length : calls.length),
    resetCalls: () => {
      calls.length = 0;
    },
    inject(rule) {
      const r = { ...rule };
      faults.push(r);
      // 'down' is applied synchronously enough for tests that await a tick; callers may await emu.settle()
      void applyDown();
      return () => {
        faults = faults.filter((f) => f !== r);
        void applyDown();
      };
    },
    clearFaults() {
      faults = [];
      void applyDown();
    },
    setLatency,
    setThrottle,
    throttled: () => throttle?.hits ?? 0,
    async close() {
      faults = [];
      await chain;
      if (!down) await closeServer(server);
      down = true;
    },
  };
  return Object.assign(emu, { settle: applyDown });
}

/** Wait until an injected `down` fault (or its removal) has taken effect. */
export async function settle(emu: Emulator): Promise<void> {
  const s = (emu as Emulator & { settle?: () => Promise<void> }).settle;
  if (s) await s();
}
