import { randomUUID } from 'node:crypto';
import { HttpRequest, HttpResponse, InvocationContext, type HttpHandler, type HttpResponseInit } from '@azure/functions';
import type { LogRecord } from '../../shared/observability/log';
import { replaceTestLogSink } from './app';

/** A parsed handler response. */
export interface Result {
  status: number;
  headers: Headers;
  /** Parsed JSON body (undefined when empty or not JSON). */
  json: Record<string, unknown> & { [k: string]: unknown };
  text: string;
}

export interface CallOptions {
  method?: string;
  url?: string;
  headers?: Record<string, string>;
  /** Form fields (sent as application/x-www-form-urlencoded). */
  form?: Record<string, string>;
  /** JSON body. */
  body?: unknown;
  /** Raw body with its content type in headers. */
  raw?: string;
  params?: Record<string, string>;
}

/** Call a handler exactly as the Functions host would: real HttpRequest and InvocationContext. */
export async function invoke(handler: HttpHandler, opts: CallOptions = {}): Promise<Result> {
  const headers: Record<string, string> = { ...(opts.headers ?? {}) };
  let body: string | undefined;
  if (opts.form) {
    headers['content-type'] ??= 'application/x-www-form-urlencoded';
    body = new URLSearchParams(opts.form).toString();
  } else if (opts.body !== undefined) {
    headers['content-type'] ??= 'application/json';
    body = JSON.stringify(opts.body);
  } else if (opts.raw !== undefined) body = opts.raw;
  const req = new HttpRequest({
    method: opts.method ?? 'POST',
    url: opts.url ?? 'http://127.0.0.1:7071/api/test',
    headers,
    params: opts.params,
    ...(body !== undefined ? { body: { string: body } } : {}),
  });
  const ctx = new InvocationContext({ invocationId: randomUUID(), functionName: 'test' });
  const init = (await handler(req, ctx)) as HttpResponseInit;
  const res = new HttpResponse(init);
  const text = await res.text();
  let json: Record<string, unknown>;
  try {
    json = text ? (JSON.parse(text) as Record<string, unknown>) : {};
  } catch {
    json = {};
  }
  return { status: res.status, headers: res.headers, json, text };
}

/** Capture structured log records for the duration of a test file. */
export function captureLogs(): { records: LogRecord[]; restore: () => void } {
  const records: LogRecord[] = [];
  const prev = replaceTestLogSink((r) => records.push(r));
  return { records, restore: () => replaceTestLogSink(prev) };
}
