import type { HttpHandler, HttpRequest, HttpResponseInit, InvocationContext } from '@azure/functions';
import { toBrokerError } from '../errors';
import { AdminAuditRecord, writeAdminAudit } from '../observability/admin-audit';
import { audit, auditFields, type AuditEvent } from '../observability/audit';
import type { LogFields, Logger } from '../observability/log';
import type { AppContext } from '../app/context';
import { inInvocation } from '../observability/process-guard';
import { correlationIdOf } from './correlation';
import { assertNoRepeatedQuery } from './request';
import { errorResponse, type ResponseStyle } from './responses';
import { traceContextOf, type TraceContext } from './trace-context';

export interface RequestScope {
  readonly correlationId: string;
  readonly log: Logger;
  readonly functionName: string;
  /** W3C trace context of this request (from a valid `traceparent`, else new); its traceparent is returned. */
  readonly trace?: TraceContext;
  /** Admin routes: the request's one audit record, written by the wrapper, enriched by the endpoint. */
  readonly adminAudit?: AdminAuditRecord;
  /** The app's process-wide objects (policy, Google tokens, Cosmos clients, pools). */
  readonly app: AppContext;
  /**
   * The request's audit event, written on the wrapper's one 'request' line (`event: 'audit'` and every audit field
   * beside method, status, code, duration): one line per request instead of two. A second event in the same
   * request gets a line of its own. Absent (scopes built outside httpHandler): write with `audit()`.
   */
  readonly requestAudit?: (event: AuditEvent) => void;
  /**
   * Continue the trace a message in the body names (MCP `params._meta.traceparent`): a valid traceparent (the one
   * parser, trace-context.ts) becomes this request's trace context from then on: the returned scope's, the request
   * line's, the returned `traceparent` header's, and the correlation id's when that came from the trace. Anything
   * else is ignored exactly as an invalid header is: the scope is returned as it was.
   */
  readonly continueTrace?: (traceparent: unknown) => RequestScope;
}

export interface HandlerOptions {
  /** An admin route: every request is audited exactly once, under the action this names for its method. */
  readonly adminAction?: (method: string) => string;
}

export type ScopedHandler = (req: HttpRequest, scope: RequestScope, ctx: InvocationContext) => Promise<HttpResponseInit>;

/**
 * Wrap a handler: correlation id, structured per-request logger, one place that maps every thrown
 * error to its response, and one log line per request (never bodies or headers).
 */
export function httpHandler(
  app: AppContext,
  functionName: string,
  style: ResponseStyle,
  fn: ScopedHandler,
  opts: HandlerOptions = {},
): HttpHandler {
  const handler = (req: HttpRequest, ctx: InvocationContext): Promise<HttpResponseInit> => {
    const started = process.hrtime.bigint();
    let trace = traceContextOf(req.headers.get('traceparent'));
    let correlationId = correlationIdOf(req.headers, trace);
    // Whatever this invocation leaves unhandled (a rejected promise nobody awaited) is logged with its ids.
    const invocation = { fn: functionName, correlationId, invocationId: ctx.invocationId };
    return inInvocation(
      invocation,
      (fields) => app.logger(fields),
      async () => {
        let log = app.logger({ correlationId, fn: functionName, invocationId: ctx.invocationId });
        const adminAudit = opts.adminAction && new AdminAuditRecord(opts.adminAction(req.method));
        let auditLine: LogFields | undefined;
        const requestAudit = (event: AuditEvent) => {
          if (auditLine) audit(log, event);
          else auditLine = auditFields(event);
        };
        let res: HttpResponseInit;
        let code: string | undefined;
        let party: string | undefined;
        const continueTrace = (traceparent: unknown): RequestScope => {
          const next = typeof traceparent === 'string' ? traceContextOf(traceparent) : undefined;
          if (next?.propagated) {
            const id = correlationIdOf(req.headers, next);
            // A trace the HTTP header carried stays on the lines as httpTraceId, so that hop still joins them.
            const fields = {
              ...(id !== correlationId ? { correlationId: id } : {}),
              ...(trace.propagated && trace.traceId !== next.traceId ? { httpTraceId: trace.traceId } : {}),
            };
            if (fields.correlationId !== undefined || fields.httpTraceId !== undefined) log = log.child(fields);
            trace = next;
            correlationId = id;
          }
          return scope();
        };
        const scope = (): RequestScope => ({
          correlationId,
          log,
          functionName,
          trace,
          app,
          adminAudit,
          requestAudit,
          continueTrace,
        });
        try {
          assertNoRepeatedQuery(req.query);
          res = await fn(req, scope(), ctx);
          res.headers = {
            'x-correlation-id': correlationId,
            ...(res.headers as Record<string, string> | undefined),
            traceparent: trace.traceparent,
          };
        } catch (thrown) {
          const err = toBrokerError(thrown);
          code = err.code;
          party = err.party;
          res = errorResponse(err, style, correlationId);
          res.headers = { ...(res.headers as Record<string, string> | undefined), traceparent: trace.traceparent };
          const fields = { code: err.code, status: err.status, party: err.party, cause: err.cause };
          if (err.status >= 500) log.error(err.message, fields);
          else log.info(err.message, fields);
        }
        if (adminAudit) writeAdminAudit(log, adminAudit, req, correlationId, { status: res.status ?? 200, code, party });
        const durationMs = Number(process.hrtime.bigint() - started) / 1e6;
        // The request's fields added to its audit fields (a fresh object of auditFields(), this line's alone) in place
        // of a spread of both into a new object.
        log.info(
          'request',
          Object.assign(auditLine ?? {}, {
            method: req.method,
            status: res.status ?? 200,
            code,
            durationMs: Math.round(durationMs * 100) / 100,
          }),
        );
        return res;
      },
    );
  };
  styles.set(handler, style);
  if (opts.adminAction) adminActions.set(handler, opts.adminAction);
  return handler;
}

const styles = new WeakMap<HttpHandler, ResponseStyle>();
const adminActions = new WeakMap<HttpHandler, (method: string) => string>();

/** The audit action of an admin handler's method (undefined: not an admin route): for what a host refuses itself. */
export function adminActionOf(handler: HttpHandler, method: string): string | undefined {
  return adminActions.get(handler)?.(method);
}

/**
 * The error style of a handler built by httpHandler (`problem` for anything else): what a host answers
 * in for a request it refuses before the handler runs (body too large, bad Host, malformed request).
 */
export function errorStyleOf(handler: HttpHandler): ResponseStyle {
  return styles.get(handler) ?? 'problem';
}
