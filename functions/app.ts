import { app } from '@azure/functions';
import { appContext } from '../shared/app/context';
import { prewarmGoogleTokens } from '../shared/google/prewarm';

/**
 * The app's process hooks (no trigger): the worker's shutdown and the start-up token prewarm, both on the process's
 * app context (shared/app/context.ts).
 */

// Graceful shutdown of the worker (scale-in, deployment): close the database pools and their connectors, so
// PostgreSQL sees a clean disconnect instead of sessions cut mid-protocol; release the Cosmos clients.
app.hook.appTerminate(() => appContext().close());

// On start, once the worker has loaded its functions; prewarmGoogleTokens skips it when the setting is off or
// Google/the policy is not configured.
setTimeout(() => {
  const ctx = appContext();
  void prewarmGoogleTokens(ctx, ctx.logger({ fn: 'prewarmTimer', trigger: 'start' })).catch(() => undefined);
}, 0).unref();
