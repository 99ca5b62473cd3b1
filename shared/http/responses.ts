import type { HttpResponseInit } from '@azure/functions';
import { BrokerError, oauthErrorFor, specOf } from '../errors';

/**
 * `oauth`: RFC 6749 §5.2 error bodies (token endpoint). `problem`: RFC 9457 problem+json (everything else).
 * `jsonrpc`: a JSON-RPC 2.0 error with no id (the MCP endpoint, for what fails before a message is dispatched).
 */
export type ResponseStyle = 'oauth' | 'problem' | 'jsonrpc';

/** The JSON-RPC error code of a broker error answered before dispatch (JSON-RPC 2.0 §5.1; -32000…-32099 server). */
function jsonRpcCodeOf(err: BrokerError): number {
  if (err.code === 'bad_request') return err.detail?.parameter === undefined ? -32700 : -32600;
  if (err.code === 'invalid_parameter') return -32602;
  if (err.code === 'not_found') return -32601;
  return -32001;
}

/** Map any error to the response for its style. Only `internal` becomes a 500. */
export function errorResponse(err: BrokerError, style: ResponseStyle, correlationId: string): HttpResponseInit {
  const spec = specOf(err.code);
  const headers: Record<string, string> = {
    'x-correlation-id': correlationId,
    'cache-control': 'no-store',
  };
  const retryAfter = err.retryAfterSeconds;
  if (retryAfter !== undefined) headers['retry-after'] = String(Math.max(1, Math.ceil(retryAfter)));
  if (err.challenge !== undefined) headers['www-authenticate'] = err.challenge;
  else if (spec.status === 401) {
    headers['www-authenticate'] =
      err.party === 'subject'
        ? 'Bearer error="invalid_request"'
        : `Bearer error="invalid_token", error_description="${err.code}"`;
  }
  if (style === 'oauth') {
    headers['content-type'] = 'application/json;charset=UTF-8';
    headers.pragma = 'no-cache';
    return {
      status: spec.status,
      headers,
      jsonBody: {
        // detail first: it adds fields (e.g. parameter), never replaces the standard ones
        ...(err.detail ?? {}),
        error: oauthErrorFor(err),
        error_description: err.message,
        reason: err.code,
        ...(err.party ? { party: err.party } : {}),
        correlation_id: correlationId,
      },
    };
  }
  if (style === 'jsonrpc') {
    headers['content-type'] = 'application/json';
    return {
      status: spec.status,
      headers,
      body: JSON.stringify({
        jsonrpc: '2.0',
        id: null,
        error: {
          code: jsonRpcCodeOf(err),
          message: err.message,
          data: { ...(err.detail ?? {}), code: err.code, correlationId, ...(err.party ? { party: err.party } : {}) },
        },
      }),
    };
  }
  headers['content-type'] = 'application/problem+json';
  return {
    status: spec.status,
    headers,
    body: JSON.stringify({
      ...(err.detail ?? {}),
      type: `urn:token-broker:problem:${err.code}`,
      title: spec.title,
      status: spec.status,
      detail: err.message,
      code: err.code,
      ...(err.party ? { party: err.party } : {}),
      correlationId,
    }),
  };
}

/** A JSON success response carrying the correlation id. */
export function jsonResponse(
  status: number,
  body: unknown,
  scope: { readonly correlationId: string },
  extraHeaders: Record<string, string> = {},
): HttpResponseInit {
  return jsonTextResponse(status, JSON.stringify(body), scope, extraHeaders);
}

/** The same, for a body already serialised as JSON text. */
export function jsonTextResponse(
  status: number,
  json: string,
  scope: { readonly correlationId: string },
  extraHeaders: Record<string, string> = {},
): HttpResponseInit {
  return {
    status,
    headers: {
      'content-type': 'application/json;charset=UTF-8',
      'x-correlation-id': scope.correlationId,
      'cache-control': 'no-store',
      ...extraHeaders,
    },
    body: json,
  };
}
