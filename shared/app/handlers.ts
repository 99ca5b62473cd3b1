import type { HttpHandler, InvocationContext, Timer } from '@azure/functions';
import { handleHealth } from '../health/endpoint';
import { handleTokenExchange } from '../exchange/token-endpoint';
import { httpHandler } from '../http/handler';
import { inInvocation } from '../observability/process-guard';
import { handleRemoveDeny } from '../policy/admin/remove-deny';
import { handleAddDeny } from '../policy/admin/add-deny';
import { handlePolicyHistory } from '../policy/admin/history';
import { handleGetPolicy } from '../policy/admin/get-policy';
import { handlePutPolicy } from '../policy/admin/put-policy';
import { handleExplain } from '../policy/explain';
import { createMcpEndpoint, createMcpMetadata } from '../mcp/endpoint';
import { handleQuery } from '../query/endpoint';
import { makeAdminRotate } from '../rotation/endpoint';
import { prewarmGoogleTokens } from '../google/prewarm';
import { runAllRotations } from '../rotation/run-all';
import { appContext, type AppContext } from './context';

export type TimerHandler = (timer: Timer, ctx: InvocationContext) => Promise<void>;

/**
 * Token prewarm (GOOGLE_TOKEN_PREWARM, default on): the Cloud SQL login tokens of the service accounts the policy
 * names are fetched into the broker's cache, so the first caller after a cold start, a policy change or an expiry
 * does not wait for STS and generateAccessToken. Failures are logged only.
 */
function prewarmTimerHandler(app: AppContext): TimerHandler {
  return (_timer, ctx) =>
    inInvocation(
      { fn: 'prewarmTimer', invocationId: ctx.invocationId },
      (fields) => app.logger(fields),
      async () => {
        await prewarmGoogleTokens(app, app.logger({ fn: 'prewarmTimer', invocationId: ctx.invocationId })).catch(() => undefined);
      },
    );
}

/**
 * Rotation timer: rotates each managed key that is due, repairs broken ones, retires previous keys after the grace
 * period; then the Cosmos account keys of COSMOS_MANAGED_ACCOUNTS (dual-key procedure). A past-due invocation just
 * runs.
 */
function rotationTimerHandler(app: AppContext): TimerHandler {
  return (timer, ctx) =>
    inInvocation(
      { fn: 'rotationTimer', invocationId: ctx.invocationId },
      (fields) => app.logger(fields),
      async () => {
        const log = app.logger({ fn: 'rotationTimer', invocationId: ctx.invocationId });
        if (timer.isPastDue) log.warn('rotation timer is past due; running now', { event: 'rotation.past-due' });
        await runAllRotations(app, log);
      },
    );
}

/** Every function's handler, made from one app context (by registration name). */
export function handlersOf(app: AppContext) {
  return {
    // Admin routes: every request is one audit event (shared/observability/admin-audit.ts), under these actions.
    adminDenyRemove: httpHandler(app, 'adminDenyRemove', 'problem', handleRemoveDeny, {
      adminAction: () => 'policy.deny.remove',
    }),
    adminDeny: httpHandler(app, 'adminDeny', 'problem', handleAddDeny, { adminAction: () => 'policy.deny.add' }),
    adminPolicyHistory: httpHandler(app, 'adminPolicyHistory', 'problem', handlePolicyHistory, {
      adminAction: () => 'policy.history',
    }),
    adminPolicy: httpHandler(
      app,
      'adminPolicy',
      'problem',
      (req, scope) => (req.method === 'PUT' ? handlePutPolicy(req, scope) : handleGetPolicy(req, scope)),
      { adminAction: (method) => (method === 'PUT' ? 'policy.write' : 'policy.read') },
    ),
    adminRotate: httpHandler(app, 'adminRotate', 'problem', makeAdminRotate(), { adminAction: () => 'rotation.admin' }),
    explain: httpHandler(app, 'explain', 'problem', handleExplain),
    health: httpHandler(app, 'health', 'problem', handleHealth),
    query: httpHandler(app, 'query', 'problem', handleQuery),
    token: httpHandler(app, 'token', 'oauth', handleTokenExchange),
    mcp: httpHandler(app, 'mcp', 'jsonrpc', createMcpEndpoint(app).handle),
    mcpMetadata: httpHandler(app, 'mcpMetadata', 'problem', createMcpMetadata(app)),
    prewarmTimer: prewarmTimerHandler(app),
    rotationTimer: rotationTimerHandler(app),
  } satisfies Record<string, HttpHandler | TimerHandler>;
}

export type AppHandlers = ReturnType<typeof handlersOf>;

let processHandlers: AppHandlers | undefined;

/** The Functions' handlers: made once per process from the process's context (functions/*.ts register them). */
export function appHandlers(): AppHandlers {
  processHandlers ??= handlersOf(appContext());
  return processHandlers;
}
