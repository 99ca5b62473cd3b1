import type { HttpHandler } from '@azure/functions';
import { isHttp, loadRegistrations, type Registration } from '../local/host';

/**
 * What the bench's broker processes (bench/server.ts, bench/broker-host.ts) share: a worker's loaded modules and
 * the broker's registrations with handlers that can be swapped (`reset-caches`: a new app context, warm code).
 */

/** With BENCH_PRELOAD, what a Functions worker has loaded after its first calls: the providers and their SDKs (cold import is (6)). */
export async function preloadWorkerModules(): Promise<void> {
  if (!process.env.BENCH_PRELOAD) return;
  await Promise.all([
    import('../shared/cloudsql/provider'),
    import('../shared/cosmos/provider'),
    import('google-auth-library'),
    import('@azure/cosmos'),
    import('@azure/keyvault-secrets'),
    import('@azure/identity'),
  ]);
}

/** The broker's registrations, each HTTP one calling the handler of that name `handlers()` gives at request time. */
export function registrationsCalling(handlers: () => Record<string, unknown>): Registration[] {
  return loadRegistrations().map((r) =>
    isHttp(r) ? { ...r, options: { ...r.options, handler: (req, ic) => (handlers()[r.name] as HttpHandler)(req, ic) } } : r,
  );
}
