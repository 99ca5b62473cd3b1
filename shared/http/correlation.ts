import { traceContextOf, type TraceContext } from './trace-context';

const CORRELATION_ID = /^[A-Za-z0-9._:-]{8,128}$/;

/**
 * The request's correlation id: `x-correlation-id` if well-formed, else the trace id of the trace the broker
 * continues or starts for this request (`trace`, from the one traceparent parser in trace-context.ts): so logs,
 * audit events, the SQL comment and the returned `traceparent` never name two traces for one request.
 */
export function correlationIdOf(
  headers: { get(name: string): string | null },
  trace: Pick<TraceContext, 'traceId'> = traceContextOf(headers.get('traceparent')),
): string {
  const given = headers.get('x-correlation-id');
  if (given && CORRELATION_ID.test(given)) return given;
  return trace.traceId;
}
