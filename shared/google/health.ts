import { coreConfig } from '../config/core';
import { googleConfig } from '../config/google';
import { ConfigError } from '../errors';
import type { CheckResult } from '../health/types';

/**
 * Readiness of the Google credential path: settings valid for the mode, and the STS and IAM Credentials
 * endpoints answer HTTP at all (any status: a GET on them is not a token request). Cached for 10 s.
 * Does not load google-auth-library.
 */

const CACHE_MS = 10_000;
let cache: { at: number; key: string; result: CheckResult } | undefined;

async function reachable(name: string, url: string, timeoutMs: number): Promise<string | undefined> {
  try {
    const res = await fetch(url, { method: 'GET', signal: AbortSignal.timeout(timeoutMs) });
    await res.body?.cancel();
    return undefined;
  } catch (e) {
    return `${name}: unreachable (${(e as Error).name})`;
  }
}

export async function googleHealth(settingsRecheckMs?: number): Promise<CheckResult> {
  let cfg: ReturnType<typeof googleConfig.get>;
  try {
    cfg = googleConfig.get(settingsRecheckMs);
  } catch (e) {
    return { status: 'fail', detail: e instanceof ConfigError ? e.problems.join('; ') : 'invalid Google settings' };
  }
  if (cfg.authMode === 'keyless' && !cfg.wifAudience) {
    return { status: 'skipped', detail: 'Cloud SQL exchange not configured (GOOGLE_WIF_AUDIENCE unset)' };
  }
  if (cfg.authMode === 'keyless' && !cfg.subjectTokenAudience) {
    return { status: 'fail', detail: 'GOOGLE_WIF_SUBJECT_TOKEN_AUDIENCE is required in keyless mode' };
  }
  const timeoutMs = Math.min(coreConfig.get(settingsRecheckMs).upstreamTimeoutMs, 3000);
  const key = JSON.stringify([cfg, timeoutMs]);
  if (cache && cache.key === key && Date.now() - cache.at < CACHE_MS) return cache.result;
  const failures = (
    await Promise.all([
      cfg.authMode === 'keyless' ? reachable('STS', cfg.stsTokenUrl, timeoutMs) : Promise.resolve(undefined),
      reachable('IAM Credentials', cfg.iamCredentialsEndpoint, timeoutMs),
    ])
  ).filter((f): f is string => f !== undefined);
  const result: CheckResult = failures.length
    ? { status: 'fail', detail: failures.join('; ') }
    : { status: 'ok', detail: `mode ${cfg.authMode}` };
  cache = { at: Date.now(), key, result };
  return result;
}
