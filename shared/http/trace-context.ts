import { randomBytes } from 'node:crypto';

/**
 * W3C Trace Context (https://www.w3.org/TR/trace-context/#traceparent-header): the request's `traceparent`
 * is taken when valid, else a new trace is started. The broker's own operation gets a new span id (the
 * parent-id it hands on to the database comment and returns in the `traceparent` response header).
 *
 * Validation follows the spec's parsing rules: lowercase hex only; version `ff` is invalid; version `00` is
 * exactly 55 characters; a higher version may carry more fields after a `-`; an all-zero trace-id or
 * parent-id is invalid.
 */
export interface TraceContext {
  /** 32 lowercase hex digits. */
  readonly traceId: string;
  /** The broker's span id for this request: 16 lowercase hex digits. */
  readonly spanId: string;
  /** The caller's parent-id when a valid traceparent came in. */
  readonly parentId?: string;
  /** Two hex digits (bit 0 = sampled). */
  readonly flags: string;
  /** `00-{traceId}-{spanId}-{flags}`: the broker's own traceparent. */
  readonly traceparent: string;
  /** Whether the trace id came from the request. */
  readonly propagated: boolean;
}

const HEAD = /^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?$/;

/** The parsed parts of a valid traceparent header, or undefined. */
export function parseTraceparent(
  header: string | null | undefined,
): { traceId: string; parentId: string; flags: string } | undefined {
  if (!header || header.length > 512) return undefined;
  const v = header.trim();
  const m = HEAD.exec(v);
  if (!m) return undefined;
  const [, version, traceId, parentId, flags, rest] = m as unknown as [
    string,
    string,
    string,
    string,
    string,
    string | undefined,
  ];
  if (version === 'ff') return undefined;
  if (version === '00' && (rest !== undefined || v.length !== 55)) return undefined;
  if (/^0+$/.test(traceId) || /^0+$/.test(parentId)) return undefined;
  return { traceId, parentId, flags };
}

/** Random bytes drawn from a pool refilled 4 KiB at a time: one CSPRNG call per ~170 requests, not two per request. */
const POOL_SIZE = 4096;
let pool = Buffer.alloc(0);
let offset = POOL_SIZE;

function hex(bytes: number): string {
  for (;;) {
    if (offset + bytes > pool.length) {
      pool = randomBytes(POOL_SIZE);
      offset = 0;
    }
    const h = pool.toString('hex', offset, offset + bytes);
    offset += bytes;
    if (!/^0+$/.test(h)) return h;
  }
}

export function traceContextOf(header: string | null | undefined): TraceContext {
  const parsed = parseTraceparent(header);
  const traceId = parsed?.traceId ?? hex(16);
  const spanId = hex(8);
  // Only the sampled bit is defined for version 00; other bits are not propagated.
  const flags = parsed ? ((parseInt(parsed.flags, 16) & 1) === 1 ? '01' : '00') : '01';
  return {
    traceId,
    spanId,
    parentId: parsed?.parentId,
    flags,
    traceparent: `00-${traceId}-${spanId}-${flags}`,
    propagated: parsed !== undefined,
  };
}
