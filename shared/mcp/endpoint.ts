import type { HttpRequest, HttpResponseInit } from '@azure/functions';
import { bearerOf, loadCore, validateMcpCaller } from '../auth/frontdoor';
import type { Principal } from '../auth/principal';
import { v2Issuer } from '../auth/principal';
import { mcpConfig, type McpConfig } from '../config/mcp';
import { queryConfig } from '../config/query';
import { BrokerError, toBrokerError, type ErrorCode } from '../errors';
import type { RequestScope } from '../http/handler';
import { parseJsonBody, readBodyText, MAX_BODY_BYTES } from '../http/request';
import { jsonResponse } from '../http/responses';
import type { AppContext } from '../app/context';
import type { Policy } from '../policy/schema';
import { loadCatalogFile, type Catalog } from '../query/catalog';
import { runCataloguedQuery, type QueryCall, type QueryResult } from '../query/run-catalogued';
import { answerJson, SERVER_INFO, ServerPool } from './server';
import {
  META_PROTOCOL_VERSION,
  statelessRequestRefusal,
  statelessResult,
  STATELESS_VERSION,
  SUPPORTED_VERSIONS,
} from './stateless-revision';
import { EXPLAIN_TOOL, hasScope, toolScope, ToolCatalog } from './tools';

/**
 * POST /api/mcp: the broker's remote MCP server (Streamable HTTP, stateless, JSON responses), an OAuth resource
 * server for Entra v2.0 tokens. Gates in order: method (POST only) → Origin → protocol version header → bearer
 * token (401 with the Protected Resource Metadata challenge) → scope (403 insufficient_scope) → body (64 KiB,
 * strict JSON, one message) → `_meta.traceparent` continues the trace → MCP-Protocol-Version / Mcp-Method / Mcp-Name
 * against the body → a 2026-07-28 request's `_meta` and method → the tool's own scope → the SDK server.
 * See docs/mcp.md.
 */

/** Dependencies of the MCP endpoint: each defaults to the broker's own (tests and a composition root pass others). */
export interface McpDeps {
  readonly config: () => McpConfig;
  readonly policy: () => Promise<Policy>;
  readonly catalog: () => Catalog;
  readonly runQuery: (call: QueryCall) => Promise<QueryResult>;
}

/** The broker's own dependencies, from the app context (a bad setting is 503 config_invalid naming it). */
function defaultDeps(app: AppContext): McpDeps {
  return {
    config: () => app.settings(mcpConfig),
    policy: () => app.policy.current(),
    catalog: () => loadCatalogFile(app.settings(queryConfig).catalogPath),
    runQuery: runCataloguedQuery,
  };
}

/** Where this server's Protected Resource Metadata is served (under the Functions route prefix; docs/mcp.md). */
function resourceMetadataUrl(resourceUrl: string): string {
  const u = new URL(resourceUrl);
  return `${u.origin}/api/.well-known/oauth-protected-resource${u.pathname.replace(/\/+$/, '')}`;
}

function fullScope(cfg: McpConfig, scope: string): string {
  return `${cfg.scopePrefix}${scope}`;
}

/** RFC 6750 §3 / RFC 9728 §5.1 challenge; `error` only when a token was presented. */
function challenge(cfg: McpConfig, opts: { error?: string; scope: string; description?: string }): string {
  const parts = [
    ...(opts.error ? [`error="${opts.error}"`] : []),
    `resource_metadata="${resourceMetadataUrl(cfg.resourceUrl)}"`,
    `scope="${opts.scope}"`,
    ...(opts.description ? [`error_description="${opts.description.replace(/["\\]/g, '')}"`] : []),
  ];
  return `Bearer ${parts.join(', ')}`;
}

/** A JSON-RPC error answered before dispatch, with the request's id when it had one. */
function rpcError(
  status: number,
  id: unknown,
  code: number,
  message: string,
  scope: Pick<RequestScope, 'correlationId' | 'log'>,
  reason: ErrorCode,
  data: Record<string, unknown> = {},
  headers: Record<string, string> = {},
): HttpResponseInit {
  scope.log.info(message, { code: reason, status, rpcCode: code });
  return jsonResponse(
    status,
    {
      jsonrpc: '2.0',
      id: typeof id === 'string' || typeof id === 'number' ? id : null,
      error: { code, message, data: { ...data, code: reason, correlationId: scope.correlationId } },
    },
    scope,
    { 'content-type': 'application/json', ...headers },
  );
}

const REASON_OF_STATUS: Readonly<Record<number, ErrorCode>> = {
  405: 'method_not_allowed',
  406: 'not_acceptable',
  413: 'payload_too_large',
  415: 'unsupported_media_type',
};

/** An HTTP error the SDK transport answered (e.g. a message its schema refuses), given the broker's reason and correlation id. */
function withReason(text: string, status: number, scope: Pick<RequestScope, 'correlationId' | 'log'>): string {
  let j: { error?: { data?: unknown; message?: unknown } } | undefined;
  try {
    j = JSON.parse(text) as typeof j;
  } catch {
    return text;
  }
  if (!j?.error || typeof j.error !== 'object') return text;
  const code = REASON_OF_STATUS[status] ?? 'bad_request';
  const data = j.error.data !== null && typeof j.error.data === 'object' ? j.error.data : {};
  j.error.data = { ...data, code, correlationId: scope.correlationId };
  scope.log.info(typeof j.error.message === 'string' ? j.error.message.slice(0, 200) : 'refused', { code, status });
  return JSON.stringify(j);
}

/** `=?base64?…?=` header values (2026-07-28 Standard Request Headers) decoded; anything else as sent. */
export function decodeMcpHeader(v: string): string | undefined {
  const m = /^=\?base64\?([A-Za-z0-9+/=]*)\?=$/.exec(v);
  if (!m) return v;
  const text = Buffer.from(m[1]!, 'base64').toString('utf8');
  return text.includes('\uFFFD') ? undefined : text;
}

function originAllowed(origin: string, cfg: McpConfig): boolean {
  return origin === new URL(cfg.resourceUrl).origin || cfg.allowedOrigins.includes(origin);
}

/**
 * The MCP endpoint: one per process (its tool cache and its SDK servers live as long as it does); create it once, from
 * a composition root.
 */
export function createMcpEndpoint(app: AppContext, overrides: Partial<McpDeps> = {}) {
  const deps: McpDeps = { ...defaultDeps(app), ...overrides };
  const tools = new ToolCatalog();
  const servers = new ServerPool();

  async function authenticate(req: HttpRequest, cfg: McpConfig): Promise<Principal> {
    const base = fullScope(cfg, cfg.requiredScope);
    let token: string | undefined;
    try {
      token = bearerOf(req);
    } catch (e) {
      throw toBrokerError(e).withChallenge(challenge(cfg, { error: 'invalid_request', scope: base }));
    }
    if (!token)
      throw new BrokerError('token_missing', 'A bearer token for the MCP resource is required.').withChallenge(
        challenge(cfg, { scope: base }),
      );
    let p: Principal;
    try {
      p = await validateMcpCaller(token, cfg, loadCore());
    } catch (e) {
      const err = toBrokerError(e);
      if (err.status === 401)
        throw err.withChallenge(challenge(cfg, { error: 'invalid_token', scope: base, description: err.code }));
      throw err;
    }
    if (!hasScope(p, cfg.requiredScope)) {
      throw new BrokerError('insufficient_scope', `The token lacks the scope ${base}.`, {
        detail: { scope: base },
      }).withChallenge(challenge(cfg, { error: 'insufficient_scope', scope: base }));
    }
    return p;
  }

  async function handle(req: HttpRequest, requestScope: RequestScope): Promise<HttpResponseInit> {
    let scope = requestScope;
    // Spec 2025-06-18+: a server without an SSE stream answers GET with 405; a session-less one DELETE too.
    if (req.method !== 'POST') {
      return rpcError(
        405,
        null,
        -32000,
        'Method not allowed: this MCP endpoint takes POST only.',
        scope,
        'method_not_allowed',
        {},
        { allow: 'POST' },
      );
    }
    const cfg = deps.config();
    const origin = req.headers.get('origin');
    if (origin !== null && !originAllowed(origin, cfg)) {
      // DNS rebinding protection (2025-06-18 basic/transports "MUST validate the Origin header"; 2025-11-25: 403).
      throw new BrokerError('origin_not_allowed', 'This Origin may not call the MCP endpoint.');
    }
    const version = req.headers.get('mcp-protocol-version');
    if (version !== null && !(SUPPORTED_VERSIONS as readonly string[]).includes(version)) {
      return rpcError(400, null, -32022, `Unsupported protocol version: ${version.slice(0, 32)}`, scope, 'bad_request', {
        supported: [...SUPPORTED_VERSIONS],
        requested: version.slice(0, 32),
      });
    }
    const principal = await authenticate(req, cfg);
    // Streamable HTTP: the client MUST accept both (the SDK's own check, answered here in the broker's shape).
    const accept = req.headers.get('accept') ?? '';
    if (!accept.includes('application/json') || !accept.includes('text/event-stream'))
      throw new BrokerError('not_acceptable', 'Accept must list application/json and text/event-stream.');

    // The body: 64 KiB, strict JSON (a duplicate member is refused), exactly one message (batches were removed in 2025-06-18).
    const type = (req.headers.get('content-type') ?? '').split(';')[0]!.trim().toLowerCase();
    if (type !== 'application/json') throw new BrokerError('unsupported_media_type', 'Send application/json.');
    const body = parseJsonBody(await readBodyText(req, MAX_BODY_BYTES));
    if (Array.isArray(body))
      return rpcError(400, null, -32600, 'Batches are not supported: send one JSON-RPC message.', scope, 'bad_request');
    if (body === null || typeof body !== 'object')
      return rpcError(400, null, -32600, 'Invalid Request: not a JSON-RPC message.', scope, 'bad_request');
    const msg = body as { id?: unknown; method?: unknown; params?: unknown };
    const params = (msg.params !== null && typeof msg.params === 'object' ? msg.params : {}) as Record<string, unknown>;
    const toolName = msg.method === 'tools/call' && typeof params.name === 'string' ? params.name : undefined;
    const meta =
      params._meta !== null && typeof params._meta === 'object' && !Array.isArray(params._meta)
        ? (params._meta as Record<string, unknown>)
        : undefined;

    // W3C trace context of the JSON-RPC request (spec:2026-07-28/basic/index.mdx §_meta "OpenTelemetry trace context";
    // read in every revision, as OpenTelemetry's MCP conventions put it there): the MCP operation's context, so a valid
    // one wins over the HTTP header's (docs/mcp.md "Tracing"); an invalid one is ignored as an invalid header is.
    if (meta?.traceparent !== undefined && scope.continueTrace) scope = scope.continueTrace(meta.traceparent);

    // 2026-07-28: the version in _meta must be the header's; the Standard Request Headers must agree with the body
    // (required in that revision; checked in the others where a client sends them); a request's _meta and method.
    const stateless = version === STATELESS_VERSION;
    const isRequest = msg.id !== undefined;
    if (meta?.[META_PROTOCOL_VERSION] !== undefined && meta[META_PROTOCOL_VERSION] !== version)
      return rpcError(
        400,
        msg.id,
        -32020,
        `Header mismatch: MCP-Protocol-Version header value does not match _meta ${META_PROTOCOL_VERSION}`,
        scope,
        'bad_request',
      );
    const named = toolName ?? (typeof params.uri === 'string' ? params.uri : undefined);
    const mismatch = headerMismatch(req, msg.method, named, stateless && isRequest);
    if (mismatch) return rpcError(400, msg.id, -32020, mismatch, scope, 'bad_request');
    if (stateless && isRequest) {
      const refused = statelessRequestRefusal(msg.method, meta);
      if (refused)
        return rpcError(
          refused.status,
          msg.id,
          refused.code,
          refused.message,
          scope,
          refused.status === 404 ? 'not_found' : 'bad_request',
        );
    } else if (msg.method === 'server/discover') {
      // A 2026-07-28 method: in the handshake revisions it is unknown, as the SDK would answer.
      return rpcError(200, msg.id, -32601, 'Method not found', scope, 'not_found');
    }

    const catalog = deps.catalog();
    if (toolName !== undefined && toolName !== EXPLAIN_TOOL) {
      const q = catalog.queries.find((x) => x.name === toolName);
      const needed = toolScope(q, cfg.requiredScope);
      if (q && !hasScope(principal, needed)) {
        const both = [cfg.requiredScope, needed].map((s) => fullScope(cfg, s)).join(' ');
        throw new BrokerError('insufficient_scope', `The tool ${toolName} needs the scope ${fullScope(cfg, needed)}.`, {
          detail: { scope: fullScope(cfg, needed) },
        }).withChallenge(challenge(cfg, { error: 'insufficient_scope', scope: both }));
      }
    }

    // A tool's arguments are checked by the query path against the catalog (own members only, each named when refused):
    // the SDK sees an empty object, so no member name (`__proto__`, `constructor`) reaches its schema parse.
    let sdkBody: unknown = body;
    if (toolName !== undefined && params.arguments !== undefined) {
      const a = params.arguments;
      if (a === null || typeof a !== 'object' || Array.isArray(a))
        return rpcError(200, msg.id, -32602, 'Invalid params: arguments must be an object.', scope, 'invalid_parameter');
      sdkBody = { ...msg, params: { ...params, arguments: {} } };
    }

    // The SDK transport gets the headers it reads, already checked above, and no others (the bearer token stays out of
    // the handlers' requestInfo; a plain record is also much cheaper for undici's Request than a copy of every
    // header). SDK 1.32's transport refuses a version it does not know: a 2026-07-28 request reaches it without the
    // header (the methods it dispatches are the same in every revision; the result fields are added below).
    const sdkHeaders: Record<string, string> = { accept, 'content-type': type };
    if (version !== null && !stateless) sdkHeaders['mcp-protocol-version'] = version;
    const request = new Request(req.url, { method: 'POST', headers: sdkHeaders });
    const { response: res, answer } = await servers.dispatch(
      {
        principal,
        scope,
        policy: await deps.policy(),
        catalog,
        requiredScope: cfg.requiredScope,
        tools,
        runQuery: deps.runQuery,
        action: 'mcp.tools/call',
        rawArguments: params.arguments,
      },
      request,
      sdkBody,
    );
    const out: Record<string, string> = { 'cache-control': 'no-store' };
    res.headers.forEach((v, k) => (out[k] = v));
    if (res.status === 202) return { status: 202, headers: out };
    if (answer !== undefined) {
      // The JSON-RPC response the SDK built, serialized once into the string body the host sends (server.ts).
      const message = stateless ? statelessResult(answer, msg.method, SERVER_INFO) : answer;
      return { status: res.status, headers: out, body: answerJson(message) };
    }
    const text = await res.text();
    if (res.status >= 400) return { status: res.status, headers: out, body: withReason(text, res.status, scope) };
    return { status: res.status, headers: out, body: text };
  }

  return { handle };
}

export type McpEndpoint = ReturnType<typeof createMcpEndpoint>;

/** GET …/.well-known/oauth-protected-resource/api/mcp: RFC 9728 Protected Resource Metadata. */
export function createMcpMetadata(app: AppContext, overrides: Partial<McpDeps> = {}) {
  const deps: McpDeps = { ...defaultDeps(app), ...overrides };
  return (_req: HttpRequest, scope: RequestScope): Promise<HttpResponseInit> => {
    const cfg = deps.config();
    const tenants = loadCore().allowedTenants;
    const scopes = new Set([cfg.requiredScope]);
    try {
      for (const q of deps.catalog().queries) if (q.mcp?.scope) scopes.add(q.mcp.scope);
    } catch {
      /* the catalog's own problems are answered by the endpoint, not hidden in the metadata */
    }
    return Promise.resolve(
      jsonResponse(
        200,
        {
          resource: cfg.resourceUrl,
          authorization_servers: cfg.authorizationServers.length ? cfg.authorizationServers : tenants.map(v2Issuer),
          scopes_supported: [...scopes].map((s) => fullScope(cfg, s)),
          bearer_methods_supported: ['header'],
          resource_name: 'Token broker MCP server',
        },
        scope,
        { 'content-type': 'application/json', 'cache-control': 'public, max-age=300' },
      ),
    );
  };
}

/** The methods whose request must carry Mcp-Name in 2026-07-28 (spec:2026-07-28/basic/transports/streamable-http.mdx). */
const NAMED_METHODS: ReadonlySet<unknown> = new Set(['tools/call', 'resources/read', 'prompts/get']);

/**
 * Mcp-Method must equal `method`, Mcp-Name the tool name or URI; when `required` (a 2026-07-28 request), Mcp-Method
 * always and Mcp-Name for the named methods must be present. The mismatch, or undefined.
 */
function headerMismatch(req: HttpRequest, method: unknown, name: string | undefined, required: boolean): string | undefined {
  const m = req.headers.get('mcp-method');
  if (m === null && required) return 'Header mismatch: the Mcp-Method header is required';
  if (m !== null && decodeMcpHeader(m) !== method) return `Header mismatch: Mcp-Method header value does not match body method`;
  const n = req.headers.get('mcp-name');
  if (n === null && required && NAMED_METHODS.has(method)) return 'Header mismatch: the Mcp-Name header is required';
  if (n !== null && decodeMcpHeader(n) !== name) return `Header mismatch: Mcp-Name header value does not match body value`;
  return undefined;
}
