import type { HttpHandler } from '@azure/functions';
import type { FetchLike } from '@modelcontextprotocol/sdk/shared/transport.js';
import { invoke } from './invoke';

/**
 * A fetch for the official SDK client's Streamable HTTP transport that hands each request to `handler` as the
 * Functions host would, with `token` as its bearer (none when undefined); `seen` collects "METHOD protocol-version".
 */
export function fetchIntoHandler(handler: HttpHandler, token: string | undefined, seen: string[] = []): FetchLike {
  return async (url, init) => {
    const req = new Request(url, init);
    const headers: Record<string, string> = {};
    req.headers.forEach((v, k) => (headers[k] = v));
    if (token !== undefined) headers.authorization = `Bearer ${token}`;
    seen.push(`${req.method} ${headers['mcp-protocol-version'] ?? '-'}`);
    const raw = req.method === 'POST' ? await req.text() : undefined;
    const r = await invoke(handler, { method: req.method, url: req.url, headers, ...(raw !== undefined ? { raw } : {}) });
    return new Response(r.status === 202 ? null : r.text, { status: r.status, headers: r.headers });
  };
}
