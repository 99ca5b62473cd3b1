import { createHash, createHmac, pbkdf2Sync, randomBytes, timingSafeEqual } from 'node:crypto';
import type { Socket } from 'node:net';

/**
 * The PostgreSQL wire protocol as far as the Cloud SQL server emulator speaks it: message framing, the startup packet,
 * error responses, and the SCRAM-SHA-256 login it makes upstream on behalf of an admitted IAM user.
 */

export const SSL_REQUEST = 80877103;
export const GSSENC_REQUEST = 80877104;
export const CANCEL_REQUEST = 80877102;
export const PROTOCOL_3 = 196608;

/** Buffered reader of PostgreSQL wire messages from a socket. */
export class WireReader {
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

export function message(type: string, payload: Buffer): Buffer {
  const head = Buffer.alloc(5);
  head.write(type, 0, 'latin1');
  head.writeInt32BE(4 + payload.length, 1);
  return Buffer.concat([head, payload]);
}

export function errorResponse(code: string, text: string): Buffer {
  const f = (k: string, v: string) => Buffer.concat([Buffer.from(k, 'latin1'), Buffer.from(v, 'utf8'), Buffer.from([0])]);
  return message('E', Buffer.concat([f('S', 'FATAL'), f('V', 'FATAL'), f('C', code), f('M', text), Buffer.from([0])]));
}

export function parseStartup(p: Buffer): Record<string, string> {
  const out: Record<string, string> = {};
  const parts = p.subarray(8).toString('utf8').split('\0');
  for (let i = 0; i + 1 < parts.length; i += 2) if (parts[i]) out[parts[i]!] = parts[i + 1]!;
  return out;
}

export const AUTH_OK = message('R', Buffer.from([0, 0, 0, 0]));

/** Authenticate to PostgreSQL as `user` with `password`; resolves on AuthenticationOk, rejects with the server's ErrorResponse. */
export async function authenticateUpstream(up: Socket, reader: WireReader, user: string, password: string): Promise<void> {
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
