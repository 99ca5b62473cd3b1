import { connect } from 'node:net';
import { isHttp, startLocalHost, type HttpRegistration, type LocalHost } from '../../../local/host';
import { errorStyleOf } from '../../../shared/http/handler';
import { MAX_BODY_BYTES } from '../../../shared/http/request';
import { type ResponseStyle } from '../../../shared/http/responses';
import type { LogRecord } from '../../../shared/observability/log';
import { captureLogs } from '../../helpers/invoke';
import { ContractValidator } from '../../helpers/openapi';
import {
  ACCESS_TOKEN_TYPE,
  CLOUDSQL_RESOURCE,
  SANDBOX,
  TOKEN_EXCHANGE,
  startFixture,
  type Fixture,
} from '../../helpers/foundation';
import { testContext } from '../../helpers/app';

/**
 * An attacker's sweep over every HTTP endpoint the app registers (enumerated from the registrations, so a
 * new endpoint is swept without touching this file), through the local host over raw HTTP/1.1: duplicate
 * JSON members, repeated form and query parameters, control characters, non-canonical targets, oversized and
 * malformed requests, bad Host headers and bad content types. Every answer: never a 5xx, never a grant the
 * policy does not give, never a token echoed, always a correlation id (header, body and a log line), and the
 * endpoint's own error style (OAuth on /api/token, problem+json elsewhere).
 */

let fx: Fixture;
let host: LocalHost;
let port: number;
let gateway: string;
let caller: string;
/** A v2.0 token for the MCP resource from the approved agent host: the MCP endpoints get it instead of the gateway's. */
let mcpCaller: string;
let logs: { records: LogRecord[]; restore: () => void };

interface Endpoint {
  readonly name: string;
  readonly path: string;
  readonly method: string;
  readonly style: ResponseStyle;
  /** Takes a request body (POST, PUT, PATCH). */
  readonly hasBody: boolean;
  /** Reads a form/JSON body with subject_token (token, explain, admin rotate) rather than a JSON parameter object (query). */
  readonly readsParams: boolean;
  /** Its path in openapi.yaml (`/query/{name}`). */
  readonly specPath: string;
}
const contract = new ContractValidator();
/** The endpoints that take RFC 6749-style parameters (form or JSON): their refusals are asserted exactly. */
const FORM_ENDPOINTS = new Set(['token', 'explain', 'adminRotate']);
let endpoints: Endpoint[];

beforeAll(async () => {
  fx = await startFixture({
    QUERY_CATALOG_PATH: `${__dirname}/../../../local/queries.json`,
    // Nothing listens there: a query that got as far as connecting answers 503, never reaches the internet.
    CLOUDSQL_ADMIN_ENDPOINT: 'http://127.0.0.1:9',
    QUERY_CONNECT_TIMEOUT_MS: '1000',
  });
  host = await startLocalHost({ app: testContext() });
  port = Number(new URL(host.url).port);
  gateway = await fx.gateway();
  caller = await fx.caller({ roles: ['Orders.Read', 'Orders.Analyst', SANDBOX.adminRole] });
  mcpCaller = await fx.caller({
    resource: SANDBOX.mcp.appIdUri,
    aud: undefined,
    appId: SANDBOX.mcp.agentHostAppId,
    scp: SANDBOX.mcp.scope,
    roles: ['Orders.Read'],
  });
  // One entry per (registration, method): a new endpoint, or a new method of one, is swept without editing this file.
  endpoints = host.registrations.filter(isHttp).flatMap((r: HttpRegistration) => {
    const route = (r.options.route ?? r.name).replace(/\{[^}]+\}/g, 'order-count');
    return (r.options.methods ?? ['GET', 'POST']).map((m) => {
      const method = m.toUpperCase();
      return {
        name: r.name,
        path: `/api/${route}${r.name === 'health' ? '?probe=live' : ''}`,
        method,
        style: errorStyleOf(r.options.handler),
        hasBody: ['POST', 'PUT', 'PATCH'].includes(method),
        readsParams: FORM_ENDPOINTS.has(r.name) && method === 'POST',
        specPath: `/${r.options.route ?? r.name}`,
      };
    });
  });
  logs = captureLogs();
}, 60_000);
afterAll(async () => {
  logs.restore();
  await host.close();
  await fx.stop();
});

interface Raw {
  status: number;
  headers: Record<string, string>;
  text: string;
  json: Record<string, unknown>;
}

/** Send bytes as they are (no client-side normalisation) and read the answer until the server closes. */
function send(request: string | Buffer, opts: { waitMs?: number } = {}): Promise<Raw> {
  return new Promise((resolve, reject) => {
    const s = connect(port, '127.0.0.1');
    const chunks: Buffer[] = [];
    const timer = setTimeout(() => {
      s.destroy();
      reject(new Error('no answer within 10 s'));
    }, opts.waitMs ?? 10_000);
    s.on('data', (c: Buffer) => chunks.push(c));
    s.on('error', () => undefined); // the server may close while we still write (oversized bodies)
    s.on('close', () => {
      clearTimeout(timer);
      const all = Buffer.concat(chunks).toString('latin1');
      const [head = '', ...rest] = all.split('\r\n\r\n');
      const lines = head.split('\r\n');
      const status = Number(/^HTTP\/1\.1 (\d{3})/.exec(lines[0] ?? '')?.[1] ?? 0);
      const headers: Record<string, string> = {};
      for (const l of lines.slice(1)) {
        const i = l.indexOf(':');
        if (i > 0) headers[l.slice(0, i).toLowerCase()] = l.slice(i + 1).trim();
      }
      let body = rest.join('\r\n\r\n');
      if (headers['transfer-encoding'] === 'chunked') {
        let out = '';
        for (let at = 0; ;) {
          const nl = body.indexOf('\r\n', at);
          const size = parseInt(body.slice(at, nl), 16);
          if (!size) break;
          out += body.slice(nl + 2, nl + 2 + size);
          at = nl + 2 + size + 2;
        }
        body = out;
      }
      const text = Buffer.from(body, 'latin1').toString('utf8');
      let json: Record<string, unknown> = {};
      try {
        json = JSON.parse(text) as Record<string, unknown>;
      } catch {
        /* not JSON */
      }
      resolve({ status, headers, text, json });
    });
    s.write(request);
  });
}

interface Req {
  method?: string;
  path: string;
  headers?: Record<string, string>;
  /** Header lines written verbatim (bad Host, duplicates). Replaces the default Host line when it names Host. */
  rawHeaderLines?: string[];
  body?: string | Buffer;
  contentType?: string;
  omitHost?: boolean;
}

function build(r: Req): Buffer {
  const body = typeof r.body === 'string' ? Buffer.from(r.body, 'utf8') : (r.body ?? Buffer.alloc(0));
  const lines = [`${r.method ?? 'POST'} ${r.path} HTTP/1.1`];
  const raw = r.rawHeaderLines ?? [];
  if (!r.omitHost && !raw.some((l) => /^host:/i.test(l))) lines.push(`Host: 127.0.0.1:${port}`);
  lines.push(...raw);
  const bearer = r.path.startsWith('/api/mcp') ? mcpCaller : gateway;
  lines.push('Connection: close', `Authorization: Bearer ${bearer}`, `X-Subject-Token: ${caller}`);
  if (r.path.startsWith('/api/mcp')) lines.push('Accept: application/json, text/event-stream');
  if (r.contentType !== undefined) lines.push(`Content-Type: ${r.contentType}`);
  for (const [k, v] of Object.entries(r.headers ?? {})) lines.push(`${k}: ${v}`);
  if (body.length || ['POST', 'PUT', 'PATCH', 'DELETE'].includes(r.method ?? 'POST'))
    lines.push(`Content-Length: ${body.length}`);
  return Buffer.concat([Buffer.from(lines.join('\r\n') + '\r\n\r\n', 'latin1'), body]);
}

const form = (fields: [string, string][]) =>
  fields.map(([k, v]) => `${encodeURIComponent(k)}=${encodeURIComponent(v)}`).join('&');
const exchangeFields = (resource: string): [string, string][] => [
  ['grant_type', TOKEN_EXCHANGE],
  ['subject_token_type', ACCESS_TOKEN_TYPE],
  ['subject_token', caller],
  ['resource', resource],
];

/** The invariants every answer of every endpoint holds, whatever was sent. */
function expectSafe(res: Raw, ep: Endpoint | undefined, what: string): void {
  const ctx = `${ep?.name ?? 'host'}: ${what} → ${res.status} ${res.text.slice(0, 300)}`;
  expect([ctx, res.status >= 100 && res.status < 500]).toEqual([ctx, true]);
  const cid = res.headers['x-correlation-id'];
  expect([ctx, typeof cid === 'string' && /^[A-Za-z0-9._:-]{8,128}$/.test(cid)]).toEqual([ctx, true]);
  for (const secret of [gateway, caller, mcpCaller, caller.split('.')[2]!, gateway.split('.')[2]!, mcpCaller.split('.')[2]!]) {
    expect([ctx, res.text.includes(secret)]).toEqual([ctx, false]);
  }
  if (res.status >= 400) {
    const style = res.status === 404 || (res.status === 405 && ep?.style !== 'jsonrpc') ? 'problem' : (ep?.style ?? 'problem');
    if (style === 'jsonrpc') {
      const error = res.json.error as { data?: { code?: unknown; correlationId?: unknown } } | undefined;
      expect([
        ctx,
        res.headers['content-type']?.startsWith('application/json'),
        typeof error?.data?.code,
        error?.data?.correlationId,
      ]).toEqual([ctx, true, 'string', cid]);
    } else if (style === 'oauth') {
      expect([
        ctx,
        res.headers['content-type']?.startsWith('application/json'),
        typeof res.json.error,
        res.json.correlation_id,
      ]).toEqual([ctx, true, 'string', cid]);
    } else {
      expect([ctx, res.headers['content-type'], typeof res.json.code, res.json.correlationId]).toEqual([
        ctx,
        'application/problem+json',
        'string',
        cid,
      ]);
    }
  }
  // one log line with that correlation id (the host's or the handler's)
  expect([ctx, logs.records.some((l) => l.correlationId === cid && l.msg === 'request')]).toEqual([ctx, true]);
}

async function sweep(
  what: string,
  make: (ep: Endpoint) => Req | undefined,
  check?: (res: Raw, ep: Endpoint) => void,
): Promise<void> {
  for (const ep of endpoints) {
    const r = make(ep);
    if (!r) continue;
    const res = await send(build({ method: ep.method, ...r }));
    expectSafe(res, ep, what);
    // the refusal is the one openapi.yaml documents for that endpoint
    const headers = new Headers(Object.entries(res.headers));
    expect(contract.check(ep.specPath, ep.method, { status: res.status, headers, json: res.json, text: res.text })).toEqual([]);
    check?.(res, ep);
  }
}

/** The parameter a refusal names (problem/OAuth bodies at the top, JSON-RPC errors in `error.data`). */
const parameterOf = (res: Raw) =>
  res.json.parameter ?? (res.json.error as { data?: { parameter?: unknown } } | undefined)?.data?.parameter;
const code = (res: Raw) =>
  (res.json.reason ?? res.json.code ?? (res.json.error as { data?: { code?: string } } | undefined)?.data?.code) as
    string | undefined;

test('the sweep sees every registered HTTP endpoint, each of its methods', () => {
  expect(endpoints.map((e) => `${e.name} ${e.method}`).sort()).toEqual(
    host.registrations
      .filter(isHttp)
      .flatMap((r) => (r.options.methods ?? ['GET', 'POST']).map((m) => `${r.name} ${m.toUpperCase()}`))
      .sort(),
  );
  expect(endpoints.find((e) => e.name === 'token')?.style).toBe('oauth');
});

describe('duplicate keys and repeated parameters: 400 naming the parameter, never first- or last-wins', () => {
  test('duplicate JSON members, top level and nested', async () => {
    const dup = `{"grant_type":"${TOKEN_EXCHANGE}","subject_token_type":"${ACCESS_TOKEN_TYPE}","subject_token":"${caller}","resource":"${CLOUDSQL_RESOURCE}","since":"2024-01-01","resource":"cosmos://sandbox-cosmos/app/profiles"}`;
    await sweep(
      'duplicate JSON member',
      (ep) => (ep.hasBody ? { path: ep.path, contentType: 'application/json', body: dup } : undefined),
      (res) => {
        expect([res.status, code(res), parameterOf(res)]).toEqual([400, 'bad_request', 'resource']);
      },
    );
    const nested = `{"subject_token":"${caller}","since":{"a":1,"a":2}}`;
    await sweep(
      'nested duplicate',
      (ep) => (ep.hasBody ? { path: ep.path, contentType: 'application/json', body: nested } : undefined),
      (res) => {
        expect([res.status, parameterOf(res)]).toEqual([400, 'since.a']);
      },
    );
  });

  test('repeated form parameters', async () => {
    const body = form([...exchangeFields(CLOUDSQL_RESOURCE), ['resource', CLOUDSQL_RESOURCE]]);
    await sweep(
      'repeated form parameter',
      (ep) => (ep.readsParams ? { path: ep.path, contentType: 'application/x-www-form-urlencoded', body } : undefined),
      (res) => {
        expect([res.status, parameterOf(res)]).toEqual([400, 'resource']);
      },
    );
  });

  test('repeated query-string switches, on every endpoint', async () => {
    for (const q of ['dryRun=true&dryRun=false', 'probe=live&probe=ready', 'x=1&x=1']) {
      const name = q.split('=')[0]!;
      await sweep(
        `?${q}`,
        (ep) => ({
          path: `${ep.path.split('?')[0]}?${q}`,
          contentType: 'application/x-www-form-urlencoded',
          body: form(exchangeFields(CLOUDSQL_RESOURCE)),
        }),
        (res) => {
          expect([res.status, code(res), parameterOf(res)]).toEqual([400, 'bad_request', name]);
        },
      );
    }
  });
});

const NON_CANONICAL = [
  'cloudsql://sandbox-project/europe-west1/orders-db/payroll/../orders',
  'cloudsql://sandbox-project/europe-west1/orders-db/./orders',
  'cloudsql://sandbox-project/europe-west1/orders-db/%2e%2e/orders',
  'cloudsql://sandbox-project/europe-west1//orders-db/orders',
  'cloudsql://sandbox-project/europe-west1/orders-db/orders/',
  'cloudsql://sandbox-project/europe-west1/orders-db/ord\ters',
  'cloudsql://sandbox-project/europe-west1/orders-db/ord\r\ners',
  'cloudsql://sandbox-project/europe-west1/orders-db/%6frders',
  ` ${CLOUDSQL_RESOURCE}`,
  `${CLOUDSQL_RESOURCE}\n`,
  'CLOUDSQL://sandbox-project/europe-west1/orders-db/orders',
  'cosmos://sandbox-cosmos/app/catalog/../profiles',
  'cosmos://sandbox-cosmos/app/%70rofiles',
  `cosmos://sandbox-cosmos/app/profiles?partitionKey=${SANDBOX.readerObjectId}&mode=read`,
  `cosmos://sandbox-cosmos/app/profiles?partitionKey=${SANDBOX.readerObjectId}%00`,
  'query://order-count/',
  'query://order-count/..',
];

describe('non-canonical targets are refused, never normalised into a grant', () => {
  test.each(NON_CANONICAL)('%j', async (resource) => {
    for (const json of [false, true]) {
      await sweep(
        `resource ${JSON.stringify(resource)}`,
        (ep) =>
          ep.readsParams
            ? json
              ? {
                  path: ep.path,
                  contentType: 'application/json',
                  body: JSON.stringify(Object.fromEntries(exchangeFields(resource))),
                }
              : { path: ep.path, contentType: 'application/x-www-form-urlencoded', body: form(exchangeFields(resource)) }
            : undefined,
        (res, ep) => {
          if (ep.name === 'token' || ep.name === 'explain')
            expect([ep.name, res.status, code(res)]).toEqual([ep.name, 400, 'invalid_target']);
          expect(res.json.access_token).toBeUndefined();
          expect(res.json.decision).toBeUndefined();
        },
      );
    }
  });

  test('the canonical forms still work (the refusals above are not a broken endpoint)', async () => {
    const res = await send(
      build({
        path: '/api/policy/explain',
        contentType: 'application/x-www-form-urlencoded',
        body: form(exchangeFields(CLOUDSQL_RESOURCE)),
      }),
    );
    expect([res.status, res.json.decision, res.json.target]).toEqual([200, 'grant', CLOUDSQL_RESOURCE]);
  });
});

describe('control characters, malformed and oversized requests, bad Host, bad content types', () => {
  test('control characters in JSON values and names', async () => {
    const bodies = [
      `{"subject_token":"${caller}","resource":"cosmos://sandbox-cosmos/app/pro\\u0000files"}`,
      '{"since\\u0000":"x"}',
      '{"\\ud800":"lone surrogate"}',
    ];
    for (const body of bodies)
      await sweep(`control characters ${body.slice(-30)}`, (ep) =>
        ep.hasBody ? { path: ep.path, contentType: 'application/json', body } : undefined,
      );
  });

  test('malformed bodies', async () => {
    for (const body of [
      '{"a":',
      '[]',
      '"s"',
      'null',
      '{"a":1,}',
      '['.repeat(5000),
      '\ufeff{}',
      '{"requested_lifetime":1e400}',
      '\u0000',
    ]) {
      await sweep(
        `malformed body ${JSON.stringify(body.slice(0, 12))}`,
        (ep) => (ep.hasBody ? { path: ep.path, contentType: 'application/json', body } : undefined),
        (res) => {
          expect(res.status).toBe(400);
        },
      );
    }
  });

  test('seeded random bytes as JSON and form bodies: never a 5xx', async () => {
    let seed = 20261202;
    const rnd = () => (seed = (seed * 1103515245 + 12345) >>> 0) / 2 ** 32;
    const alphabet = '{}[]":,\\u0000\r\n\t %&=+.\u00e9\ud83d abc0123eE-truefalsenull';
    for (let i = 0; i < 12; i++) {
      const len = 1 + Math.floor(rnd() * 200);
      let body = '';
      for (let j = 0; j < len; j++) body += alphabet[Math.floor(rnd() * alphabet.length)];
      for (const ct of ['application/json', 'application/x-www-form-urlencoded']) {
        await sweep(
          `random body #${i} (${ct})`,
          (ep) => (ep.hasBody ? { path: ep.path, contentType: ct, body } : undefined),
          (res) => {
            expect(res.json.access_token).toBeUndefined();
          },
        );
      }
    }
  });

  test('bad content types: 415 in the endpoint style', async () => {
    for (const ct of [
      'text/plain',
      'multipart/form-data; boundary=x',
      'application/xml',
      'application/x-www-form-urlencoded\u0001',
    ]) {
      await sweep(
        `content-type ${JSON.stringify(ct)}`,
        (ep) => (ep.hasBody ? { path: ep.path, contentType: ct, body: 'a=b' } : undefined),
        (res) => {
          expect([400, 415]).toContain(res.status);
        },
      );
    }
  });

  test('a declared body over the cap: 413 in the endpoint style, answered before the body is sent', async () => {
    for (const ep of endpoints.filter((e) => e.hasBody)) {
      const head = build({
        method: ep.method,
        path: ep.path,
        contentType: 'application/x-www-form-urlencoded',
        headers: {},
        body: '',
      })
        .toString('latin1')
        .replace(/Content-Length: 0\r\n/, `Content-Length: ${50 * 1024 * 1024}\r\n`);
      const res = await send(Buffer.from(head, 'latin1')); // the 50 MiB never follow
      expectSafe(res, ep, 'declared 50 MiB');
      expect([ep.name, res.status, code(res)]).toEqual([ep.name, 413, 'payload_too_large']);
      if (ep.style === 'oauth') expect(res.json.error).toBe('invalid_request');
    }
  });

  test('a streamed (chunked) body over the cap: the read stops at the cap, 413 in the endpoint style', async () => {
    for (const ep of endpoints.filter((e) => e.hasBody)) {
      const head = `${ep.method} ${ep.path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Type: application/x-www-form-urlencoded\r\nTransfer-Encoding: chunked\r\n\r\n`;
      const chunk = Buffer.alloc(MAX_BODY_BYTES + 1024, 'a');
      // One chunk just over the cap and no terminating chunk: only a server that stops reading answers.
      const res = await send(
        Buffer.concat([Buffer.from(head), Buffer.from(`${chunk.length.toString(16)}\r\n`), chunk, Buffer.from('\r\n')]),
      );
      expectSafe(res, ep, 'chunked over the cap');
      expect([ep.name, res.status]).toEqual([ep.name, 413]);
    }
  });

  test('bad, missing and repeated Host headers: 400 in the endpoint style, never 500', async () => {
    const cases: Partial<Req>[] = [
      { rawHeaderLines: ['Host: a b'] },
      { rawHeaderLines: ['Host: [::1'] },
      { rawHeaderLines: ['Host: exa_mple:80'] },
      { rawHeaderLines: ['Host: 127.0.0.1:99999999'] },
      { rawHeaderLines: ['Host: '] },
      { rawHeaderLines: ['Host: %zz'] },
      { rawHeaderLines: ['Host: 127.0.0.1', 'Host: evil.example'] },
      { omitHost: true },
    ];
    for (const c of cases) {
      await sweep(
        `host ${JSON.stringify(c)}`,
        (ep) => ({
          path: ep.path,
          contentType: 'application/x-www-form-urlencoded',
          body: form(exchangeFields(CLOUDSQL_RESOURCE)),
          ...c,
        }),
        (res) => {
          expect([res.status, code(res)]).toEqual([400, 'bad_request']);
        },
      );
    }
  });

  test('repeated single-valued headers (a second Authorization, X-Subject-Token, Content-Type): 400 naming it', async () => {
    for (const [name, value] of [
      ['Authorization', 'Bearer other'],
      ['X-Subject-Token', 'other'],
      ['Content-Type', 'application/json'],
    ]) {
      await sweep(
        `repeated ${name}`,
        (ep) => ({
          path: ep.path,
          contentType: 'application/x-www-form-urlencoded',
          body: form(exchangeFields(CLOUDSQL_RESOURCE)),
          headers: { [name!]: value! },
        }),
        (res) => {
          expect([res.status, parameterOf(res)]).toEqual([400, name!.toLowerCase()]);
        },
      );
    }
  });

  test('request targets the URL parser would rewrite are refused, not routed', async () => {
    for (const path of [
      '/api/x/../token',
      '/api/%2e%2e/api/token',
      '/api/./health',
      '//evil.example/api/health',
      '/api\\token',
      'http://evil.example/api/health',
      '*',
    ]) {
      const res = await send(
        build({
          method: 'POST',
          path,
          contentType: 'application/x-www-form-urlencoded',
          body: form(exchangeFields(CLOUDSQL_RESOURCE)),
        }),
      );
      // answered in the style of the endpoint the rewritten path would have reached
      const resolved = path.startsWith('/') && !path.startsWith('//') ? new URL(path, 'http://h').pathname : '';
      expectSafe(
        res,
        endpoints.find((e) => e.path.split('?')[0] === resolved),
        `path ${path}`,
      );
      expect([path, res.status]).toEqual([path, 400]);
      expect(res.json.access_token).toBeUndefined();
    }
  });

  test('a request that never finishes arriving (slow loris): 408 in the endpoint style, with a correlation id', async () => {
    const slow = await startLocalHost({ requestTimeoutMs: 400, app: testContext() });
    try {
      const slowPort = Number(new URL(slow.url).port);
      for (const [path, style] of [
        ['/api/token', 'oauth'],
        ['/api/policy/explain', 'problem'],
      ] as const) {
        const t0 = Date.now();
        const res = await new Promise<Raw>((resolve, reject) => {
          const s = connect(slowPort, '127.0.0.1');
          const chunks: Buffer[] = [];
          s.on('data', (c: Buffer) => chunks.push(c));
          s.on('error', reject);
          s.on('close', () => {
            const text = Buffer.concat(chunks).toString('utf8');
            const [head = '', body = ''] = text.split('\r\n\r\n');
            const headers = Object.fromEntries(
              head
                .split('\r\n')
                .slice(1)
                .map((l) => [l.slice(0, l.indexOf(':')).toLowerCase(), l.slice(l.indexOf(':') + 1).trim()]),
            );
            let json: Record<string, unknown> = {};
            try {
              json = JSON.parse(body) as Record<string, unknown>;
            } catch {
              /* not JSON */
            }
            resolve({ status: Number(head.slice(9, 12)), headers, text: body, json });
          });
          s.write(
            `POST ${path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\ngrant_type=`,
          );
        });
        expect(Date.now() - t0).toBeLessThan(5000);
        expectSafe(
          res,
          endpoints.find((e) => e.path === path),
          `slow ${path}`,
        );
        expect([res.status, code(res), style === 'oauth' ? res.json.error : res.headers['content-type']]).toEqual([
          408,
          'request_timeout',
          style === 'oauth' ? 'invalid_request' : 'application/problem+json',
        ]);
      }
    } finally {
      await slow.close();
    }
  });

  test('requests the HTTP parser refuses still get a correlation id and a log line', async () => {
    for (const raw of [
      'GARBAGE\r\n\r\n',
      `POST /api/token HTTP/1.1\r\nHost: x\r\nX-Bad: a\u0001b\r\n\r\n`,
      `POST /api/token HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(20_000)}\r\n\r\n`,
      `POST /api/token HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n`,
      `POST /api/token HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab`,
    ]) {
      const res = await send(Buffer.from(raw, 'latin1'));
      expectSafe(
        res,
        raw.includes('/api/token') ? endpoints.find((e) => e.name === 'token') : undefined,
        `raw ${JSON.stringify(raw.slice(0, 40))}`,
      );
      expect(res.status).toBe(400);
    }
  });
});
