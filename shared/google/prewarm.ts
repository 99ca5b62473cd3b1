import { coreConfig } from '../config/core';
import { googleConfig } from '../config/google';
import type { Logger } from '../observability/log';
import type { AppContext } from '../app/context';
import type { Policy } from '../policy/schema';
import { connectInfo } from '../cloudsql/connect-settings';
import { MAX_IMPERSONATION_LIFETIME_SECONDS } from './tokens';

/**
 * Prewarm: fetch, ahead of the first caller, the Cloud SQL login token of every service account the policy's
 * Cloud SQL grants name. It only fills the broker's own token cache (the same entries a first exchange would
 * create); every request is still authenticated and decided by the policy, the deny list included. Each
 * service account is warmed for the smallest cap its grants allow, which serves every grant naming it (a cached
 * token is served only with no more life than the caller's cap).
 */

export interface PrewarmTarget {
  readonly serviceAccount: string;
  readonly lifetimeSeconds: number;
}

/** The service accounts the policy's Cloud SQL grants name, each with the smallest lifetime cap among them. */
export function policyServiceAccounts(policy: Policy): PrewarmTarget[] {
  const out = new Map<string, number>();
  for (const rule of policy.rules) {
    for (const g of rule.grants.cloudsql) {
      // Caller-mode grants log in as each caller (no shared token to warm).
      if (g.identity !== 'serviceAccount' || g.serviceAccount === undefined) continue;
      const cap = Math.min(g.maxTtlSeconds, MAX_IMPERSONATION_LIFETIME_SECONDS);
      out.set(g.serviceAccount, Math.min(out.get(g.serviceAccount) ?? cap, cap));
    }
  }
  return [...out]
    .map(([serviceAccount, lifetimeSeconds]) => ({ serviceAccount, lifetimeSeconds }))
    .sort((a, b) => a.serviceAccount.localeCompare(b.serviceAccount));
}

export interface PrewarmResult {
  readonly skipped?: string;
  readonly warmed: number;
  readonly failed: number;
}

/** Warm every policy service account (concurrently; failures are logged, never thrown). */
export async function prewarmGoogleTokens(app: AppContext, log: Logger): Promise<PrewarmResult> {
  let targets: PrewarmTarget[];
  let policy: Policy;
  try {
    if (!app.settings(googleConfig).prewarm) return { skipped: 'GOOGLE_TOKEN_PREWARM is off', warmed: 0, failed: 0 };
    policy = await app.policy.current();
    targets = policyServiceAccounts(policy);
  } catch (e) {
    // Not configured for Google (a Cosmos-only deployment) or no valid policy yet: the first request reports it.
    log.debug('token prewarm skipped: configuration incomplete', { event: 'prewarm.skipped', err: e });
    return { skipped: 'configuration incomplete', warmed: 0, failed: 0 };
  }
  const results = await Promise.allSettled(
    targets.map(async (t) => {
      const tok = await app.google.sqlLoginToken({ ...t, log });
      // Also the instances' connect details of the token answer (one SQL Admin call per instance, cached an hour).
      const instances = new Set(
        policy.rules.flatMap((r) =>
          r.grants.cloudsql.filter((g) => g.serviceAccount === t.serviceAccount).map((g) => g.instance),
        ),
      );
      await Promise.all(
        [...instances].map((i) =>
          connectInfo(
            i,
            async () => (await app.google.sqlAdminToken({ serviceAccount: t.serviceAccount, log })).token,
            app.settings(coreConfig).upstreamTimeoutMs,
          ).catch(() => undefined),
        ),
      );
      return tok;
    }),
  );
  const failed = results.filter((r) => r.status === 'rejected');
  for (const f of failed) log.warn('token prewarm failed for a service account', { event: 'prewarm.failed', err: f.reason });
  log.info('token prewarm', { event: 'prewarm', serviceAccounts: targets.length, failed: failed.length });
  return { warmed: targets.length - failed.length, failed: failed.length };
}
