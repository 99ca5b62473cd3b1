import { RequestSchema } from '@modelcontextprotocol/sdk/types.js';
import * as z from 'zod/v4';

/**
 * The stateless MCP revision 2026-07-28 beside the two handshake revisions SDK 1.32 speaks (docs/mcp.md "Versions").
 * SDK 1.32 knows nothing of it (no `server/discover`, no `resultType`, and its transport refuses the version header),
 * so the broker adds the narrowest layer around the SDK: the per-request checks of a modern request here and in
 * endpoint.ts, `server/discover` registered on the SDK's own Server, and the result fields the revision requires
 * added to what the SDK framed. Sources: spec:2026-07-28/basic/versioning.mdx, basic/index.mdx §_meta,
 * basic/transports/streamable-http.mdx, server/discover.mdx, server/utilities/caching.mdx.
 */

/** The stateless revision: no `initialize`, version and client capabilities in every request's `_meta`. */
export const STATELESS_VERSION = '2026-07-28';

/** Every revision this server speaks, newest first (what `server/discover` and a -32022 error name). */
export const SUPPORTED_VERSIONS = [STATELESS_VERSION, '2025-11-25', '2025-06-18'] as const;

/** The methods of 2026-07-28 this server implements; any other is 404 with -32601 in that revision. */
const STATELESS_METHODS: ReadonlySet<string> = new Set(['server/discover', 'tools/list', 'tools/call']);

export const META_PROTOCOL_VERSION = 'io.modelcontextprotocol/protocolVersion';
const META_CLIENT_CAPABILITIES = 'io.modelcontextprotocol/clientCapabilities';
const META_SERVER_INFO = 'io.modelcontextprotocol/serverInfo';

/** How long a client may cache `server/discover` (the same for every caller: `public`), as the PRM's max-age. */
const DISCOVER_TTL_MS = 300_000;

/** `server/discover` (spec:2026-07-28/server/discover.mdx): no parameters beyond `_meta`. */
export const DiscoverRequestSchema = RequestSchema.extend({ method: z.literal('server/discover') });

/** The DiscoverResult (schema/2026-07-28/schema.ts) of this server; `resultType` and `_meta` are added as to every result. */
export function discoverResult(options: { capabilities: Record<string, unknown>; instructions?: string }) {
  return {
    supportedVersions: [...SUPPORTED_VERSIONS],
    capabilities: options.capabilities,
    ...(options.instructions !== undefined ? { instructions: options.instructions } : {}),
    ttlMs: DISCOVER_TTL_MS,
    cacheScope: 'public' as const,
  };
}

/** A request refused before dispatch: the HTTP status and the JSON-RPC error. */
export interface Refusal {
  readonly status: number;
  readonly code: number;
  readonly message: string;
}

/**
 * What a 2026-07-28 request (one with an id) must carry beyond the headers endpoint.ts checks: `_meta` with the
 * protocol version and the client capabilities (missing: 400 -32602, spec:2026-07-28/basic/index.mdx "Per-request
 * protocol fields"), and a method this server implements in that revision (else 404 -32601,
 * spec:2026-07-28/basic/transports/streamable-http.mdx §Protocol Version Header). Undefined when it may go on.
 */
export function statelessRequestRefusal(method: unknown, meta: Record<string, unknown> | undefined): Refusal | undefined {
  const caps = meta?.[META_CLIENT_CAPABILITIES];
  if (typeof meta?.[META_PROTOCOL_VERSION] !== 'string' || caps === null || typeof caps !== 'object' || Array.isArray(caps))
    return {
      status: 400,
      code: -32602,
      message: `Invalid params: _meta must carry ${META_PROTOCOL_VERSION} and ${META_CLIENT_CAPABILITIES} (protocol ${STATELESS_VERSION})`,
    };
  if (typeof method !== 'string' || !STATELESS_METHODS.has(method))
    return { status: 404, code: -32601, message: 'Method not found' };
  return undefined;
}

/**
 * The SDK's JSON-RPC answer to a 2026-07-28 request with what that revision requires of every result: `resultType:
 * "complete"` (changelog major #8), the server's identity in `_meta` (SHOULD, changelog major #2), and for
 * `tools/list` the caching hints (caching.mdx: `private`, the list is this caller's; `ttlMs` 0, it is the live
 * policy's answer now). An error answer is returned as it is.
 */
export function statelessResult<M extends object>(message: M, method: unknown, serverInfo: { name: string; version: string }): M {
  const r = (message as { result?: unknown }).result;
  if (r === null || typeof r !== 'object' || Array.isArray(r)) return message;
  const result = r as Record<string, unknown>;
  const meta = result._meta !== null && typeof result._meta === 'object' ? result._meta : {};
  return {
    ...message,
    result: {
      ...result,
      resultType: 'complete',
      ...(method === 'tools/list' ? { ttlMs: 0, cacheScope: 'private' } : {}),
      _meta: { ...meta, [META_SERVER_INFO]: serverInfo },
    },
  };
}
