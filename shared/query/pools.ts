import type { Pool, PoolClient } from 'pg';
import { iamDatabaseUser } from '../google/database-user';
import { SingleFlight } from '../lib/token-cache';
import type { Logger } from '../observability/log';
import type { QueryConfig } from '../config/query';
import { cloudSqlConfig } from '../config/cloudsql';
import { classifyDbError } from './errors';
import { forgetLoginToken, getLoginToken } from './login-token';
import { destroyClient, phaseDeadline } from './deadline';
import { observeDb } from './db-state';
import type { GoogleTokens } from '../google/tokens';
import { queryConfig } from '../config/query';
import { toBrokerError } from '../errors';

/**
 * One pg pool per (instance, database, identity), each behind its own Cloud SQL connector (a connector
 * holds one identity: its auth client returns that service account's token (sqlservice.admin for the Admin API,
 * sqlservice.login for the login: the connector takes one credential for both), and its
 * ephemeral certificates are bound to it). Pools are bounded in connections and in number (LRU), close
 * idle connections, and retire connections before the login token they were opened with expires.
 *
 * google-auth-library and the connector are loaded on the first query only.
 */

export interface PoolTarget {
  /** PROJECT:REGION:INSTANCE */
  readonly connectionName: string;
  readonly database: string;
  readonly serviceAccount: string;
  /** Lifetime asked of the login token (the policy rule's maxTtlSeconds). */
  readonly tokenLifetimeSeconds: number;
}

interface Entry {
  readonly key: string;
  readonly pool: Pool;
  readonly close: () => Promise<void>;
  lastUsed: number;
}

export function keyOf(t: PoolTarget): string {
  return `${t.connectionName}/${t.database}/${t.serviceAccount}`;
}

async function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      p,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(Object.assign(new Error(`${what} timeout`), { code: 'ETIMEDOUT' })), ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

/** What the pools need from the app context: the Google tokens, and a logger for pool-level events. */
export interface PoolDeps {
  readonly google: GoogleTokens;
  /** Pool-level events (an idle or checked-out connection cut by the server) belong to no request. */
  readonly log: Logger;
  readonly settingsRecheckMs?: number;
}

/** Connections that already carry the broker's error listener (pg reuses clients across checkouts). */
const guarded = new WeakSet<PoolClient>();

/** A connection from the pool within `ms`; one that arrives after the deadline goes straight back, unusable. */
function checkoutWithin(pool: Pool, ms: number): Promise<PoolClient> {
  // An idle connection and nobody waiting: pg-pool hands it over on the next tick, no I/O and no wait to bound (should
  // another checkout take it first, pg-pool's own connectionTimeoutMillis still bounds the wait in its queue).
  if (pool.idleCount > 0 && pool.waitingCount === 0) return pool.connect();
  const checkout = pool.connect();
  return phaseDeadline(checkout, ms, 'connect').catch((e: unknown) => {
    checkout.then(
      (c) => destroyClient(c),
      () => undefined,
    );
    throw e;
  });
}

class PoolRegistry {
  private readonly entries = new Map<string, Entry>();
  private readonly flights = new SingleFlight<Entry>();

  constructor(
    private readonly cfg: QueryConfig,
    private readonly deps: PoolDeps,
  ) {}

  get size(): number {
    return this.entries.size;
  }

  private async create(t: PoolTarget): Promise<Entry> {
    const [{ Connector, AuthTypes, IpAddressTypes }, { OAuth2Client }, { Pool: PgPool }] = await Promise.all([
      import('@google-cloud/cloud-sql-connector'),
      import('google-auth-library'),
      import('pg'),
    ]);
    const auth = new OAuth2Client({ eagerRefreshThresholdMillis: 60_000 });
    let tokenExpiresAtMs = 0;
    auth.refreshHandler = async () => {
      const tok = await getLoginToken(this.deps.google, {
        serviceAccount: t.serviceAccount,
        lifetimeSeconds: t.tokenLifetimeSeconds,
        log: this.deps.log,
      });
      tokenExpiresAtMs = tok.expiresAtMs;
      return { access_token: tok.token, expiry_date: tok.expiresAtMs };
    };
    const connector = new Connector({
      auth,
      sqlAdminAPIEndpoint: cloudSqlConfig.get(this.deps.settingsRecheckMs).sqlAdminEndpoint,
    });
    // On failure connector.close() is not called: after a failed first refresh it holds no timers, and its
    // close() would turn the failed refresh into an unhandled rejection.
    const pending = connector.getOptions({
      instanceConnectionName: t.connectionName,
      authType: AuthTypes.IAM,
      ipType: IpAddressTypes.PUBLIC,
    });
    let opts: Awaited<typeof pending>;
    try {
      opts = await withTimeout(pending, this.cfg.connectTimeoutMs, 'Cloud SQL connect settings');
    } catch (e) {
      // Timed out: close the connector should its refresh still succeed (it would keep refresh timers).
      pending.then(
        () => connector.close(),
        () => undefined,
      );
      throw e;
    }
    // Connections live no longer than the setting, and end at least 60 s before the token does.
    const tokenLeftSeconds = tokenExpiresAtMs ? Math.floor((tokenExpiresAtMs - Date.now()) / 1000) : t.tokenLifetimeSeconds;
    const maxLifetimeSeconds = Math.max(10, Math.min(this.cfg.maxLifetimeSeconds, tokenLeftSeconds - 60));
    const pool = new PgPool({
      ...opts,
      user: iamDatabaseUser(t.serviceAccount),
      database: t.database,
      max: this.cfg.poolMax,
      idleTimeoutMillis: this.cfg.idleSeconds * 1000,
      maxLifetimeSeconds,
      connectionTimeoutMillis: this.cfg.connectTimeoutMs,
      allowExitOnIdle: true,
      application_name: 'token-broker-query',
    });
    // An idle connection cut by the server (restart, failover) must not crash the host.
    const key = keyOf(t);
    pool.on('error', (e) => {
      observeDb(key, false, 'connection_lost');
      this.deps.log.warn('idle database connection closed', { cause: e, target: key });
    });
    return {
      key: keyOf(t),
      pool,
      lastUsed: Date.now(),
      close: async () => {
        await pool.end().catch(() => undefined);
        connector.close();
      },
    };
  }

  /** The pool for a target, created once (concurrent first uses share one creation). */
  async pool(t: PoolTarget): Promise<Entry> {
    const key = keyOf(t);
    const hit = this.entries.get(key);
    if (hit) {
      hit.lastUsed = Date.now();
      return hit;
    }
    return this.flights.run(key, async () => {
      const e = await this.create(t);
      this.entries.set(key, e);
      await this.evict();
      return e;
    });
  }

  private async evict(): Promise<void> {
    while (this.entries.size > this.cfg.maxPools) {
      const oldest = [...this.entries.values()].sort((a, b) => a.lastUsed - b.lastUsed)[0]!;
      this.entries.delete(oldest.key);
      await oldest.close();
    }
  }

  /** Close and forget a target's pool (after a login failure: the next use builds a fresh connector). */
  async drop(t: PoolTarget): Promise<void> {
    const e = this.entries.get(keyOf(t));
    if (!e) return;
    this.entries.delete(e.key);
    await e.close();
  }

  /** A connection as the target's identity; a refused login is retried once with a fresh connector. */
  async connect(t: PoolTarget, log?: Logger): Promise<PoolClient> {
    const key = keyOf(t);
    for (let attempt = 1; ; attempt++) {
      try {
        const hit = this.entries.get(key);
        if (hit) hit.lastUsed = Date.now();
        const entry = hit ?? (await this.pool(t));
        // pg's connectionTimeoutMillis bounds the connect itself; this also bounds the wait for a pool slot held by
        // connections that stopped answering (a grace over it so pg's own error wins when it fires).
        const client = await checkoutWithin(entry.pool, this.cfg.connectTimeoutMs + 1000);
        if (!guarded.has(client)) {
          guarded.add(client);
          // A connection cut while checked out (PostgreSQL killed, failover) emits 'error' on the client, with
          // no pool listener attached: without this listener the process would crash. The request's own
          // round trip fails with the same error and answers 503; this only records and logs it.
          client.on('error', (e) => {
            observeDb(key, false, 'connection_lost');
            this.deps.log.warn('database connection lost while in use', { cause: e, target: key });
          });
        }
        return client;
      } catch (e) {
        const err = classifyDbError(e);
        const reason = err.detail?.reason;
        observeDb(key, false, typeof reason === 'string' ? reason : err.code);
        const retryable = reason === 'login_refused' || reason === 'token_refused' || reason === 'tls_failed';
        if (retryable) {
          // The token itself may be what the instance refused (revoked, expired early): the retry gets a fresh one.
          if (reason === 'token_refused') forgetLoginToken(this.deps.google, t.serviceAccount);
          await this.drop(t);
        }
        if (!retryable || attempt >= 2) throw e;
        log?.warn('database login failed; retrying once with a fresh connector and token', { reason, cause: e });
      }
    }
  }

  /**
   * Health: one `SELECT 1` through each pool whose last round trip failed (bounded by the connect timeout),
   * so a database that came back shows so without waiting for a caller. Healthy pools are not touched.
   */
  async probeFailed(isFailed: (key: string) => boolean): Promise<void> {
    await Promise.all(
      [...this.entries.values()]
        .filter((e) => isFailed(e.key))
        .map(async (e) => {
          let client: PoolClient | undefined;
          try {
            client = await checkoutWithin(e.pool, this.cfg.connectTimeoutMs);
            await phaseDeadline(client.query('SELECT 1'), this.cfg.connectTimeoutMs, 'query');
            client.release();
            observeDb(e.key, true);
          } catch (err) {
            if (client) destroyClient(client);
            const reason = classifyDbError(err).detail?.reason;
            observeDb(e.key, false, typeof reason === 'string' ? reason : 'probe_failed');
          }
        }),
    );
  }

  async closeAll(): Promise<void> {
    const all = [...this.entries.values()];
    this.entries.clear();
    await Promise.all(all.map((e) => e.close()));
  }
}

/** The pools of the current query settings (one per app context, shared/app/context.ts). */
export class QueryPools {
  private registry: { cfg: QueryConfig; pools: PoolRegistry } | undefined;

  constructor(private readonly deps: PoolDeps) {}

  config(): QueryConfig {
    try {
      return queryConfig.get(this.deps.settingsRecheckMs);
    } catch (e) {
      throw toBrokerError(e); // a ConfigError: config_invalid naming the settings
    }
  }

  /** The registry of `cfg` (a settings change closes the previous one). */
  of(cfg: QueryConfig): PoolRegistry {
    if (this.registry?.cfg !== cfg) {
      const old = this.registry?.pools;
      this.registry = { cfg, pools: new PoolRegistry(cfg, this.deps) };
      void old?.closeAll();
    }
    return this.registry.pools;
  }

  /** Re-check the databases whose last round trip failed (health; no-op when no query has run). */
  async probeFailed(isFailed: (key: string) => boolean): Promise<void> {
    await this.registry?.pools.probeFailed(isFailed);
  }

  /** Close every pool (shutdown). */
  async closeAll(): Promise<void> {
    const r = this.registry;
    this.registry = undefined;
    await r?.pools.closeAll();
  }
}
