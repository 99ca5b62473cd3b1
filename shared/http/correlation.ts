import { randomUUID } from 'node:crypto';

const CORRELATION_ID = /^[A-Za-z0-9._:-]{8,128}$/;
const TRACEPARENT = /^[0-9a-f]{2}-([0-9a-f]{32})-[0-9a-f]{16}-[0-9a-f]{2}$/;

/** The request's correlation id: `x-correlation-id` if well-formed, else the W3C trace id, else a new one. */
export function correlationIdOf(headers: { get(name: string): string | null }): string {
  const given = headers.get('x-correlation-id');
  if (given && CORRELATION_ID.test(given)) return given;
  const tp = headers.get('traceparent');
  const m = tp ? TRACEPARENT.exec(tp.trim()) : null;
  if (m && m[1] && !/^0+$/.test(m[1])) return m[1];
  return randomUUID();
}
