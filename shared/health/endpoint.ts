import type { AppContext } from '../app/context';
import type { HttpRequest, HttpResponseInit } from '@azure/functions';
import { coreConfig } from '../config/core';
import { removedSettingProblems } from '../config/settings';
import { jwksUrl } from '../auth/jwt';
import { jsonResponse } from '../http/responses';
import { queryParam } from '../http/request';
import { type RequestScope } from '../http/handler';
import type { CheckResult, HealthCheck } from './types';

export type { CheckStatus, CheckResult, HealthCheck } from './types';

const CACHE_MS = 10_000;
let jwksCache: { at: number; key: string; result: CheckResult } | undefined;

async function checkJwks(app: AppContext): Promise<CheckResult> {
  const cfg = app.settings(coreConfig);
  const key = `${cfg.authorityHost}|${cfg.allowedTenants.join(',')}`;
  if (jwksCache && jwksCache.key === key && Date.now() - jwksCache.at < CACHE_MS) return jwksCache.result;
  const failures: string[] = [];
  await Promise.all(
    cfg.allowedTenants.map(async (tid) => {
      try {
        const res = await fetch(jwksUrl(cfg.authorityHost, tid), {
          signal: AbortSignal.timeout(Math.min(cfg.upstreamTimeoutMs, 3000)),
        });
        const body = (await res.json().catch(() => undefined)) as { keys?: unknown[] } | undefined;
        if (!res.ok || !Array.isArray(body?.keys) || body.keys.length === 0) failures.push(`${tid}: HTTP ${res.status}`);
      } catch (e) {
        failures.push(`${tid}: unreachable (${(e as Error).name})`);
      }
    }),
  );
  const result: CheckResult = failures.length ? { status: 'fail', detail: failures.join('; ') } : { status: 'ok' };
  jwksCache = { at: Date.now(), key, result };
  return result;
}

/** Checks every capability contributes; each capability adds its own here. */
export const checks: HealthCheck[] = [
  {
    name: 'config',
    run: async (app) => {
      app.settings(coreConfig);
      // A removed setting still set is reported by name (config_invalid at start), never silently ignored.
      await import('../config/rotation');
      const removed = removedSettingProblems(process.env);
      if (removed.length) return { status: 'fail', detail: removed.join('; ') };
      return { status: 'ok' };
    },
  },
  {
    name: 'policy',
    run: async (app) => (await import('../policy/health')).checkPolicy(app),
  },
  { name: 'jwks', run: checkJwks },
  // Cloud SQL token exchange: Google settings and endpoints (loads no Google SDK).
  { name: 'google', run: async (app) => (await import('../google/health')).googleHealth(app.settingsRecheckMs) },
  // query function: the catalog parses (skipped when the query function is not configured)
  {
    name: 'queryCatalog',
    run: async () => {
      const path = process.env.QUERY_CATALOG_PATH;
      if (!path) return { status: 'skipped', detail: 'QUERY_CATALOG_PATH not set' };
      const { loadCatalogFile } = await import('../query/catalog');
      return { status: 'ok', detail: `${loadCatalogFile(path).queries.length} queries` };
    },
  },
  // query function: what the pools observed of each database (no connection per health call); not critical,
  // the token exchange works without the database.
  { name: 'database', critical: false, run: async (app) => (await import('../query/db-health')).checkDatabase(app) },
  { name: 'keyvault', run: () => import('../keyvault/health').then((m) => m.checkKeyVault()) },
  // CosmosDB resource tokens: the settings parse (skipped when no account is configured; loads no Cosmos SDK)
  {
    name: 'cosmos',
    run: async (app) => {
      const { cosmosConfig } = await import('../config/cosmos');
      const accounts = (app.settings(cosmosConfig).endpoints ?? []).map((p) => p.slice(0, p.indexOf('=')));
      return accounts.length === 0
        ? { status: 'skipped', detail: 'COSMOS_ENDPOINTS not set' }
        : { status: 'ok', detail: `accounts: ${accounts.join(', ')}` };
    },
  },
];

/**
 * GET /api/health: `?probe=live` is liveness (always 200 while the process serves). Otherwise
 * readiness: every check, 200 when all pass, 503 with Retry-After when any fails.
 */
export async function handleHealth(req: HttpRequest, scope: RequestScope): Promise<HttpResponseInit> {
  if (queryParam(req, 'probe') === 'live') return jsonResponse(200, { status: 'ok', live: true }, scope);
  const results: Record<string, CheckResult> = {};
  await Promise.all(
    checks.map(async (c) => {
      try {
        results[c.name] = await c.run(scope.app);
      } catch (e) {
        results[c.name] = { status: 'fail', detail: (e as Error).message };
      }
    }),
  );
  const failing = checks.filter((c) => results[c.name]?.status === 'fail');
  const ready = failing.every((c) => c.critical === false);
  const degraded = failing.filter((c) => c.critical === false).map((c) => c.name);
  return jsonResponse(
    ready ? 200 : 503,
    {
      status: ready ? (degraded.length ? 'degraded' : 'ok') : 'unavailable',
      live: true,
      ready,
      ...(degraded.length ? { degraded } : {}),
      checks: results,
    },
    scope,
    ready ? {} : { 'retry-after': '10' },
  );
}
