import { httpHandler, type RequestScope } from '../../../shared/http/handler';
import { correlationIdOf } from '../../../shared/http/correlation';
import { parseTraceparent } from '../../../shared/http/trace-context';
import { sqlComment } from '../../../shared/query/sql-comment';
import { testContext } from '../../helpers/app';
import { captureLogs, invoke } from '../../helpers/invoke';

/**
 * One traceparent parser (shared/http/trace-context.ts) decides both the trace the broker continues or starts and,
 * when no x-correlation-id is given, the correlation id: W3C Trace Context (https://www.w3.org/TR/trace-context/)
 * §3.2 cases, each through the real wrapper, so logs, the returned traceparent and the SQL comment name one trace.
 */

const T = '4bf92f3577b34da6a3ce929d0e0e4736';
const P = '00f067aa0ba902b7';

interface Case {
  name: string;
  traceparent?: string;
  tracestate?: string;
  /** The trace id continued, or undefined when a new trace must be started. */
  continues?: string;
}

const CASES: Case[] = [
  { name: 'no traceparent' },
  { name: 'version 00, sampled', traceparent: `00-${T}-${P}-01`, continues: T },
  { name: 'version 00, not sampled', traceparent: `00-${T}-${P}-00`, continues: T },
  { name: 'surrounding whitespace (OWS)', traceparent: ` 00-${T}-${P}-01 `, continues: T },
  { name: 'version ff is invalid', traceparent: `ff-${T}-${P}-01` },
  { name: 'all-zero trace id', traceparent: `00-${'0'.repeat(32)}-${P}-01` },
  { name: 'all-zero parent id', traceparent: `00-${T}-${'0'.repeat(16)}-01` },
  { name: 'upper-case trace id', traceparent: `00-${T.toUpperCase()}-${P}-01` },
  { name: 'upper-case version', traceparent: `0A-${T}-${P}-01` },
  { name: 'upper-case flags', traceparent: `00-${T}-${P}-0A` },
  { name: 'version 00 with an extra field', traceparent: `00-${T}-${P}-01-extra` },
  { name: 'version 00 one char short', traceparent: `00-${T.slice(1)}-${P}-01` },
  { name: 'a future version, exactly the 00 fields', traceparent: `01-${T}-${P}-01`, continues: T },
  { name: 'a future version with extra fields', traceparent: `cc-${T}-${P}-01-what-ever`, continues: T },
  { name: 'a future version, no dash after the flags', traceparent: `01-${T}-${P}-01x` },
  { name: 'a future version with an all-zero trace id', traceparent: `02-${'0'.repeat(32)}-${P}-01-x` },
  { name: 'not hex', traceparent: `00-${T.slice(0, 31)}g-${P}-01` },
  { name: 'a quote and a comment opener', traceparent: `00-${T}-${P}-01'/*` },
  { name: 'over 512 characters', traceparent: `01-${T}-${P}-01-${'a'.repeat(512)}` },
  { name: 'tracestate alone changes nothing', tracestate: 'congo=t61rcWkgMzE' },
  {
    name: 'tracestate with a valid traceparent',
    traceparent: `00-${T}-${P}-01`,
    tracestate: 'rojo=00f067aa0ba902b7',
    continues: T,
  },
  {
    name: 'hostile tracestate with a valid traceparent',
    traceparent: `00-${T}-${P}-01`,
    tracestate: "x='*/; DROP TABLE orders; --,/*=1",
    continues: T,
  },
];

describe('traceparent → trace and correlation id (one parser)', () => {
  let logs: ReturnType<typeof captureLogs>;
  beforeAll(() => (logs = captureLogs()));
  afterAll(() => logs.restore());

  test.each(CASES)('$name', async (c) => {
    let seen: RequestScope | undefined;
    const h = httpHandler(testContext(), 'traceTest', 'problem', (_req: unknown, scope: RequestScope) => {
      seen = scope;
      scope.log.info('inside');
      return Promise.resolve({ status: 204 });
    });
    const headers: Record<string, string> = {};
    if (c.traceparent !== undefined) headers.traceparent = c.traceparent;
    if (c.tracestate !== undefined) headers.tracestate = c.tracestate;
    const r = await invoke(h, { method: 'GET', headers });
    const trace = seen!.trace!;
    expect(parseTraceparent(c.traceparent)?.traceId).toBe(c.continues);
    if (c.continues) {
      expect(trace.traceId).toBe(c.continues);
      expect(trace.propagated).toBe(true);
    } else {
      expect(trace.propagated).toBe(false);
      expect(trace.traceId).not.toBe(T);
    }
    // The correlation id (not given) is the trace id of the trace continued or started, everywhere.
    expect(seen!.correlationId).toBe(trace.traceId);
    expect(r.headers.get('x-correlation-id')).toBe(trace.traceId);
    expect(r.headers.get('traceparent')).toBe(`00-${trace.traceId}-${trace.spanId}-${trace.flags}`);
    expect(r.headers.get('traceparent')).toMatch(/^00-[0-9a-f]{32}-[0-9a-f]{16}-0[01]$/);
    const mine = logs.records.filter((l) => l.correlationId === trace.traceId);
    expect(mine.map((l) => l.msg)).toEqual(expect.arrayContaining(['inside', 'request']));
    // What reaches the SQL comment: the broker's own traceparent and the correlation id, nothing of the headers.
    const comment = sqlComment({ traceparent: trace.traceparent, correlation_id: seen!.correlationId });
    expect(comment).toBe(`/*correlation_id='${trace.traceId}',traceparent='${trace.traceparent}'*/`);
  });

  test('a well-formed x-correlation-id is kept; the trace is still the one parsed', async () => {
    let seen: RequestScope | undefined;
    const h = httpHandler(testContext(), 'traceTest', 'problem', (_req: unknown, scope: RequestScope) => {
      seen = scope;
      return Promise.resolve({ status: 204 });
    });
    const r = await invoke(h, { method: 'GET', headers: { 'x-correlation-id': 'corr-0001', traceparent: `ff-${T}-${P}-01` } });
    expect(r.headers.get('x-correlation-id')).toBe('corr-0001');
    expect(seen!.trace!.traceId).not.toBe(T);
  });

  test('correlationIdOf without a trace: the trace id the one parser gives, else a new trace id', () => {
    const h = (v: Record<string, string>) => ({ get: (n: string) => v[n] ?? null });
    expect(correlationIdOf(h({ traceparent: `01-${T}-${P}-01-x` }))).toBe(T);
    expect(correlationIdOf(h({ traceparent: `ff-${T}-${P}-01` }))).toMatch(/^(?!4bf9)[0-9a-f]{32}$/);
    expect(correlationIdOf(h({ traceparent: `00-${T}-${'0'.repeat(16)}-01` }))).not.toBe(T);
  });
});
