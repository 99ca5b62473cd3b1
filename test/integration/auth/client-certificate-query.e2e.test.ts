import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SANDBOX } from '../../../local/ids';
import type { ClientCert } from '../../../local/pki';
import { startSandbox, type Sandbox } from '../../../local/sandbox';
import { workerHost } from '../../helpers/loopback';
import { captureLogs, invoke } from '../../helpers/invoke';
import { TestApp } from '../../helpers/app';

const testApp = new TestApp();
const queryHandler = testApp.handler('query');

/**
 * Issue #29 through the sandbox's real PostgreSQL: a certificate caller runs a catalogued query; its thumbprint and
 * subject reach the transaction-local identity (broker.caller_kind / caller_cert_thumbprint / caller_cert_subject) and
 * identity-bound parameters (caller.certThumbprint / caller.certSubject); broker.caller_oid stays empty.
 */

const HOST = workerHost(70);
const G = SANDBOX.google;
jest.setTimeout(90_000);

let sb: Sandbox;
let restoreEnv: () => void;
let dir: string;
let gateway: string;
let partner: ClientCert;
let stranger: ClientCert;
const logs = captureLogs();

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'broker-mtls-query-'));
  const instance = `${G.project}:${G.region}:${G.instance}`;
  writeFileSync(
    join(dir, 'catalog.json'),
    JSON.stringify({
      version: 1,
      queries: [
        {
          name: 'who-am-i',
          instance,
          database: G.database,
          sql: "SELECT current_setting('broker.caller_kind', true) AS kind, current_setting('broker.caller_cert_thumbprint', true) AS thumbprint, current_setting('broker.caller_cert_subject', true) AS subject, coalesce(current_setting('broker.caller_oid', true), '') AS oid, $1::text AS bound_thumbprint, $2::text AS bound_subject",
          parameters: [
            { name: 'thumb', from: 'caller.certThumbprint' },
            { name: 'subj', from: 'caller.certSubject' },
          ],
          rowLimit: 1,
          timeoutMs: 2000,
        },
        {
          name: 'entra-only',
          instance,
          database: G.database,
          sql: 'SELECT $1::text AS oid',
          parameters: [{ name: 'oid', from: 'caller.oid' }],
          rowLimit: 1,
          timeoutMs: 2000,
        },
      ],
    }),
  );
  sb = await startSandbox({
    cloudSql: { host: HOST },
    env: { QUERY_CATALOG_PATH: join(dir, 'catalog.json'), QUERY_CONNECT_TIMEOUT_MS: '4000' },
  });
  partner = sb.clientCa.issueClient({ commonName: 'partner-job', organization: 'Sandbox Partner' });
  stranger = sb.clientCa.issueClient({ commonName: 'stranger' });
  writeFileSync(
    join(dir, 'policy.json'),
    JSON.stringify({
      version: 1,
      rules: [
        {
          id: 'partner-queries',
          subject: { certificate: { issuerThumbprint: sb.clientCa.thumbprint, thumbprints: [partner.thumbprint] } },
          grants: {
            cloudsql: [{ instance, databases: [G.database], serviceAccount: G.readerServiceAccount, maxTtlSeconds: 900 }],
            queries: ['who-am-i', 'entra-only'],
          },
        },
      ],
    }),
  );
  restoreEnv = sb.applyEnv();
  process.env.BROKER_POLICY_PATH = join(dir, 'policy.json');
  gateway = await sb.entra.mint({ oid: SANDBOX.gatewayObjectId, appId: SANDBOX.gatewayAppId, aud: SANDBOX.clientAudience });
});

afterAll(async () => {
  logs.restore();
  await testApp.app.close();
  restoreEnv?.();
  await sb?.stop();
  rmSync(dir, { recursive: true, force: true });
});

const query = (name: string, cert: ClientCert) =>
  invoke(queryHandler, {
    headers: { authorization: `Bearer ${gateway}`, 'x-client-certificate': cert.base64 },
    params: { name },
    body: {},
  });

test('the certificate is the transaction-local identity and binds caller.certThumbprint / caller.certSubject', async () => {
  const res = await query('who-am-i', partner);
  expect(res.status).toBe(200);
  const [kind, thumbprint, subject, oid, boundThumbprint, boundSubject] = (res.json.rows as string[][])[0]!;
  expect({ kind, thumbprint, subject, oid, boundThumbprint, boundSubject }).toEqual({
    kind: 'certificate',
    thumbprint: partner.thumbprint,
    subject: 'O=Sandbox Partner, CN=partner-job',
    oid: '',
    boundThumbprint: partner.thumbprint,
    boundSubject: 'O=Sandbox Partner, CN=partner-job',
  });
  const line = logs.records.filter((r) => r.event === 'audit').at(-1);
  expect(line).toMatchObject({
    decision: 'grant',
    action: 'query',
    subject: { kind: 'certificate', certificate: { thumbprint: partner.thumbprint } },
  });
});

test('a query bound to an Entra object id refuses a certificate caller (403), never binds its thumbprint as an oid', async () => {
  const res = await query('entra-only', partner);
  expect(res.status).toBe(403);
});

test('a verified certificate no rule grants: 403', async () => {
  expect((await query('who-am-i', stranger)).status).toBe(403);
});
