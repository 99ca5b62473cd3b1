import { connect as netConnect, createServer as createNetServer, type Server as NetServer, type Socket } from 'node:net';
import { createSecureContext, createServer as createTlsServer, TLSSocket, type Server as TlsServer } from 'node:tls';
import { SANDBOX } from '../../ids';
import type { SandboxCa } from '../../pki';
import type { CertBinding } from '../google/sqladmin';
import {
  AUTH_OK,
  authenticateUpstream,
  CANCEL_REQUEST,
  errorResponse,
  GSSENC_REQUEST,
  message,
  parseStartup,
  PROTOCOL_3,
  SSL_REQUEST,
  WireReader,
} from './wire';

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
  readonly direct?: {
    readonly port: number;
    verifyLoginToken(user: string, token: string): LoginRefusal | undefined;
    /** Database users of IAM type other than service accounts (CLOUD_IAM_WORKFORCE_IDENTITY): their password is a token too. */
    isIamUser?(user: string): boolean;
  };
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
  /**
   * Logins admitted / refused (by reason), for tests; `directLoginMs`: the last admitted direct logins' own time, from
   * the password message to AuthenticationOk (token check, the backend's login), for bench/caller-mode.ts.
   */
  readonly stats: { admitted: number; refused: Record<string, number>; directLoginMs: number[] };
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

/** Listen on host:port (0 or undefined: a free port); the port the server got. */
async function listenOn<P extends number | undefined>(s: NetServer, port: P, host: string): Promise<number | P> {
  await new Promise<void>((resolve, reject) => {
    s.once('error', reject);
    s.listen(port, host, () => resolve());
  });
  const addr = s.address();
  return typeof addr === 'object' && addr ? addr.port : port;
}

export async function startCloudSqlServer(opts: CloudSqlServerOptions): Promise<CloudSqlServer> {
  const [project, , instance] = opts.connectionName.split(':');
  const serverCert = opts.ca.issueServer({ commonName: `${project}:${instance}`, ips: [opts.host] });
  const sockets = new Set<Socket>();
  const stats = { admitted: 0, refused: {} as Record<string, number>, directLoginMs: [] as number[] };
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
  const admitIam = async (
    client: Socket,
    startup: Buffer,
    reader: WireReader,
    user: string,
    passwordAt?: number,
  ): Promise<void> => {
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
    if (passwordAt !== undefined) {
      stats.directLoginMs.push(performance.now() - passwordAt);
      if (stats.directLoginMs.length > 1000) stats.directLoginMs.shift();
    }
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
    if (!IAM_SA_USER.test(user) && !opts.direct!.isIamUser?.(user)) {
      // A built-in user: PostgreSQL authenticates it itself.
      return passThrough(client, startup, reader);
    }
    client.write(message('R', Buffer.from([0, 0, 0, 3]))); // AuthenticationCleartextPassword (over TLS)
    const pw = await reader.typed();
    const passwordAt = performance.now();
    if (pw.type !== 'p') return refuse(client, 'protocol', '08P01', 'expected a password message');
    const token = pw.payload.subarray(0, Math.max(0, pw.payload.length - 1)).toString('utf8');
    const refusal = opts.direct!.verifyLoginToken(user, token);
    if (refusal) return refuse(client, 'token_refused', refusal.code, refusal.message);
    return admitIam(client, startup, reader, user, passwordAt);
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
      // As relay() does for connector sessions: the TLS layer over this socket cannot turn Nagle's algorithm off.
      raw.setNoDelay(true);
      sockets.add(raw);
      raw.on('close', () => sockets.delete(raw));
      raw.on('error', () => raw.destroy());
      onDirect(raw).catch(() => raw.destroy());
    });
    directPort = await listenOn(s, directPort, opts.host);
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
    port = await listenOn(s, port, opts.host);
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
