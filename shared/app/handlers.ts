import type { HttpHandler, InvocationContext, Timer } from '@azure/functions';
import { handleTokenExchange } from '../exchange/token-endpoint';
import { httpHandler, type ScopedHandler } from '../http/handler';
import { inInvocation } from '../observability/process-guard';
import { prewarmGoogleTokens } from '../google/prewarm';
import { appContext, type AppContext } from './context';

export type TimerHandler = (timer: Timer, ctx: InvocationContext) => Promise<void>;

/**
 * A function's code loaded on its first invocation (then kept): every functions/*.ts module registers its handler
 * from this one table, so without this a worker importing functions/token.js would load every endpoint's modules
 * and SDKs (MCP, the query catalogue, rotation and its Storage lease, the admin API). The token exchange, the
 * function that must start fast, is loaded at once.
 */
function onFirstCall(load: () => Promise<ScopedHandler>): ScopedHandler {
  let loaded: Promise<ScopedHandler> | undefined;
  return async (req, scope, ctx) => {
    const fn = await (loaded ??= load().catch((e: unknown) => {
      loaded = undefined; // a failed import is tried again by the next call
      throw e;
    }));
    return fn(req, scope, ctx);
  };
}

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
        const { runAllRotations } = await import('../rotation/run-all');
        await runAllRotations(app, log);
      },
    );
}

/** Every function's handler, made from one app context (by registration name). */
export function handlersOf(app: AppContext) {
  return {
    // Admin routes: every request is one audit event (shared/observability/admin-audit.ts), under these actions.
    adminDenyRemove: httpHandler(
      app,
      'adminDenyRemove',
      'problem',
      onFirstCall(async () => (await import('../policy/admin/remove-deny')).handleRemoveDeny),
      { adminAction: () => 'policy.deny.remove' },
    ),
    adminDeny: httpHandler(
      app,
      'adminDeny',
      'problem',
      onFirstCall(async () => (await import('../policy/admin/add-deny')).handleAddDeny),
      { adminAction: () => 'policy.deny.add' },
    ),
    adminPolicyHistory: httpHandler(
      app,
      'adminPolicyHistory',
      'problem',
      onFirstCall(async () => (await import('../policy/admin/history')).handlePolicyHistory),
      { adminAction: () => 'policy.history' },
    ),
    adminPolicy: httpHandler(
      app,
      'adminPolicy',
      'problem',
      onFirstCall(async () => {
        const [{ handlePutPolicy }, { handleGetPolicy }] = await Promise.all([
          import('../policy/admin/put-policy'),
          import('../policy/admin/get-policy'),
        ]);
        return (req, scope) => (req.method === 'PUT' ? handlePutPolicy(req, scope) : handleGetPolicy(req, scope));
      }),
      { adminAction: (method) => (method === 'PUT' ? 'policy.write' : 'policy.read') },
    ),
    adminRotate: httpHandler(
      app,
      'adminRotate',
      'problem',
      onFirstCall(async () => (await import('../rotation/endpoint')).makeAdminRotate()),
      { adminAction: () => 'rotation.admin' },
    ),
    explain: httpHandler(
      app,
      'explain',
      'problem',
      onFirstCall(async () => (await import('../policy/explain')).handleExplain),
    ),
    health: httpHandler(
      app,
      'health',
      'problem',
      onFirstCall(async () => (await import('../health/endpoint')).handleHealth),
    ),
    query: httpHandler(
      app,
      'query',
      'problem',
      onFirstCall(async () => (await import('../query/endpoint')).handleQuery),
    ),
    token: httpHandler(app, 'token', 'oauth', handleTokenExchange),
    mcp: httpHandler(
      app,
      'mcp',
      'jsonrpc',
      onFirstCall(async () => (await import('../mcp/endpoint')).createMcpEndpoint(app).handle),
    ),
    mcpMetadata: httpHandler(
      app,
      'mcpMetadata',
      'problem',
      onFirstCall(async () => (await import('../mcp/endpoint')).createMcpMetadata(app)),
    ),
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
