import { Blob as NodeBlob } from 'node:buffer';
import { randomUUID } from 'node:crypto';
import type { ReadableStream as NodeReadableStream } from 'node:stream/web';
import { readdirSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Duplex } from 'node:stream';
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
import { correlationIdOf } from '../shared/http/correlation';
import { errorResponse, type ResponseStyle } from '../shared/http/responses';
import { adminActionOf, errorStyleOf } from '../shared/http/handler';
import { AdminAuditRecord, writeAdminAudit } from '../shared/observability/admin-audit';
import { MAX_BODY_BYTES } from '../shared/http/request';
import type { Logger } from '../shared/observability/log';
import { appContext, type AppContext } from '../shared/app/context';
import { handlersOf } from '../shared/app/handlers';

/**
 * A small stand-in for the Functions host (Core Tools cannot be installed here): it loads every module
 * in functions/, reads its exported `registration`, and serves the HTTP ones under /api with the same
 * routes, passing HttpRequest- and InvocationContext-shaped objects to the same handlers `func start` runs.
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
  return {
    reg,
    re: new RegExp(`^/api/${src}/?$`, 'i'),
    methods: (reg.options.methods ?? ['GET', 'POST']).map((m) => m.toUpperCase()),
  };
}

/**
 * The request headers the local host hands to handlers: the `Headers` interface over Node's parsed header map (names
 * lower-cased, repeated values joined as Node joins them), read-only. An undici `Headers` per request (a validated
 * `set` per header) was a measurable part of the host's cost per request; the host refuses what `Headers` would
 * (a name that is not a token, a value with NUL, CR or LF) before building one, so handlers see the same values.
 */
const HEADER_NAME = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
const BAD_HEADER_VALUE = /[\0\r\n]/;

class LocalHeaders implements Headers {
  private constructor(private readonly map: Map<string, string>) {}

  /** The headers of a request, or undefined when one of them is not a valid header (the request is refused). */
  static of(h: IncomingMessage['headers']): LocalHeaders | undefined {
    const map = new Map<string, string>();
    for (const k in h) {
      const raw = h[k];
      if (raw === undefined) continue;
      const v = (Array.isArray(raw) ? raw.join(', ') : raw).trim();
      if (!HEADER_NAME.test(k) || BAD_HEADER_VALUE.test(v)) return undefined;
      map.set(k, v);
    }
    return new LocalHeaders(map);
  }

  get(name: string): string | null {
    return this.map.get(name.toLowerCase()) ?? null;
  }
  has(name: string): boolean {
    return this.map.has(name.toLowerCase());
  }
  getSetCookie(): string[] {
    const v = this.map.get('set-cookie');
    return v === undefined ? [] : [v];
  }
  forEach(fn: (value: string, key: string, parent: Headers) => void, thisArg?: unknown): void {
    for (const [k, v] of this.sorted()) fn.call(thisArg, v, k, this);
  }
  entries(): IterableIterator<[string, string]> {
    return this.sorted()[Symbol.iterator]();
  }
  keys(): IterableIterator<string> {
    const names = this.sorted().map(([k]) => k);
    return names[Symbol.iterator]();
  }
  values(): IterableIterator<string> {
    const values = this.sorted().map(([, v]) => v);
    return values[Symbol.iterator]();
  }
  [Symbol.iterator](): IterableIterator<[string, string]> {
    return this.entries();
  }
  append(): void {
    throw new TypeError('immutable');
  }
  delete(): void {
    throw new TypeError('immutable');
  }
  set(): void {
    throw new TypeError('immutable');
  }
  /** In name order, as `Headers` iterates. */
  private sorted(): [string, string][] {
    return [...this.map].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  }
}

/**
 * The request object the local host hands to handlers: the public `HttpRequest` surface (type-checked
 * against it) over a body already read into memory. Building an `@azure/functions` HttpRequest means an
 * undici Request per call (body stream, abort signal), which was most of the local host's cost per request;
 * the tests still call the handlers with real HttpRequest objects (test/helpers/invoke.ts). Methods live on the
 * prototype and the query is parsed on first use (no closures or objects per request that a handler may not use).
 * `user` (App Service authentication headers) is not used by the broker and is always null here.
 */
class LocalHttpRequest implements HttpRequest {
  readonly bodyUsed = false;
  readonly user = null;
  private parsedQuery?: URLSearchParams;
  constructor(
    readonly url: string,
    readonly method: string,
    readonly headers: LocalHeaders,
    readonly params: Record<string, string>,
    private readonly bytes: Buffer,
    private readonly search: string,
  ) {}
  get query(): URLSearchParams {
    return (this.parsedQuery ??= new URLSearchParams(this.search));
  }
  get body(): NodeReadableStream | null {
    return this.bytes.length ? new NodeBlob([this.bytes]).stream() : null;
  }
  text(): Promise<string> {
    return Promise.resolve(this.bytes.toString('utf8'));
  }
  json(): Promise<unknown> {
    return Promise.resolve().then(() => JSON.parse(this.bytes.toString('utf8')) as unknown);
  }
  arrayBuffer(): Promise<ArrayBuffer> {
    return Promise.resolve(new Uint8Array(this.bytes).buffer);
  }
  blob(): Promise<NodeBlob> {
    return Promise.resolve(new NodeBlob([this.bytes]));
  }
  formData(): Promise<FormData> {
    return this.clone().formData();
  }
  clone(): HttpRequest {
    const headers: Record<string, string> = {};
    this.headers.forEach((v, k) => {
      headers[k] = v;
    });
    return new HttpRequest({
      method: this.method,
      url: this.url,
      headers,
      params: this.params,
      ...(this.bytes.length ? { body: { bytes: new Uint8Array(this.bytes) } } : {}),
    });
  }
}

/**
 * The invocation context the local host hands to handlers: its id and function name, the rest (extra inputs and
 * outputs, options, the log methods) from a real `InvocationContext` made on first use; the broker's handlers read
 * only the id.
 */
class LocalInvocationContext implements InvocationContext {
  readonly retryContext = undefined;
  readonly traceContext = undefined;
  readonly triggerMetadata = undefined;
  private real?: InvocationContext;
  constructor(
    readonly invocationId: string,
    readonly functionName: string,
  ) {}
  private ctx(): InvocationContext {
    return (this.real ??= new InvocationContext({ invocationId: this.invocationId, functionName: this.functionName }));
  }
  get extraInputs(): InvocationContext['extraInputs'] {
    return this.ctx().extraInputs;
  }
  get extraOutputs(): InvocationContext['extraOutputs'] {
    return this.ctx().extraOutputs;
  }
  get options(): InvocationContext['options'] {
    return this.ctx().options;
  }
  log(...args: unknown[]): void {
    this.ctx().log(...args);
  }
  trace(...args: unknown[]): void {
    this.ctx().trace(...args);
  }
  debug(...args: unknown[]): void {
    this.ctx().debug(...args);
  }
  info(...args: unknown[]): void {
    this.ctx().info(...args);
  }
  warn(...args: unknown[]): void {
    this.ctx().warn(...args);
  }
  error(...args: unknown[]): void {
    this.ctx().error(...args);
  }
}

type BodyRead = { readonly kind: 'ok'; readonly bytes: Buffer } | { readonly kind: 'too_large' } | { readonly kind: 'aborted' };

/**
 * Read a request body up to `max` bytes. Over the cap (declared by Content-Length or counted while streaming)
 * the read stops at once: the caller answers 413 and closes the connection instead of draining the rest.
 */
function readBody(req: IncomingMessage, max: number): Promise<BodyRead> {
  return new Promise((resolve) => {
    const declared = req.headers['content-length'];
    if (declared !== undefined && Number(declared) > max) {
      resolve({ kind: 'too_large' });
      return;
    }
    const chunks: Buffer[] = [];
    let size = 0;
    let done = false;
    const finish = (r: BodyRead) => {
      if (done) return;
      done = true;
      req.off('data', onData);
      resolve(r);
    };
    const onData = (c: Buffer) => {
      size += c.length;
      if (size > max) {
        req.pause();
        finish({ kind: 'too_large' });
      } else chunks.push(c);
    };
    req.on('data', onData);
    req.once('end', () => finish({ kind: 'ok', bytes: Buffer.concat(chunks) }));
    req.once('error', () => finish({ kind: 'aborted' }));
    req.once('close', () => finish({ kind: 'aborted' }));
  });
}

/** How long, and how much, of the unread body of a refused request is read and dropped before the connection closes. */
const DRAIN_MS = 5_000;
const DRAIN_BYTES = 16 * 1024 * 1024;

/**
 * After a 413 (answered with `Connection: close`), close in stages (RFC 9112 §9.6): the answer is written, the write
 * side shut (FIN), the rest of the input read and dropped for at most DRAIN_MS and DRAIN_BYTES, then the connection
 * closed. Closing at once with unread input sends a TCP reset, which can destroy the answer before the client reads
 * it (the client sees ECONNRESET). Node's server calls `destroySoon()` once a `Connection: close` answer is written
 * (resuming a request whose body was never read): this connection's instead ends and drains.
 */
function closeInStages(req: IncomingMessage): void {
  const socket = req.socket;
  socket.destroySoon = () => {
    socket.end();
    req.resume(); // a body read in part was paused at the cap: read on, dropping it
    const from = socket.bytesRead;
    const stop = () => socket.destroy();
    const timer = setTimeout(stop, DRAIN_MS);
    const sizer = setInterval(() => {
      if (socket.bytesRead - from > DRAIN_BYTES) stop();
    }, 50);
    socket.once('close', () => {
      clearTimeout(timer);
      clearInterval(sizer);
    });
  };
}

/** RFC 9110 §7.2 Host: a reg-name, IPv4 or bracketed IPv6 literal, optionally a port. */
const HOST_HEADER = /^(?:[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?|\[[0-9A-Fa-f:.]{2,45}\])(?::[0-9]{1,5})?$/;

/** The error style of the request a connection is serving (for a timeout, which has no request line to read). */
const socketStyles = new WeakMap<Duplex, ResponseStyle>();

/** Headers that carry one value: a request repeating one is refused, not resolved first- or last-wins. */
const SINGLE_HEADERS = ['authorization', 'x-subject-token', 'content-type', 'x-correlation-id', 'traceparent'];

/** How often each header the host checks for repeats occurs (one pass over the raw header list). */
const COUNTED_HEADERS = new Set(['host', ...SINGLE_HEADERS]);
function headerCounts(raw: readonly string[]): Partial<Record<string, number>> {
  const out: Partial<Record<string, number>> = {};
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i]!.toLowerCase();
    if (COUNTED_HEADERS.has(name)) out[name] = (out[name] ?? 0) + 1;
  }
  return out;
}

/**
 * A request target the WHATWG URL parser leaves as it is: segments that do not start with a dot (no dot segments, no
 * empty segments, no backslash), an optional trailing slash, and a query of characters it does not percent-encode.
 */
const PLAIN_TARGET = /^(?:\/[A-Za-z0-9_~-][A-Za-z0-9._~-]*)+\/?(?:\?[A-Za-z0-9._~%&=+,;:@/!$()*?-]*)?$/;

/** An admin route's request (audited once, shared/observability/admin-audit.ts, also when the host refuses it). */
interface AdminRequest {
  readonly action: string;
  readonly url: string;
  readonly headers: { get(name: string): string | null };
}

/**
 * Every request the host refuses itself gets the endpoint's error style, a correlation id and a log line; on an
 * admin route, its one audit event.
 */
function refuse(
  hostLog: (cid: string) => Logger,
  res: ServerResponse,
  err: BrokerError,
  style: ResponseStyle,
  cid: string,
  method: string,
  extra: Record<string, string> = {},
  admin?: AdminRequest,
): Promise<void> {
  const log = hostLog(cid);
  if (admin) {
    const outcome = { status: err.status, code: err.code };
    writeAdminAudit(log, new AdminAuditRecord(admin.action), { ...admin, method }, cid, outcome);
  }
  const fields = { method, status: err.status, code: err.code };
  if (err.status >= 500) log.error(err.message, { ...fields, cause: err.cause });
  log.info('request', fields);
  const init = errorResponse(err, style, cid);
  init.headers = { ...(init.headers as Record<string, string>), ...extra };
  return writeInit(res, init) ?? Promise.resolve();
}

/**
 * A request the HTTP parser could not read (bad request line, header syntax, oversized headers, bad framing):
 * 400 in the error style of the endpoint its request line names (when it can be read), with a correlation id.
 */
function answerClientError(
  hostLog: (cid: string) => Logger,
  err: NodeJS.ErrnoException & { rawPacket?: Buffer },
  socket: Duplex,
  styleOfPath: (path: string) => ResponseStyle,
): void {
  const cid = randomUUID();
  const log = hostLog(cid);
  const timeout = err.code === 'ERR_HTTP_REQUEST_TIMEOUT';
  log.info('request', { status: timeout ? 408 : 400, code: timeout ? 'request_timeout' : 'bad_request', parseError: err.code });
  if (!socket.writable || err.code === 'ECONNRESET') {
    socket.destroy();
    return;
  }
  const line = /^[A-Z]{1,16} (\/[^ \r\n?]*)/.exec(err.rawPacket?.toString('latin1') ?? '');
  const style = line ? styleOfPath(line[1]!) : (socketStyles.get(socket) ?? 'problem');
  const init = errorResponse(
    timeout
      ? new BrokerError('request_timeout', 'The request was not received in full in time.')
      : new BrokerError('bad_request', 'The request is not valid HTTP/1.1.'),
    style,
    cid,
  );
  const body = typeof init.body === 'string' ? init.body : JSON.stringify(init.jsonBody);
  const headers = Object.entries({
    ...(init.headers as Record<string, string>),
    'content-length': String(Buffer.byteLength(body)),
    connection: 'close',
  })
    .map(([k, v]) => `${k}: ${v}\r\n`)
    .join('');
  socket.end(`HTTP/1.1 ${timeout ? '408 Request Timeout' : '400 Bad Request'}\r\n${headers}\r\n${body}`);
}

/** Statuses that carry no body (as `HttpResponse` treats them: the WHATWG fetch "null body status"). */
const NULL_BODY_STATUSES = new Set([204, 205, 304]);

function hasContentType(headers: Record<string, string>): boolean {
  return 'content-type' in headers || Object.keys(headers).some((h) => h.toLowerCase() === 'content-type');
}

function writeInit(res: ServerResponse, init: HttpResponseInit): Promise<void> | undefined {
  // Fast path: string or JSON bodies with plain headers (every broker handler), written as `HttpResponse` would
  // (a JSON body is JSON.stringify'd with application/json unless a content type is set; text defaults to
  // text/plain;charset=UTF-8; no body for 204/205/304), without an undici Response per request.
  const status = init.status ?? 200;
  const nullBody = NULL_BODY_STATUSES.has(status);
  const json = init.jsonBody !== undefined && init.jsonBody !== null && !nullBody;
  if (
    (json || (typeof init.body === 'string' && init.jsonBody === undefined) || (init.body === undefined && !init.jsonBody)) &&
    !(init.headers instanceof Headers) &&
    !init.cookies
  ) {
    let headers = (init.headers as Record<string, string> | undefined) ?? {};
    const body = nullBody ? '' : json ? JSON.stringify(init.jsonBody) : ((init.body as string | undefined) ?? '');
    if (body && !hasContentType(headers))
      headers = { ...headers, 'content-type': json ? 'application/json' : 'text/plain;charset=UTF-8' };
    res.writeHead(status, headers);
    res.end(body);
    return undefined;
  }
  return writeHttpResponse(res, new HttpResponse(init));
}

async function writeHttpResponse(res: ServerResponse, r: HttpResponse): Promise<void> {
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

/** The registrations with their handlers made from `app` (the same names, routes and options). */
function registrationsOf(app: AppContext, base: Registration[] = loadRegistrations()): Registration[] {
  const handlers: Record<string, unknown> = handlersOf(app);
  return base.map((r) =>
    isHttp(r)
      ? { ...r, options: { ...r.options, handler: (handlers[r.name] as HttpFunctionOptions['handler']) ?? r.options.handler } }
      : { ...r, timer: { ...r.timer, handler: (handlers[r.name] as TimerFunctionOptions['handler']) ?? r.timer.handler } },
  );
}

export async function startLocalHost(
  opts: {
    port?: number;
    host?: string;
    /** The app context the functions run with (default: the process's). */
    app?: AppContext;
    registrations?: Registration[];
    /** A request (headers and body) must arrive within this long, else 408 (default 30 s: the slow-loris bound). */
    requestTimeoutMs?: number;
  } = {},
): Promise<LocalHost> {
  const registrations = opts.registrations ?? (opts.app ? registrationsOf(opts.app) : loadRegistrations());
  // Lines the host writes itself (requests refused before a handler runs) go where the app's lines go.
  const hostLog = (cid: string): Logger => (opts.app ?? appContext()).logger({ correlationId: cid, fn: 'host' });
  const routes = registrations.filter(isHttp).map(compileRoute);
  const requestTimeout = opts.requestTimeoutMs ?? 30_000;
  const checking = Math.max(50, Math.min(1000, Math.floor(requestTimeout / 4)));
  const serverOptions = {
    requireHostHeader: false,
    requestTimeout,
    headersTimeout: requestTimeout,
    connectionsCheckingInterval: checking,
  };
  const server = createServer(serverOptions, (req, res) => {
    const method = (req.method ?? 'GET').toUpperCase();
    const headerGet = { get: (n: string) => (req.headers[n] as string | undefined) ?? null };
    // The correlation id of what the host answers itself, made only then (a handler's wrapper makes its own).
    let hostCid: string | undefined;
    const cid = () => (hostCid ??= correlationIdOf(headerGet));
    let style: ResponseStyle = 'problem';
    void (async () => {
      // Routing never depends on the Host header, and never on a path the URL parser had to rewrite. A target of
      // plain segments and query characters is one the parser leaves as it is: it is not parsed again.
      const raw = req.url ?? '/';
      const q = raw.indexOf('?');
      const rawPath = q < 0 ? raw : raw.slice(0, q);
      const url = PLAIN_TARGET.test(raw)
        ? undefined
        : new URL(raw.startsWith('/') && !raw.startsWith('//') ? raw : '/', 'http://127.0.0.1');
      const pathname = url ? url.pathname : rawPath;
      let hit: { r: CompiledRoute; m: RegExpExecArray } | undefined;
      let pathMatched = false;
      for (const r of routes) {
        const m = r.re.exec(pathname);
        if (!m) continue;
        pathMatched = true;
        if (r.methods.includes(method)) {
          hit = { r, m };
          break;
        }
      }
      if (hit) style = errorStyleOf(hit.r.reg.options.handler);
      const action = hit && adminActionOf(hit.r.reg.options.handler, method);
      const admin = action ? { action, url: raw, headers: headerGet } : undefined;
      socketStyles.set(req.socket, style);
      if (url && (!raw.startsWith('/') || raw.startsWith('//') || url.pathname !== rawPath)) {
        return refuse(
          hostLog,
          res,
          new BrokerError(
            'bad_request',
            'The request target must be an absolute path in canonical form (no dot segments, backslashes or doubled slashes).',
          ),
          style,
          cid(),
          method,
          {},
          admin,
        );
      }
      if (!hit) {
        const err = pathMatched
          ? new BrokerError('method_not_allowed', `${method} is not allowed here.`)
          : new BrokerError('not_found', 'No function serves this path.');
        return refuse(hostLog, res, err, 'problem', cid(), method);
      }
      const counts = headerCounts(req.rawHeaders);
      const host = req.headers.host;
      if (
        (counts.host ?? 0) > 1 ||
        (host === undefined && req.httpVersion !== '1.0') ||
        (host !== undefined && !HOST_HEADER.test(host))
      ) {
        return refuse(
          hostLog,
          res,
          new BrokerError('bad_request', 'The Host header is missing, repeated or malformed.', { detail: { parameter: 'Host' } }),
          style,
          cid(),
          method,
          {},
          admin,
        );
      }
      // Node keeps the first of a repeated Authorization (and joins others): which credential counts is never guessed.
      const repeated = SINGLE_HEADERS.find((h) => (counts[h] ?? 0) > 1);
      if (repeated) {
        return refuse(
          hostLog,
          res,
          new BrokerError('bad_request', `The ${repeated} header is repeated.`, { detail: { parameter: repeated } }),
          style,
          cid(),
          method,
          {},
          admin,
        );
      }
      const body = await readBody(req, MAX_BODY_BYTES);
      if (body.kind === 'aborted') {
        const log = hostLog(cid());
        if (admin)
          writeAdminAudit(log, new AdminAuditRecord(admin.action), { ...admin, method }, cid(), {
            status: 499,
            code: 'client_closed',
          });
        log.info('request', { method, status: 499, code: 'client_closed' });
        res.destroy();
        return;
      }
      if (body.kind === 'too_large') {
        closeInStages(req);
        return refuse(
          hostLog,
          res,
          new BrokerError('payload_too_large', `The request body exceeds ${MAX_BODY_BYTES} bytes.`),
          style,
          cid(),
          method,
          { connection: 'close' },
          admin,
        );
      }
      const headers = LocalHeaders.of(req.headers);
      if (!headers) {
        return refuse(
          hostLog,
          res,
          new BrokerError('bad_request', 'A request header is not valid.'),
          style,
          cid(),
          method,
          {},
          admin,
        );
      }
      const noBody = method === 'GET' || method === 'HEAD';
      const request = new LocalHttpRequest(
        `http://${host ?? '127.0.0.1'}${raw}`,
        method,
        headers,
        { ...(hit.m.groups ?? {}) },
        noBody ? Buffer.alloc(0) : body.bytes,
        url ? url.search : q < 0 ? '' : raw.slice(q),
      );
      const ctx = new LocalInvocationContext(randomUUID(), hit.r.reg.name);
      const init = await hit.r.reg.options.handler(request, ctx);
      const writing = writeInit(res, init); // undefined: written at once (no HttpResponse needed)
      if (writing) await writing;
    })().catch((e: unknown) => {
      // A bug (the handlers map every error themselves): 500 in the endpoint's style, with the correlation id.
      if (!res.headersSent)
        void refuse(
          hostLog,
          res,
          new BrokerError('internal', 'An unexpected error occurred; quote the correlation id to the operator.', { cause: e }),
          style,
          cid(),
          method,
        );
      else res.destroy();
    });
  });
  const styleOfPath = (path: string): ResponseStyle => {
    const r = routes.find((x) => x.re.test(path));
    return r ? errorStyleOf(r.reg.options.handler) : 'problem';
  };
  server.on('clientError', (err: NodeJS.ErrnoException & { rawPacket?: Buffer }, socket: Duplex) =>
    answerClientError(hostLog, err, socket, styleOfPath),
  );
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
    close: async () => {
      await new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      });
      // What the Functions host's appTerminate hook does (functions/app.ts registers it; @azure/functions
      // skips hook registration outside the worker): the database pools close.
      await (opts.app ?? appContext()).close();
    },
  };
}
