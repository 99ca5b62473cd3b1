import { connect } from 'node:net';
import { isHttp, startLocalHost, type LocalHost } from '../../../local/host';
import { testContext } from '../../helpers/app';
import { captureLogs } from '../../helpers/invoke';

/**
 * Issue #26 item 2: a body over the cap is answered 413 and the client reads that answer, every time. The local
 * host closes in stages (answer, shut its write side, drain the input for a bounded time and size, then close):
 * closing a socket with unread input sends a TCP reset that can destroy the answer before the client reads it
 * (RFC 9112 §9.6). Every registered HTTP route, form, JSON and chunked bodies, several times each.
 */

// Over the kernel's socket buffers (Linux: tcp_wmem max 4 MiB): a host that stops reading is noticed by the client.
/**
 * How long a write may wait for the server to read before the connection counts as stalled (a server that stops
 * reading without closing). Generous: on a loaded 2-core CI machine a healthy server can pause for a few hundred ms.
 */
const STALL_MS = 3_000;
const SIZE = Number(process.env.OVERSIZE_MIB ?? 8) * 1024 * 1024;
const REPEAT = 3;
let host: LocalHost;
let logs: ReturnType<typeof captureLogs>;
let adminSent = 0;

beforeAll(async () => {
  logs = captureLogs();
  host = await startLocalHost({ app: testContext() });
});
afterAll(async () => {
  await host?.close();
  logs?.restore();
});

type Kind = 'form' | 'json' | 'chunked';

interface Answer {
  status?: number;
  body?: string;
  error?: string;
}

/**
 * Send `SIZE` bytes of body and only then read the answer, as a simple client does (write the request, then read):
 * the answer waits in the client's receive buffer meanwhile, where a reset from the server would destroy it.
 * A raw socket, so the framing is exactly what is named (Content-Length, or chunked) on every method.
 */
function send(method: string, path: string, kind: Kind): Promise<Answer> {
  const u = new URL(`${host.url}${path}`);
  const chunk = Buffer.alloc(64 * 1024, kind === 'form' ? 'a' : ' ');
  const type = kind === 'form' ? 'application/x-www-form-urlencoded' : 'application/json';
  const framing = kind === 'chunked' ? 'transfer-encoding: chunked' : `content-length: ${SIZE}`;
  const head = `${method} ${u.pathname} HTTP/1.1\r\nhost: ${u.host}\r\ncontent-type: ${type}\r\n${framing}\r\n\r\n`;
  return new Promise((resolve) => {
    const s = connect(Number(u.port), u.hostname);
    s.pause(); // nothing is read until the whole request is written
    let error: string | undefined;
    s.on('error', (e: NodeJS.ErrnoException) => (error ??= e.code ?? e.message));
    const write = (b: Buffer | string) =>
      new Promise<boolean>((ok) => {
        if (s.destroyed || !s.writable) return ok(false);
        if (s.write(b)) return ok(true);
        const t = setTimeout(() => {
          error ??= 'stalled'; // the server stopped reading without closing
          ok(false);
        }, STALL_MS);
        s.once('drain', () => {
          clearTimeout(t);
          ok(true);
        });
      });
    void (async () => {
      let go = await write(head);
      for (let sent = 0; go && sent < SIZE; sent += chunk.length)
        go = await write(
          kind === 'chunked'
            ? Buffer.concat([Buffer.from(`${chunk.length.toString(16)}\r\n`), chunk, Buffer.from('\r\n')])
            : chunk,
        );
      if (go && kind === 'chunked') await write('0\r\n\r\n');
      const bytes: Buffer[] = [];
      s.on('data', (b: Buffer) => bytes.push(b));
      let finished = false;
      const finish = () => {
        if (finished) return;
        finished = true;
        const text = Buffer.concat(bytes).toString('utf8');
        const m = /^HTTP\/1\.1 (\d{3})/.exec(text);
        const body = text.split('\r\n\r\n').slice(1).join('\r\n\r\n');
        // A write that failed (EPIPE, ECONNRESET) is a miss even if the answer could be read after it: a client
        // that sends its request before reading (curl, Python requests) reports that error, not the answer.
        resolve({ status: m ? Number(m[1]) : undefined, body, error });
        s.destroy();
      };
      s.once('end', finish);
      s.once('close', finish);
      setTimeout(() => {
        error ??= 'no answer in 10 s';
        finish();
      }, 10_000).unref();
      if (s.destroyed)
        finish(); // reset while writing: whatever was received before is all there is
      else s.resume();
    })();
  });
}

test('an 8 MiB body on every route (form, JSON, chunked; repeatedly): the 413 is read every time', async () => {
  const routes = host.registrations.filter(isHttp).map((r) => ({
    path: `/${(r.options.route ?? r.name).replace(/\{[^}]+\}/g, 'x')}`,
    method: (r.options.methods ?? ['POST'])[0]!.toUpperCase(),
  }));
  expect(routes.length).toBeGreaterThanOrEqual(8);
  const misses: string[] = [];
  let read = 0;
  let total = 0;
  for (const { path, method } of routes) {
    for (const kind of ['form', 'json', 'chunked'] as const) {
      for (let i = 0; i < REPEAT; i++) {
        total++;
        if (path.startsWith('/admin/')) adminSent++;
        const a = await send(method, path, kind);
        const ok = a.status === 413 && a.body !== undefined && /payload_too_large/.test(a.body) && a.error === undefined;
        if (ok) read++;
        else misses.push(`${method} ${path} ${kind} #${i}: ${a.status ?? '-'} ${a.error ?? ''}`);
      }
    }
  }
  // The count, for the record (issue #26 reported 0 of 5 in one run).
  console.log(`413 read ${read}/${total}`);
  expect(misses).toEqual([]);
}, 240_000);

test('an oversize request on an admin route is audited once, as the host refused it', () => {
  const admin = logs.records.filter((l) => l.event === 'audit' && typeof l.path === 'string' && l.path.startsWith('/api/admin/'));
  expect(adminSent).toBeGreaterThan(0);
  expect(admin).toHaveLength(adminSent);
  for (const l of admin) {
    expect(l).toMatchObject({ decision: 'deny', reason: 'payload_too_large', status: 413, caller: 'unauthenticated' });
    expect(typeof l.correlationId).toBe('string');
  }
});
