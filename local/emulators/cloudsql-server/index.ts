import { createHash, createHmac, pbkdf2Sync, randomBytes, timingSafeEqual } from 'node:crypto';
import { connect as netConnect, createServer as createNetServer, type Server as NetServer, type Socket } from 'node:net';
import { createSecureContext, createServer as createTlsServer, TLSSocket, type Server as TlsServer } from 'node:tls';
import { SANDBOX } from '../../ids';
import type { SandboxCa } from '../../pki';
import type { CertBinding } from '../google/sqladmin';

/**
 * The server side of a Cloud SQL instance, as the Cloud SQL connectors see it: TLS 1.3 on port 3307,
 * client certificate required and signed by the instance CA (an ephemeral certificate from SQL Admin),
 * server certificate with CN = PROJECT:INSTANCE signed by the same CA.
 *
 * It reads the PostgreSQL startup message. When the client certificate was issued for automatic IAM
 * database authentication, the login is admitted only if the user named is that certificate's IAM
 * identity (the service account email without `.gserviceaccount.com`); the server then authenticates to
 * the real PostgreSQL as that role (password known only to the sandbox; trust, cleartext, md5 and
 * SCRAM-SHA-256 handled) and relays the client's session byte for byte. Other certificates (password
 * authentication) get the startup message relayed unchanged, so PostgreSQL authenticates them itself.
 */

export interface CloudSqlServerOptions {
  /** PROJECT:REGION:INSTANCE */
  readonly connectionName: string;
  readonly ca: SandboxCa;
  readonly host: string;
  /** Fixed at 3307 for the connectors; tests may pass 0. */
  readonly port?: number;
  readonly upstream: { readonly host: string; readonly port: number; readonly iamPassword: string };
  /** The IAM binding of a presented client certificate (by SHA-256 fingerprint). */
  bindingOf(fingerprint256: string): CertBinding | undefined;
  /** Upstream connect timeout (default 3000 ms). */
  readonly connectTimeoutMs?: number;
  /**
   * Direct connections (plain PostgreSQL protocol with TLS, the IAM token as the password; no connector), on
   * HOST:directPort (Cloud SQL: 5432). Absent: no direct listener. `verifyLoginToken` decides a login.
   */
  readonly direct?: { readonly port: number; verifyLoginToken(user: string, token: string): LoginRefusal | undefined };
}

/** Why an IAM login with a token as the password was refused: PostgreSQL's SQLSTATE and message. */
export interface LoginRefusal {
  readonly code: string;
  readonly message: string;
}

export interface CloudSqlServer {
  readonly host: string;
  readonly port: number;
  /** Port of the direct (password) listener, when started. */
  readonly directPort?: number;
  /** Logins admitted / refused (by reason), for tests. */
  readonly stats: { admitted: number; refused: Record<string, number> };
  /** Take the instance down (connections refused, open sessions cut) or bring it back. */
  setDown(down: boolean): Promise<void>;
  /** Failover / maintenance restart: every open session is cut at once (new ones are accepted). */
  dropConnections(): void;
  /**
   * Network partition: open sessions stop carrying bytes (both ways) and new connections are accepted at
   * the TCP level but never answered, until `setStalled(false)` (then everything flows again).
   */
  setStalled(stalled: boolean): void;
  close(): Promise<void>;
}

const SSL_REQUEST = 80877103;
const GSSENC_REQUEST = 80877104;
const CANCEL_REQUEST = 80877102;
const PROTOCOL_3 = 196608;

/** Buffered reader of PostgreSQL wire messages from a socket. */
class WireReader {
  private buf = Buffer.alloc(0);
  private waiter?: () => void;
  private ended = false;
  constructor(private readonly sock: Socket) {
    sock.on('data', this.onData);
    const end = () => {
      this.ended = true;
      this.waiter?.();
    };
    sock.once('end', end);
    sock.once('close', end);
    sock.once('error', end);
  }
  private onData = (c: Buffer) => {
    this.buf = Buffer.concat([this.buf, c]);
    if (this.buf.length > 1 << 20) this.sock.destroy();
    this.waiter?.();
  };
  private async need(n: number): Promise<void> {
    while (this.buf.length < n) {
      if (this.ended) throw new Error('connection closed');
      await new Promise<void>((r) => (this.waiter = r));
      this.waiter = undefined;
    }
  }
  /** A length-prefixed packet without a type byte (startup phase). */
  async untyped(): Promise<Buffer> {
    await this.need(4);
    const len = this.buf.readInt32BE(0);
    if (len < 8 || len > 10000) throw new Error('bad startup packet length');
    await this.need(len);
    const p = this.buf.subarray(0, len);
    this.buf = this.buf.subarray(len);
    return p;
  }
  async typed(): Promise<{ type: string; payload: Buffer; raw: Buffer }> {
    await this.need(5);
    const len = this.buf.readInt32BE(1);
    if (len < 4 || len > 1 << 20) throw new Error('bad message length');
    await this.need(1 + len);
    const raw = this.buf.subarray(0, 1 + len);
    this.buf = this.buf.subarray(1 + len);
    return { type: String.fromCharCode(raw[0]!), payload: raw.subarray(5), raw };
  }
  /** Stop reading; return what is buffered. */
  release(): Buffer {
    this.sock.off('data', this.onData);
    const rest = this.buf;
    this.buf = Buffer.alloc(0);
    return rest;
  }
}

function message(type: string, payload: Buffer): Buffer {
  const head = Buffer.alloc(5);
  head.write(type, 0, 'latin1');
  head.writeInt32BE(4 + payload.length, 1);
  return Buffer.concat([head, payload]);
}

function errorResponse(code: string, text: string): Buffer {
  const f = (k: string, v: string) => Buffer.concat([Buffer.from(k, 'latin1'), Buffer.from(v, 'utf8'), Buffer.from([0])]);
  return message('E', Buffer.concat([f('S', 'FATAL'), f('V', 'FATAL'), f('C', code), f('M', text), Buffer.from([0])]));
}

function parseStartup(p: Buffer): Record<string, string> {
  const out: Record<string, string> = {};
  const parts = p.subarray(8).toString('utf8').split('\0');
  for (let i = 0; i + 1 < parts.length; i += 2) if (parts[i]) out[parts[i]!] = parts[i + 1]!;
  return out;
}

const AUTH_OK = message('R', Buffer.from([0, 0, 0, 0]));

/** Authenticate to PostgreSQL as `user` with `password`; resolves on AuthenticationOk, rejects with the server's ErrorResponse. */
async function authenticateUpstream(up: Socket, reader: WireReader, user: string, password: string): Promise<void> {
  let scram: { nonce: string; clientFirstBare: string; serverSignature?: Buffer } | undefined;
  for (;;) {
    const m = await reader.typed();
    if (m.type === 'E') throw Object.assign(new Error('upstream refused login'), { raw: m.raw });
    if (m.type !== 'R') throw new Error(`unexpected message ${m.type} during authentication`);
    const kind = m.payload.readInt32BE(0);
    switch (kind) {
      case 0:
        return;
      case 3:
        up.write(message('p', Buffer.from(password + '\0', 'utf8')));
        break;
      case 5: {
        const salt = m.payload.subarray(4, 8);
        const inner = createHash('md5')
          .update(password + user)
          .digest('hex');
        const outer = createHash('md5')
          .update(Buffer.concat([Buffer.from(inner), salt]))
          .digest('hex');
        up.write(message('p', Buffer.from('md5' + outer + '\0')));
        break;
      }
      case 10: {
        const mechs = m.payload.subarray(4).toString('utf8').split('\0');
        if (!mechs.includes('SCRAM-SHA-256')) throw new Error('no supported SASL mechanism');
        const nonce = randomBytes(18).toString('base64');
        const clientFirstBare = `n=*,r=${nonce}`;
        const first = Buffer.from(`n,,${clientFirstBare}`);
        const len = Buffer.alloc(4);
        len.writeInt32BE(first.length);
        up.write(message('p', Buffer.concat([Buffer.from('SCRAM-SHA-256\0'), len, first])));
        scram = { nonce, clientFirstBare };
        break;
      }
      case 11: {
        if (!scram) throw new Error('SASL continue without a session');
        const serverFirst = m.payload.subarray(4).toString('utf8');
        const attrs: Partial<Record<string, string>> = Object.fromEntries(
          serverFirst.split(',').map((kv) => [kv[0] ?? '', kv.slice(2)]),
        );
        if (!attrs.r?.startsWith(scram.nonce) || !attrs.s || !attrs.i) throw new Error('bad SCRAM server-first message');
        const salted = pbkdf2Sync(password.normalize('NFKC'), Buffer.from(attrs.s, 'base64'), Number(attrs.i), 32, 'sha256');
        const clientKey = createHmac('sha256', salted).update('Client Key').digest();
        const storedKey = createHash('sha256').update(clientKey).digest();
        const withoutProof = `c=biws,r=${attrs.r}`;
        const authMessage = `${scram.clientFirstBare},${serverFirst},${withoutProof}`;
        const signature = createHmac('sha256', storedKey).update(authMessage).digest();
        const proof = Buffer.from(clientKey.map((b, i) => b ^ signature[i]!));
        const serverKey = createHmac('sha256', salted).update('Server Key').digest();
        scram.serverSignature = createHmac('sha256', serverKey).update(authMessage).digest();
        up.write(message('p', Buffer.from(`${withoutProof},p=${proof.toString('base64')}`)));
        break;
      }
      case 12: {
        const v = /v=([^,]+)/.exec(m.payload.subarray(4).toString('utf8'))?.[1];
        const got = v ? Buffer.from(v, 'base64') : Buffer.alloc(0);
        if (
          !scram?.serverSignature ||
          got.length !== scram.serverSignature.length ||
          !timingSafeEqual(got, scram.serverSignature)
        ) {
          throw new Error('SCRAM server signature mismatch');
        }
        break;
      }
      default:
        throw new Error(`unsupported authentication request ${kind}`);
    }
  }
}

export async function startCloudSqlServer(opts: CloudSqlServerOptions): Promise<CloudSqlServer> {
  const [project, , instance] = opts.connectionName.split(':');
  const serverCert = opts.ca.issueServer({ commonName: `${project}:${instance}`, ips: [opts.host] });
  const sockets = new Set<Socket>();
  const stats = { admitted: 0, refused: {} as Record<string, number> };
  const refuse = (client: Socket, reason: string, code: string, text: string) => {
    stats.refused[reason] = (stats.refused[reason] ?? 0) + 1;
    client.end(errorResponse(code, text));
  };
  const connectUpstream = (): Promise<Socket> =>
    new Promise((resolve, reject) => {
      const up = netConnect({ host: opts.upstream.host, port: opts.upstream.port });
      const timer = setTimeout(() => up.destroy(new Error('upstream connect timeout')), opts.connectTimeoutMs ?? 3000);
      up.once('connect', () => {
        clearTimeout(timer);
        resolve(up);
      });
      up.once('error', (e) => {
        clearTimeout(timer);
        reject(e);
      });
    });

  // ---- faults: failover (drop every session) and partition (stall every byte) ----
  const relays = new Set<{ client: Socket; up: Socket }>();
  let stalled = false;
  const held: Array<() => void> = [];
  const whenFlowing = (go: () => void) => (stalled ? held.push(go) : go());
  const stallRelay = (r: { client: Socket; up: Socket }) => {
    r.client.unpipe(r.up);
    r.up.unpipe(r.client);
    r.client.pause();
    r.up.pause();
  };
  const resumeRelay = (r: { client: Socket; up: Socket }) => {
    r.client.pipe(r.up);
    r.up.pipe(r.client);
  };
  // ---- end faults ----

  const relay = (client: Socket, up: Socket, clientRest: Buffer, upRest: Buffer) => {
    // A proxy of a request/response protocol must not hold small writes back (Nagle's algorithm against delayed
    // ACKs costs milliseconds per round trip); the real instance's server proxy sends immediately too.
    client.setNoDelay(true);
    up.setNoDelay(true);
    sockets.add(up);
    up.on('close', () => sockets.delete(up));
    if (upRest.length) client.write(upRest);
    if (clientRest.length) up.write(clientRest);
    const pair = { client, up };
    relays.add(pair);
    up.on('close', () => relays.delete(pair));
    if (stalled) stallRelay(pair);
    else resumeRelay(pair);
    up.on('error', () => client.destroy());
    client.on('error', () => up.destroy());
    up.on('close', () => client.destroy());
    client.on('close', () => up.destroy());
  };

  /** A session PostgreSQL authenticates itself (a built-in user): relayed as is. */
  const passThrough = async (client: Socket, startup: Buffer, reader: WireReader): Promise<void> => {
    let up: Socket;
    try {
      up = await connectUpstream();
    } catch {
      return refuse(client, 'database_down', '57P03', 'the database system is not accepting connections');
    }
    up.write(startup);
    return relay(client, up, reader.release(), Buffer.alloc(0));
  };

  /** An IAM user the instance admitted: the emulator logs in to PostgreSQL on its behalf, then relays the session. */
  const admitIam = async (client: Socket, startup: Buffer, reader: WireReader, user: string): Promise<void> => {
    let up: Socket;
    try {
      up = await connectUpstream();
    } catch {
      return refuse(client, 'database_down', '57P03', 'the database system is not accepting connections');
    }
    sockets.add(up);
    const upReader = new WireReader(up);
    up.write(startup);
    try {
      await authenticateUpstream(up, upReader, user, opts.upstream.iamPassword);
    } catch (e) {
      stats.refused.upstream = (stats.refused.upstream ?? 0) + 1;
      up.destroy();
      client.end((e as { raw?: Buffer }).raw ?? errorResponse('57P03', 'the database system is not accepting connections'));
      return;
    }
    stats.admitted++;
    client.write(AUTH_OK);
    relay(client, up, reader.release(), upReader.release());
  };

  const onSession = async (client: TLSSocket): Promise<void> => {
    const reader = new WireReader(client);
    let startup: Buffer;
    for (;;) {
      startup = await reader.untyped();
      const code = startup.readInt32BE(4);
      if (code === SSL_REQUEST || code === GSSENC_REQUEST) {
        client.write('N');
        continue;
      }
      if (code === CANCEL_REQUEST) {
        const up = await connectUpstream();
        up.end(startup);
        client.end();
        return;
      }
      if (code !== PROTOCOL_3) return refuse(client, 'protocol', '08P01', 'unsupported frontend protocol');
      break;
    }
    const params = parseStartup(startup);
    const cert = client.getPeerX509Certificate();
    const binding = cert ? opts.bindingOf(cert.fingerprint256) : undefined;
    if (!binding) {
      // Not an IAM certificate: PostgreSQL authenticates the client itself.
      return passThrough(client, startup, reader);
    }
    if (binding.connectionName !== opts.connectionName) {
      return refuse(client, 'wrong_instance', '28000', 'the client certificate was issued for another instance');
    }
    const iamUser = binding.principal.replace(/\.gserviceaccount\.com$/, '');
    if (params.user !== iamUser) {
      return refuse(
        client,
        'identity_mismatch',
        '28000',
        `Cloud SQL IAM service account authentication failed for user "${params.user ?? ''}"`,
      );
    }
    return admitIam(client, startup, reader, iamUser);
  };

  // ---- direct connections: TLS via SSLRequest, the IAM token as the password (docs/emulators.md, Cloud SQL instance) ----
  // The server certificate has CN = PROJECT:INSTANCE and no subject alternative name, as the legacy per-instance CA
  // issues it: a client verifies the CA and that CN (verify-ca), not the host name.
  const directCert = opts.ca.issueServer({ commonName: `${project}:${instance}` });
  const directContext = createSecureContext({ key: directCert.keyPem, cert: directCert.certPem, minVersion: 'TLSv1.2' });
  const IAM_SA_USER = /^[^@\s]+@[a-z][a-z0-9-]*\.iam$/;
  const onDirectSession = async (client: TLSSocket, startup: Buffer, reader: WireReader): Promise<void> => {
    const params = parseStartup(startup);
    const user = params.user ?? '';
    if (!IAM_SA_USER.test(user)) {
      // A built-in user: PostgreSQL authenticates it itself.
      return passThrough(client, startup, reader);
    }
    client.write(message('R', Buffer.from([0, 0, 0, 3]))); // AuthenticationCleartextPassword (over TLS)
    const pw = await reader.typed();
    if (pw.type !== 'p') return refuse(client, 'protocol', '08P01', 'expected a password message');
    const token = pw.payload.subarray(0, Math.max(0, pw.payload.length - 1)).toString('utf8');
    const refusal = opts.direct!.verifyLoginToken(user, token);
    if (refusal) return refuse(client, 'token_refused', refusal.code, refusal.message);
    return admitIam(client, startup, reader, user);
  };
  const onDirect = async (raw: Socket): Promise<void> => {
    const reader = new WireReader(raw);
    for (;;) {
      const first = await reader.untyped();
      const code = first.readInt32BE(4);
      if (code === GSSENC_REQUEST) {
        raw.write('N');
        continue;
      }
      if (code === CANCEL_REQUEST) {
        const up = await connectUpstream();
        up.end(first);
        raw.end();
        return;
      }
      if (code === PROTOCOL_3) {
        // Cloud SQL requires SSL for these connections (ssl_mode ENCRYPTED_ONLY or stricter): no cleartext session.
        const p = parseStartup(first);
        return refuse(
          raw,
          'no_tls',
          '28000',
          `pg_hba.conf rejects connection for host "${raw.remoteAddress ?? ''}", user "${p.user ?? ''}", database "${p.database ?? ''}", no encryption`,
        );
      }
      if (code !== SSL_REQUEST) return refuse(raw, 'protocol', '08P01', 'unsupported frontend protocol');
      break;
    }
    reader.release();
    raw.write('S');
    const tls = new TLSSocket(raw, { isServer: true, secureContext: directContext });
    tls.on('error', () => tls.destroy());
    sockets.add(tls);
    tls.on('close', () => sockets.delete(tls));
    await new Promise<void>((ok, fail) => {
      tls.once('secure', () => ok());
      tls.once('close', () => fail(new Error('closed during TLS handshake')));
    });
    const tlsReader = new WireReader(tls);
    const startup = await tlsReader.untyped();
    if (startup.readInt32BE(4) !== PROTOCOL_3) return refuse(tls, 'protocol', '08P01', 'unsupported frontend protocol');
    await onDirectSession(tls, startup, tlsReader);
  };
  let directServer: NetServer | undefined;
  let directPort = opts.direct?.port;
  const listenDirect = async () => {
    if (!opts.direct) return;
    const s = createNetServer((raw) => {
      sockets.add(raw);
      raw.on('close', () => sockets.delete(raw));
      raw.on('error', () => raw.destroy());
      onDirect(raw).catch(() => raw.destroy());
    });
    await new Promise<void>((resolve, reject) => {
      s.once('error', reject);
      s.listen(directPort, opts.host, () => resolve());
    });
    const addr = s.address();
    if (typeof addr === 'object' && addr) directPort = addr.port;
    directServer = s;
  };
  const shutdownDirect = async () => {
    const s = directServer;
    directServer = undefined;
    if (s) await new Promise<void>((r) => s.close(() => r()));
  };
  // ---- end direct connections ----

  let server: TlsServer | undefined;
  let port = opts.port ?? SANDBOX.cloudSqlPorts.connector;
  const listen = async () => {
    const s = createTlsServer(
      {
        key: serverCert.keyPem,
        cert: serverCert.certPem,
        ca: [opts.ca.certPem],
        requestCert: true,
        rejectUnauthorized: true,
        minVersion: 'TLSv1.3',
      },
      (client) => {
        sockets.add(client);
        client.on('close', () => sockets.delete(client));
        client.on('error', () => client.destroy());
        whenFlowing(() => void onSession(client).catch(() => client.destroy()));
      },
    );
    s.on('connection', (sock: Socket) => {
      sockets.add(sock);
      sock.on('close', () => sockets.delete(sock));
    });
    s.on('tlsClientError', () => undefined);
    await new Promise<void>((resolve, reject) => {
      s.once('error', reject);
      s.listen(port, opts.host, () => resolve());
    });
    const addr = s.address();
    if (typeof addr === 'object' && addr) port = addr.port;
    server = s;
  };
  const shutdown = async () => {
    const s = server;
    server = undefined;
    for (const sock of sockets) sock.destroy();
    if (s) await new Promise<void>((r) => s.close(() => r()));
  };
  await listen();
  await listenDirect().catch(async (e) => {
    await shutdown();
    throw e;
  });
  return {
    host: opts.host,
    get port() {
      return port;
    },
    get directPort() {
      return directServer ? directPort : undefined;
    },
    stats,
    async setDown(down) {
      if (down && server) {
        await shutdownDirect();
        await shutdown();
      } else if (!down && !server) {
        await listen();
        await listenDirect();
      }
    },
    dropConnections() {
      for (const r of relays) {
        r.up.destroy();
        r.client.destroy();
      }
    },
    setStalled(next) {
      if (next === stalled) return;
      stalled = next;
      if (stalled) for (const r of relays) stallRelay(r);
      else {
        for (const r of relays) resumeRelay(r);
        for (const go of held.splice(0)) go();
      }
    },
    close: async () => {
      stalled = false;
      held.length = 0;
      await shutdownDirect();
      await shutdown();
    },
  };
}
