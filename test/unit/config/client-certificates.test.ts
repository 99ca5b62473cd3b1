import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { clientCertificatesConfig } from '../../../shared/config/client-certificates';
import { ConfigError } from '../../../shared/errors';
import { createClientCa } from '../../../local/pki';

/** BROKER_CLIENT_CA_BUNDLE and BROKER_CERT_GATEWAY_OIDS (issue #29): every form the deployment writes, every mistake named. */

const ca = createClientCa('Config Test CA');
const other = createClientCa('Other Config CA');
const GW = '9a7e0000-0000-4000-8000-0000000a9140';
const base64Of = (pem: string) => pem.replace(/-----(BEGIN|END) CERTIFICATE-----|\s+/g, '');
let dir: string;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'broker-ca-'));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const load = (bundle?: string, oids?: string) =>
  clientCertificatesConfig.parse({ BROKER_CLIENT_CA_BUNDLE: bundle, BROKER_CERT_GATEWAY_OIDS: oids });
const problems = (bundle?: string, oids?: string) => {
  try {
    load(bundle, oids);
  } catch (e) {
    expect(e).toBeInstanceOf(ConfigError);
    return (e as ConfigError).problems.join('\n');
  }
  throw new Error('expected a ConfigError');
};

test('unset: no gateway may vouch, no CA', () => {
  expect(load()).toEqual({ gatewayOids: undefined, caBundle: undefined });
});

test('PEM text (several CAs), a one-line PEM per CA as Bicep writes it, literal \\n, or a file path', () => {
  expect(load(ca.certPem + other.certPem, GW).caBundle).toHaveLength(2);
  const oneLine = `-----BEGIN CERTIFICATE-----\n${base64Of(ca.certPem)}\n-----END CERTIFICATE-----`;
  expect(load(oneLine).caBundle![0]!.fingerprint256.replace(/:/g, '').toLowerCase()).toBe(ca.thumbprint);
  expect(load(ca.certPem.replace(/\n/g, '\\n')).caBundle).toHaveLength(1);
  const file = join(dir, 'bundle.pem');
  writeFileSync(file, other.certPem);
  expect(load(file).caBundle).toHaveLength(1);
});

test('mistakes are named: no such file, no certificate, not a CA, the same CA name twice, a bad object id', () => {
  expect(problems(join(dir, 'missing.pem'))).toMatch(/BROKER_CLIENT_CA_BUNDLE must be PEM CA certificates or the path/);
  expect(problems('-----BEGIN nothing')).toMatch(/BROKER_CLIENT_CA_BUNDLE holds no PEM certificate/);
  const leaf = ca.issueClient({ commonName: 'leaf' });
  expect(problems(leaf.certPem)).toMatch(/certificate 1 of the bundle \(CN=leaf\) is not a CA/);
  expect(problems(ca.certPem + createClientCa('Config Test CA').certPem)).toMatch(/same subject/);
  expect(problems(undefined, 'not-a-guid')).toMatch(/BROKER_CERT_GATEWAY_OIDS has an invalid entry/);
});
