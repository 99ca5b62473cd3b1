import type { CheckResult } from '../health/types';
import { dbObservations } from './db-state';
import type { AppContext } from '../app/context';

/**
 * The `database` health check: what the query pools observed (no connection per health call). A
 * database whose last round trip failed is re-probed at most every PROBE_INTERVAL_MS, so recovery shows
 * without a caller; the probe is bounded by the connect timeout.
 */

const PROBE_INTERVAL_MS = 5_000;
let lastProbe = 0;
let probing: Promise<void> | undefined;

export async function checkDatabase(app: AppContext): Promise<CheckResult> {
  const failedNow = () => [...dbObservations()].filter(([, o]) => !o.ok);
  if (dbObservations().size === 0) return { status: 'skipped', detail: 'no query has run yet' };
  if (failedNow().length > 0 && Date.now() - lastProbe >= PROBE_INTERVAL_MS) {
    lastProbe = Date.now();
    probing ??= app.queryPools.probeFailed((key) => dbObservations().get(key)?.ok === false).finally(() => (probing = undefined));
    await probing;
  }
  const failed = failedNow();
  if (failed.length === 0) return { status: 'ok', detail: `${dbObservations().size} database(s) answering` };
  const now = Date.now();
  return {
    status: 'fail',
    detail: failed.map(([key, o]) => `${key}: ${o.reason ?? 'failed'} ${Math.round((now - o.at) / 1000)} s ago`).join('; '),
  };
}
