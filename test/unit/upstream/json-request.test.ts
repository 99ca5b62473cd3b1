import type { ServerResponse } from 'node:http';
import { closedLoopbackPort, startStubServer } from '../../helpers/stub-server';
import { requestJson } from '../../../shared/upstream/json-request';

/**
 * requestJson (the node:http(s) JSON call of a cache miss): one deadline over the answer *and* its body, transport
 * failures classified like fetchWithTimeout's, the request sent as given, bodies that are not JSON reported as such.
 */

let stub: Awaited<ReturnType<typeof startStubServer>>;
let closedPort: number;
const seen: { method?: string; headers?: Record<string, unknown>; body?: string }[] = [];
const json = (res: ServerResponse, status: number, body: string, headers: Record<string, string> = {}) => {
  res.writeHead(status, { 'content-type': 'application/json', ...headers });
  res.end(body);
};

beforeAll(async () => {
  stub = await startStubServer((req, res) => {
    let body = '';
    req.on('data', (c: Buffer) => (body += c.toString('utf8')));
    req.on('end', () => {
      seen.push({ method: req.method, headers: req.headers, body });
      if (req.url === '/ok') return json(res, 200, '{"accessToken":"t","n":1}');
      if (req.url === '/busy') return json(res, 503, '{"error":{"status":"UNAVAILABLE"}}', { 'retry-after': '7' });
      if (req.url === '/html') return json(res, 200, '<html>');
      if (req.url === '/empty') return json(res, 204, '');
      if (req.url === '/stall') return; // never answers
      if (req.url === '/stall-body') {
        res.writeHead(200, { 'content-type': 'application/json' });
        res.write('{"accessToken":'); // the rest never comes
        return;
      }
      if (req.url === '/huge') {
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(`"${'x'.repeat(2 * 1024 * 1024)}"`);
        return;
      }
      res.writeHead(404).end();
    });
  });
  closedPort = await closedLoopbackPort();
});
afterAll(() => stub.close());

const post = { method: 'POST', headers: { authorization: 'Bearer s', 'content-type': 'application/json' }, body: '{"a":"é"}' };

test('sends the method, headers and body (with its byte length) and parses the JSON answer', async () => {
  seen.length = 0;
  const a = await requestJson('Google IAM Credentials', `${stub.base}/ok`, post, 2000);
  expect(a).toMatchObject({ status: 200, ok: true, unreadable: false, body: { accessToken: 't', n: 1 } });
  expect(a.header('Content-Type')).toBe('application/json');
  expect(seen[0]).toMatchObject({ method: 'POST', body: '{"a":"é"}' });
  expect(seen[0]!.headers).toMatchObject({ authorization: 'Bearer s', 'content-length': '10' });
});

test('an error status is an answer (the caller maps it), with its headers and body', async () => {
  const a = await requestJson('Google IAM Credentials', `${stub.base}/busy`, post, 2000);
  expect(a).toMatchObject({ status: 503, ok: false, body: { error: { status: 'UNAVAILABLE' } } });
  expect(a.header('retry-after')).toBe('7');
});

test('a body that is not JSON is reported unreadable; an empty one is just empty', async () => {
  expect(await requestJson('S', `${stub.base}/html`, post, 2000)).toMatchObject({ ok: true, unreadable: true, body: undefined });
  expect(await requestJson('S', `${stub.base}/empty`, post, 2000)).toMatchObject({
    status: 204,
    unreadable: false,
    body: undefined,
  });
});

test.each([
  ['no answer at all', '/stall'],
  ['an answer whose body stalls', '/stall-body'],
])('the deadline covers %s: upstream_timeout, promptly', async (_name, path) => {
  const t0 = Date.now();
  await expect(requestJson('Google IAM Credentials', `${stub.base}${path}`, post, 150)).rejects.toMatchObject({
    code: 'upstream_timeout',
    message: 'Google IAM Credentials did not answer in time.',
  });
  expect(Date.now() - t0).toBeLessThan(2000);
});

test('a refused connection is upstream_unavailable; so is an answer over the size cap', async () => {
  await expect(requestJson('S', `http://127.0.0.1:${closedPort}/ok`, post, 2000)).rejects.toMatchObject({
    code: 'upstream_unavailable',
  });
  await expect(requestJson('S', `${stub.base}/huge`, post, 2000)).rejects.toMatchObject({ code: 'upstream_unavailable' });
});

test('the keep-alive connection is reused by the next call', async () => {
  const sockets = new Set<unknown>();
  const onConnection = (s: unknown) => sockets.add(s);
  stub.server.on('connection', onConnection);
  try {
    for (let i = 0; i < 3; i++) await requestJson('S', `${stub.base}/ok`, post, 2000);
  } finally {
    stub.server.off('connection', onConnection);
  }
  expect(sockets.size).toBeLessThanOrEqual(1);
});
