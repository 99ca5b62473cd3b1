import { Blob as NodeBlob } from 'node:buffer';
import { randomUUID } from 'node:crypto';
import type { ReadableStream as NodeReadableStream } from 'node:stream/web';
import { readdirSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { extname, join } from 'node:path';
import {
  HttpRequest,
  HttpResponse,
  InvocationContext,
  type HttpFunctionOptions,
  type HttpResponseInit,
  type TimerFunctionOptions,
} from '@azure/functions';
import { BrokerError } from '../shared/errors';
import { correlationIdOf, errorResponse } from '../shared/http';

/**
 * A small stand-in for the Functions host (Core Tools cannot be installed here): it loads every module
 * in functions/, reads its exported `registration`, and serves the HTTP ones under /api with the same
 * routes, passing HttpRequest-shaped requests and real InvocationContext objects to the same handlers `func start` runs.
 */

export interface HttpRegistration {
  readonly name: string;
  readonly options: HttpFunctionOptions;
}
export interface TimerRegistration {
  readonly name: string;
  readonly timer: TimerFunctionOptions;
}
export type Registration = HttpRegistration | TimerRegistration;

export function isHttp(r: Registration): r is HttpRegistration {
  return 'options' in r;
}

/** Load every function module (compiled .js, or .ts under ts-jest) and return its registration. */
export function loadRegistrations(dir = join(__dirname, '..', 'functions')): Registration[] {
  const ext = extname(__filename);
  const out: Registration[] = [];
  const warn = console.warn;
  console.warn = (...args: unknown[]) => {
    if (typeof args[0] === 'string' && args[0].includes('test mode')) return; // @azure/functions outside the host
    warn(...args);
  };
  try {
    for (const f of readdirSync(dir).sort()) {
      if (extname(f) !== ext || f.endsWith('.d.ts')) continue;
      // eslint-disable-next-line @typescript-eslint/no-require-imports
      const mod = require(join(dir, f)) as { registration?: Registration; registrations?: Registration[] };
      if (mod.registration) out.push(mod.registration);
      if (mod.registrations) out.push(...mod.registrations);
    }
  } finally {
    console.warn = warn;
  }
  return out;
}

interface CompiledRoute {
  reg: HttpRegistration;
  re: RegExp;
  methods: readonly string[];
}

function compileRoute(reg: HttpRegistration): CompiledRoute {
  const route = reg.options.route ?? reg.name;
  const src = route
    .split('/')
    .map((seg) => {
      const m = /^\{([A-Za-z_][A-Za-z0-9_]*)(?::[a-z]+)?(\?)?\}$/.exec(seg);
      return m ? `(?<${m[1]}>[^/]+)${m[2] ?? ''}` : seg.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
    })
    .join('/');
  return { reg, re: new RegExp(`^/api/${src}/?$`, 'i'), methods: (reg.options.methods ?? ['GET', 'POST']).map((m) => m.toUpperCase()) };
}

/**
 * The request object the local host hands to handlers: the public `HttpRequest` surface (type-checked
 * against it) over a body already read into memory. Building an `@azure/functions` HttpRequest means an
 * undici Request per call (body stream, abort signal), which was most of the local host's cost per request;
 * the tests still call the handlers with real HttpRequest objects (test/helpers/invoke.ts).
 * `user` (App Service authentication headers) is not used by the broker and is always null here.
 */
function headerRecord(h: Headers): Record<string, string> {
  const out: Record<string, string> = {};
  h.forEach((v, k) => {
    out[k] = v;
  });
  return out;
}

class LocalHttpRequest implements HttpRequest {
  readonly bodyUsed = false;
  readonly user = null;
  readonly query: URLSearchParams;
  constructor(
    readonly url: string,
    readonly method: string,
    readonly headers: Headers,
    readonly params: Record<string, string>,
    private readonly bytes: Buffer,
    search: string,
  ) {
    this.query = new URLSearchParams(search);
  }
  get body(): NodeReadableStream | null {
    return this.bytes.length ? new NodeBlob([this.bytes]).stream() : null;
  }
  readonly text = async (): Promise<string> => this.bytes.toString('utf8');
  readonly json = async (): Promise<unknown> => JSON.parse(this.bytes.toString('utf8')) as unknown;
  readonly arrayBuffer = async (): Promise<ArrayBuffer> => new Uint8Array(this.bytes).buffer;
  readonly blob = async (): Promise<NodeBlob> => new NodeBlob([this.bytes]);
  readonly formData = async (): Promise<FormData> => this.clone().formData();
  readonly clone = (): HttpRequest =>
    new HttpRequest({
      method: this.method,
      url: this.url,
      headers: headerRecord(this.headers),
      params: this.params,
      ...(this.bytes.length ? { body: { bytes: new Uint8Array(this.bytes) } } : {}),
    });
}

function readBody(req: IncomingMessage, max: number): Promise<Buffer | undefined> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (c: Buffer) => {
      size += c.length;
      if (size <= max) chunks.push(c);
    });
    req.on('end', () => resolve(size > max ? undefined : Buffer.concat(chunks)));
    req.on('error', reject);
  });
}

async function writeInit(res: ServerResponse, init: HttpResponseInit): Promise<void> {
  // Fast path: the broker's handlers answer with a string body and plain headers.
  if ((typeof init.body === 'string' || init.body === undefined) && init.jsonBody === undefined && !(init.headers instanceof Headers) && !init.cookies) {
    const headers = { ...((init.headers as Record<string, string> | undefined) ?? {}) };
    const body = init.body ?? '';
    if (body && !Object.keys(headers).some((h) => h.toLowerCase() === 'content-type')) headers['content-type'] = 'text/plain;charset=UTF-8';
    res.writeHead(init.status ?? 200, headers);
    res.end(body);
    return;
  }
  const r = new HttpResponse(init);
  const body = Buffer.from(await r.arrayBuffer());
  const headers: Record<string, string> = {};
  r.headers.forEach((v, k) => {
    headers[k] = v;
  });
  res.writeHead(r.status, headers);
  res.end(body);
}

export interface LocalHost {
  readonly url: string;
  readonly server: Server;
  readonly registrations: readonly Registration[];
  close(): Promise<void>;
}

export async function startLocalHost(opts: { port?: number; host?: string; registrations?: Registration[] } = {}): Promise<LocalHost> {
  const registrations = opts.registrations ?? loadRegistrations();
  const routes = registrations.filter(isHttp).map(compileRoute);
  const server = createServer((req, res) => {
    void (async () => {
      const url = new URL(req.url ?? '/', `http://${req.headers.host ?? '127.0.0.1'}`);
      const method = (req.method ?? 'GET').toUpperCase();
      const headerGet = { get: (n: string) => (req.headers[n] as string | undefined) ?? null };
      const cid = correlationIdOf(headerGet);
      const candidates = routes.map((r) => ({ r, m: r.re.exec(url.pathname) })).filter((x) => x.m);
      const hit = candidates.find((x) => x.r.methods.includes(method));
      if (!hit) {
        const err = candidates.length
          ? new BrokerError('method_not_allowed', `${method} is not allowed here.`)
          : new BrokerError('not_found', `No function serves ${url.pathname}.`);
        return writeInit(res, errorResponse(err, 'problem', cid));
      }
      const body = await readBody(req, 1024 * 1024);
      if (body === undefined) return writeInit(res, errorResponse(new BrokerError('payload_too_large', 'The request body is too large.'), 'problem', cid));
      const headers = new Headers();
      for (const [k, v] of Object.entries(req.headers)) if (v !== undefined) headers.set(k, Array.isArray(v) ? v.join(', ') : v);
      const noBody = method === 'GET' || method === 'HEAD';
      const request = new LocalHttpRequest(url.toString(), method, headers, { ...(hit.m!.groups ?? {}) }, noBody ? Buffer.alloc(0) : body, url.search);
      const ctx = new InvocationContext({ invocationId: randomUUID(), functionName: hit.r.reg.name });
      const init = await hit.r.reg.options.handler(request, ctx);
      await writeInit(res, init as HttpResponseInit);
    })().catch((e: unknown) => {
      if (!res.headersSent) {
        res.writeHead(500, { 'content-type': 'application/problem+json' });
        res.end(JSON.stringify({ title: 'Local host error', status: 500, detail: (e as Error).message }));
      }
    });
  });
  server.keepAliveTimeout = 65_000;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port ?? 0, opts.host ?? '127.0.0.1', () => resolve());
  });
  const addr = server.address() as AddressInfo;
  return {
    url: `http://${opts.host ?? '127.0.0.1'}:${addr.port}/api`,
    server,
    registrations,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
