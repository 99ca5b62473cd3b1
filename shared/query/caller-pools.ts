import { createSecureContext, type SecureContext } from 'node:tls';
import type { Pool, PoolClient } from 'pg';
import type { Principal } from '../auth/principal';
import { connectInfo, type InstanceConnectInfo } from '../cloudsql/connect-settings';
import type { CallerLogin, CallerLogins } from '../cloudsql/caller-chain';
import { callerConfig, type CallerConfig } from '../config/caller';
import { cloudSqlConfig } from '../config/cloudsql';
import type { QueryConfig } from '../config/query';
import { BrokerError, isBrokerError, toBrokerError } from '../errors';
import type { GoogleTokens } from '../google/tokens';
import { SingleFlight } from '../lib/token-cache';
import type { Logger } from '../observability/log';
import type { CloudSqlCallerGrant } from '../policy/evaluate';
import { fetchWithTimeout } from '../upstream/failure';
import { destroyClient, phaseDeadline } from './deadline';
import { classifyDbError } from './errors';

/**
 * The query function as the caller (`identity: "caller"` grants): connections logged in as the person cannot be shared
 * across people, so each caller gets a small pool of their own (QUERY_CALLER_POOL_MAX), per (caller, instance,
 * database). Pools are bounded: closed after QUERY_CALLER_IDLE_SECONDS unused (checked on every use, no timer), and
 * at most QUERY_CALLER_MAX_POOLS are kept (least recently used closed first). Each new connection takes the caller's
 * current login token from CallerLogins (cached per caller, single-flight, refreshed before expiry: a connection opened
 * late in a token's life gets a fresh one), and connections retire by QUERY_POOL_MAX_LIFETIME_SECONDS.
 *
 * Connections are direct (plain PostgreSQL over TLS on the instance's port 5432, the token as the password, the
 * server certificate checked against the instance CA from connectSettings, read with the grant's adminServiceAccount):
 * the Cloud SQL connector would need the caller's token to call the SQL Admin API, which a login-only token cannot.
 *
 * A new caller's cold path overlaps what does not depend on the caller's token: the instance's connect settings (read
 * with the grant's admin service account) and the first connection's TCP, TLS handshake and startup message (as the
 * database user read ahead from the validated token's CALLER_DATABASE_USER_CLAIM) run while the OBO → STS chain does;
 * only the password waits for the chain (bench/caller-mode.ts measures what is left).
 *
 * A login the instance refuses is retried once with a fresh token (it may have been revoked or expired early); a
 * second refusal is answered 403 `caller_identity_refused` naming what is missing: not a database user (users.get
 * answers 404), else the IAM role — never PostgreSQL's text.
 */

/** Cloud SQL's port for direct (non-connector) connections. */
const DIRECT_PORT = 5432;

export interface CallerPoolsDeps {
  readonly logins: CallerLogins;
  readonly google: GoogleTokens;
  readonly log: Logger;
  readonly now: () => number;
  readonly settingsRecheckMs?: number;
  /** The instance's connect details (default: the SQL Admin API's connectSettings, cached per instance). */
  readonly connectInfo?: (
    connectionName: string,
    adminToken: () => Promise<string>,
    timeoutMs: number,
  ) => Promise<InstanceConnectInfo>;
}

interface Entry {
  readonly key: string;
  pool: Pool;
  databaseUser: string;
  /** The first connection, started while the chain ran (taken by the first checkout). */
  pending?: Promise<PoolClient>;
  /** The caller's latest validated identity: what a new connection's login token is obtained for. */
  subject: Principal;
  lastUsed: number;
}

/** Connections that already carry the error listener (pg reuses clients across checkouts). */
const guarded = new WeakSet<PoolClient>();

function callerPoolKey(
  subject: Pick<Principal, 'tenantId' | 'objectId'>,
  grant: Pick<CloudSqlCallerGrant, 'connectionName' | 'database'>,
): string {
  return `${subject.tenantId}/${subject.objectId}|${grant.connectionName}/${grant.database}`;
}

export class CallerPools {
  /** Insertion order is recency (a use moves an entry to the end): the first entry is the least recently used. */
  private readonly entries = new Map<string, Entry>();
  private readonly flights = new SingleFlight<Entry>();
  /**
   * One TLS context per instance CA: pg would otherwise build one (and parse the CA) for every connection, ~0.7 ms CPU
   * each (bench/caller-mode.ts profile). A handful of instances at most; cleared if it ever grows past that.
   */
  private readonly tlsContexts = new Map<string, SecureContext>();
  /** Pools created / closed since start (tests, bench). */
  readonly stats = { created: 0, closed: 0 };

  constructor(private readonly deps: CallerPoolsDeps) {}

  get size(): number {
    return this.entries.size;
  }

  private config(): CallerConfig {
    try {
      return callerConfig.get(this.deps.settingsRecheckMs);
    } catch (e) {
      throw toBrokerError(e);
    }
  }

  private adminToken(grant: CloudSqlCallerGrant): () => Promise<string> {
    return async () =>
      (await this.deps.google.sqlAdminToken({ serviceAccount: grant.adminServiceAccount, log: this.deps.log })).token;
  }

  private async create(
    key: string,
    grant: CloudSqlCallerGrant,
    subject: Principal,
    q: QueryConfig,
    cfg: CallerConfig,
    log?: Logger,
  ): Promise<Entry> {
    // The chain (Entra OBO → Google STS) and the instance's connect settings (read with the grant's admin service
    // account, not the caller's token) run at once; the chain's refusal is answered first, and no pool outlives it.
    const loginP = this.deps.logins.login(subject, log);
    let info: InstanceConnectInfo;
    try {
      info = await (this.deps.connectInfo ?? connectInfo)(grant.connectionName, this.adminToken(grant), q.connectTimeoutMs);
    } catch (e) {
      await loginP;
      throw e;
    }
    const { Pool: PgPool } = await import('pg');
    const logins = this.deps.logins;
    const entry: Entry = { key, subject, lastUsed: this.deps.now(), pool: undefined as unknown as Pool, databaseUser: '' };
    const build = (user: string): Pool => {
      const host =
        info.ipAddresses.find((i) => i.type === 'PRIMARY')?.ipAddress ?? info.ipAddresses[0]?.ipAddress ?? info.dnsName;
      if (!host) throw new BrokerError('upstream_error', 'The Cloud SQL instance has no address to connect to.');
      const pool = new PgPool({
        host,
        port: DIRECT_PORT,
        database: grant.database,
        user,
        // Every new connection: the caller's current login token (cached; refreshed before expiry), only for the user
        // the chain names.
        password: async function (this: { connection?: { stream?: { destroy(): void } } }) {
          try {
            const login = await logins.login(entry.subject);
            if (login.databaseUser !== user) throw new BrokerError('internal', 'The caller login names another database user.');
            return login.token;
          } catch (e) {
            // pg fails the connect with this error but leaves its socket open (it waits for the password): close it.
            const stream = this.connection?.stream;
            setImmediate(() => stream?.destroy());
            throw e;
          }
        },
        ssl: {
          secureContext: this.tlsContext(info.serverCaCert),
          // Legacy per-instance CA: the server certificate's CN is PROJECT:INSTANCE (as the connectors check).
          checkServerIdentity: (_host, cert) =>
            cert.subject?.CN === info.serverCertCommonName
              ? undefined
              : Object.assign(new Error('The instance certificate does not name the instance.'), {
                  code: 'ERR_TLS_CERT_ALTNAME_INVALID',
                }),
        },
        max: cfg.poolMax,
        idleTimeoutMillis: Math.min(cfg.idleSeconds, q.idleSeconds) * 1000,
        maxLifetimeSeconds: q.maxLifetimeSeconds,
        connectionTimeoutMillis: q.connectTimeoutMs,
        allowExitOnIdle: true,
        application_name: 'token-broker-query',
      });
      pool.on('error', (e) => this.deps.log.warn('idle caller connection closed', { cause: e, target: grant.connectionName }));
      return pool;
    };
    // The database user the chain will name, read ahead from the caller's validated token (the on-behalf-of token
    // carries the same per-user claim, e.g. `oid`): the first connection's TCP, TLS handshake and startup message
    // overlap the chain, and its password waits for the chain's token. A different name from the chain: that
    // connection is dropped and the pool rebuilt for the chain's user.
    const predicted = subject.claims?.[cfg.databaseUserClaim];
    const started = performance.now();
    let pool: Pool | undefined;
    if (predicted && predicted.length <= 63) {
      pool = build(predicted);
      entry.pending = pool.connect();
      entry.pending.catch(() => undefined);
    }
    let login: CallerLogin;
    try {
      login = await loginP;
    } catch (e) {
      if (pool) this.discard(pool, entry.pending);
      throw e;
    }
    if (pool && login.databaseUser !== predicted) {
      this.discard(pool, entry.pending);
      entry.pending = undefined;
      pool = undefined;
    } else if (entry.pending && performance.now() - started > q.connectTimeoutMs / 2) {
      // A slow chain used up much of the pre-started connection's own connect timeout: the first checkout opens a
      // fresh one with the whole timeout instead.
      this.discard(pool!, entry.pending);
      entry.pending = undefined;
      pool = build(login.databaseUser);
    }
    entry.pool = pool ?? build(login.databaseUser);
    entry.databaseUser = login.databaseUser;
    this.stats.created++;
    return entry;
  }

  private tlsContext(ca: string): SecureContext {
    let c = this.tlsContexts.get(ca);
    if (!c) {
      if (this.tlsContexts.size >= 32) this.tlsContexts.clear();
      c = createSecureContext({ ca, minVersion: 'TLSv1.2' });
      this.tlsContexts.set(ca, c);
    }
    return c;
  }

  /** Close a pool (its pre-started connection, when not taken, released first). */
  private discard(pool: Pool, pending: Promise<PoolClient> | undefined): void {
    void (async () => {
      await pending?.then(
        (c) => c.release(true),
        () => undefined,
      );
      await pool.end();
    })().catch(() => undefined);
  }

  private close(e: Entry): void {
    if (this.entries.get(e.key) === e) this.entries.delete(e.key);
    this.stats.closed++;
    this.discard(e.pool, e.pending);
    e.pending = undefined;
  }

  /** Close pools unused for the idle time, then the least recently used beyond the cap. */
  private evict(cfg: CallerConfig): void {
    const idleBefore = this.deps.now() - cfg.idleSeconds * 1000;
    for (const e of [...this.entries.values()]) if (e.lastUsed < idleBefore) this.close(e);
    while (this.entries.size > cfg.maxPools) this.close(this.entries.values().next().value as Entry);
  }

  private async entry(grant: CloudSqlCallerGrant, subject: Principal, q: QueryConfig, log?: Logger): Promise<Entry> {
    const cfg = this.config();
    this.evict(cfg);
    const key = callerPoolKey(subject, grant);
    let e = this.entries.get(key);
    if (!e) {
      e = await this.flights.run(key, async () => {
        const created = await this.create(key, grant, subject, q, cfg, log);
        this.entries.set(key, created);
        this.evict(cfg);
        return created;
      });
    } else {
      this.entries.delete(key);
      this.entries.set(key, e);
    }
    e.subject = subject;
    e.lastUsed = this.deps.now();
    return e;
  }

  /** A connection as the caller; a refused login is retried once with a fresh token, then named (403). */
  async connect(grant: CloudSqlCallerGrant, subject: Principal, q: QueryConfig, log?: Logger): Promise<PoolClient> {
    for (let attempt = 1; ; attempt++) {
      const e = await this.entry(grant, subject, q, log);
      const checkout = e.pending ?? e.pool.connect();
      e.pending = undefined;
      try {
        const client = await phaseDeadline(checkout, q.connectTimeoutMs + 1000, 'connect');
        if (!guarded.has(client)) {
          guarded.add(client);
          // A connection cut while checked out emits 'error' on the client: without a listener the host would crash.
          client.on('error', (err) => this.deps.log.warn('caller connection lost while in use', { cause: err }));
        }
        return client;
      } catch (err) {
        checkout.then(
          (c) => destroyClient(c),
          () => undefined,
        );
        if (isBrokerError(err) && err.code === 'caller_identity_refused') throw err;
        const b = classifyDbError(err);
        if (b.detail?.reason !== 'login_refused') throw isBrokerError(err) ? err : b;
        // The instance refused the login: forget the token and the pool; retry once, then say what is missing.
        this.deps.logins.forget(subject);
        this.close(e);
        if (attempt >= 2) throw await this.refusal(grant, e.databaseUser, q, err);
        log?.warn('caller login refused; retrying once with a fresh token', { cause: err });
      }
    }
  }

  /** Why the instance refused the caller: not a database user (users.get 404), else the IAM role. */
  private async refusal(grant: CloudSqlCallerGrant, user: string, q: QueryConfig, cause: unknown): Promise<BrokerError> {
    const [project, , instance] = grant.connectionName.split(':') as [string, string, string];
    let status: number | undefined;
    try {
      const base = cloudSqlConfig.get(this.deps.settingsRecheckMs).sqlAdminEndpoint.replace(/\/+$/, '');
      const url = `${base}/v1beta4/projects/${encodeURIComponent(project)}/instances/${encodeURIComponent(instance)}/users/${encodeURIComponent(user)}`;
      const token = await this.adminToken(grant)();
      const res = await fetchWithTimeout(
        'Cloud SQL Admin API',
        url,
        { headers: { authorization: `Bearer ${token}`, accept: 'application/json' } },
        q.connectTimeoutMs,
      );
      status = res.status;
      await res.body?.cancel().catch(() => undefined);
    } catch {
      status = undefined;
    }
    const detail = (refusal: string) => ({ refusal, database_user: user });
    if (status === 404)
      return new BrokerError(
        'caller_identity_refused',
        `You are not added as a database user of this Cloud SQL instance (user "${user}", type CLOUD_IAM_WORKFORCE_IDENTITY).`,
        { cause, detail: detail('not_database_user') },
      );
    if (status === 200)
      return new BrokerError(
        'caller_identity_refused',
        `The instance refused your login as database user "${user}": your workforce principal lacks roles/cloudsql.instanceUser (cloudsql.instances.login) on the instance's project.`,
        { cause, detail: detail('no_instance_user_role') },
      );
    return new BrokerError(
      'caller_identity_refused',
      `The instance refused your login as database user "${user}": either you are not added as a database user or your workforce principal lacks roles/cloudsql.instanceUser.`,
      { cause, detail: detail('login_refused') },
    );
  }

  async closeAll(): Promise<void> {
    const all = [...this.entries.values()];
    this.entries.clear();
    await Promise.all(
      all.map(async (e) => {
        // A pre-started connection no checkout took would keep pool.end() waiting for its release.
        await e.pending?.then(
          (c) => c.release(true),
          () => undefined,
        );
        e.pending = undefined;
        await e.pool.end().catch(() => undefined);
      }),
    );
  }
}
