import type { Pool, PoolClient } from 'pg';
import type { Principal } from '../auth/principal';
import { connectInfo, type InstanceConnectInfo } from '../cloudsql/connect-settings';
import type { CallerLogins } from '../cloudsql/caller-chain';
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
  readonly pool: Pool;
  readonly databaseUser: string;
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
    // The chain first: a caller Entra or Google refuses gets that answer before any pool exists.
    const login = await this.deps.logins.login(subject, log);
    const info = await (this.deps.connectInfo ?? connectInfo)(grant.connectionName, this.adminToken(grant), q.connectTimeoutMs);
    const host = info.ipAddresses.find((i) => i.type === 'PRIMARY')?.ipAddress ?? info.ipAddresses[0]?.ipAddress ?? info.dnsName;
    if (!host) throw new BrokerError('upstream_error', 'The Cloud SQL instance has no address to connect to.');
    const { Pool: PgPool } = await import('pg');
    const entry: Entry = {
      key,
      databaseUser: login.databaseUser,
      subject,
      lastUsed: this.deps.now(),
      pool: undefined as unknown as Pool,
    };
    const pool = new PgPool({
      host,
      port: DIRECT_PORT,
      database: grant.database,
      user: login.databaseUser,
      // Every new connection: the caller's current login token (cached; refreshed before expiry).
      password: async () => (await this.deps.logins.login(entry.subject)).token,
      ssl: {
        ca: info.serverCaCert,
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
    (entry as { pool: Pool }).pool = pool;
    this.stats.created++;
    return entry;
  }

  private close(e: Entry): void {
    if (this.entries.get(e.key) === e) this.entries.delete(e.key);
    this.stats.closed++;
    void e.pool.end().catch(() => undefined);
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
      const checkout = e.pool.connect();
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
    await Promise.all(all.map((e) => e.pool.end().catch(() => undefined)));
  }
}
