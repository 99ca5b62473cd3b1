import { spawn, type ChildProcess } from 'node:child_process';
import { resolve } from 'node:path';

import { SANDBOX } from '../../../local/ids';
import { startSandbox, type Sandbox } from '../../../local/sandbox';
import { captureLogs, invoke } from '../../helpers/invoke';
import { workerHost } from '../../helpers/loopback';
import { TestApp } from '../../helpers/app';

const testApp = new TestApp();
const tokenHandler = testApp.handler('token');

/** examples/db-backend, started as its README says, answers each caller their own rows with only the broker's answer. */

const HOST = workerHost(60);
jest.setTimeout(60_000);
let sb: Sandbox;
let restoreEnv: () => void;
let backend: ChildProcess;
let url: string;
const logs = captureLogs();

beforeAll(async () => {
  sb = await startSandbox({ cloudSql: { host: HOST } });
  restoreEnv = sb.applyEnv();
  backend = spawn(process.execPath, [resolve(__dirname, '..', '..', '..', 'examples', 'db-backend', 'server.mjs')], {
    env: { ...process.env, PORT: '0' },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  url = await new Promise<string>((ok, fail) => {
    let out = '';
    backend.stdout!.on('data', (c: Buffer) => {
      out += c.toString();
      const m = /listening on (http:\/\/\S+)/.exec(out);
      if (m) ok(m[1]!);
    });
    backend.once('exit', (code) => fail(new Error(`example backend exited (${code})`)));
  });
});

afterAll(async () => {
  logs.restore();
  backend?.kill('SIGTERM');
  restoreEnv?.();
  testApp.renew();
  await sb?.stop();
});

async function answerFor(oid: string): Promise<string> {
  const gateway = await sb.entra.mint({
    oid: SANDBOX.gatewayObjectId,
    appId: SANDBOX.gatewayAppId,
    aud: SANDBOX.clientAudience,
    version: '1.0',
  });
  const caller = await sb.entra.mint({ aud: SANDBOX.subjectAudience, oid, roles: ['Orders.Read'] });
  const r = await invoke(tokenHandler, {
    headers: { authorization: `Bearer ${gateway}` },
    form: {
      grant_type: 'urn:ietf:params:oauth:grant-type:token-exchange',
      subject_token: caller,
      subject_token_type: 'urn:ietf:params:oauth:token-type:access_token',
      resource: 'cloudsql://sandbox-project/europe-west1/orders-db/orders',
    },
  });
  expect(r.status).toBe(200);
  return Buffer.from(r.text).toString('base64url');
}

const get = (headers: Record<string, string>) =>
  fetch(url, { headers }).then(async (r) => ({
    status: r.status,
    body: (await r.json()) as { rows?: { id: string }[]; error?: string },
  }));

test('each caller gets only their own rows through the example backend', async () => {
  const ada = await get({ 'x-db-token': await answerFor(SANDBOX.readerObjectId), 'x-caller-oid': SANDBOX.readerObjectId });
  expect(ada.status).toBe(200);
  expect(ada.body.rows!.map((r) => r.id)).toEqual(['1', '2']);
  const grace = await get({
    'x-db-token': await answerFor(SANDBOX.secondReaderObjectId),
    'x-caller-oid': SANDBOX.secondReaderObjectId,
  });
  expect(grace.body.rows!.map((r) => r.id)).toEqual(['3']);
});

test('a missing or forged answer is refused; a token the instance refuses is 401, with no database text', async () => {
  expect((await get({ 'x-caller-oid': SANDBOX.readerObjectId })).status).toBe(400);
  const answer = JSON.parse(Buffer.from(await answerFor(SANDBOX.readerObjectId), 'base64url').toString()) as Record<
    string,
    unknown
  >;
  const forged = Buffer.from(JSON.stringify({ ...answer, access_token: 'ya29.c.forged-token-xxxxxxxxxxxxxxxx' })).toString(
    'base64url',
  );
  const r = await get({ 'x-db-token': forged, 'x-caller-oid': SANDBOX.readerObjectId });
  expect(r.status).toBe(401);
  expect(JSON.stringify(r.body)).not.toMatch(/Cloud SQL IAM|forged/);
});
