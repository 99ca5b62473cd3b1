import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { XMLValidator } from 'fast-xml-parser';

/**
 * Issue #29 at the gateway: the fragment validates the client certificate, removes any incoming X-Client-Certificate,
 * forwards the validated certificate to the broker with APIM's managed identity, and caches per SHA-256 thumbprint;
 * the Bicep negotiates client certificates, trusts the client CAs, and hands the broker the same CAs.
 */

const root = join(__dirname, '..', '..');
const read = (...p: string[]) => readFileSync(join(root, ...p), 'utf8');
const fragment = read('infra', 'apim', 'fragments', 'broker-exchange-certificate.xml');
const api = read('infra', 'apim', 'cloudsql-mtls-api.xml');
const apim = read('infra', 'modules', 'apim.bicep');
const functionApp = read('infra', 'modules', 'functionapp.bicep');
const main = read('infra', 'main.bicep');
const code = (xml: string) =>
  xml
    .replace(/<!--[\s\S]*?-->/g, '')
    .replace(/&quot;/g, '"')
    .replace(/&amp;/g, '&')
    .replace(/&lt;/g, '<')
    .replace(/&gt;/g, '>');

test('well-formed XML; the API includes the fragment and answers errors with caller-errors', () => {
  expect(XMLValidator.validate(fragment)).toBe(true);
  expect(XMLValidator.validate(api)).toBe(true);
  expect(api).toContain('<include-fragment fragment-id="broker-exchange-certificate" />');
  expect(api).toContain('<include-fragment fragment-id="caller-errors" />');
  expect(code(api)).not.toContain('X-Client-Certificate');
});

test('the certificate is validated (trust, validity, revocation) before anything uses it', () => {
  const f = code(fragment);
  const validate = f.indexOf('<validate-client-certificate');
  expect(validate).toBeGreaterThan(-1);
  const tag = f.slice(validate, f.indexOf('/>', validate));
  for (const a of ['validate-revocation', 'validate-trust', 'validate-not-before', 'validate-not-after'])
    expect(tag).toContain(`${a}="true"`);
  expect(tag).toContain('ignore-error="false"');
  expect(f.indexOf('context.Request.Certificate')).toBeGreaterThan(validate);
});

test("any incoming X-Client-Certificate is removed; the broker gets the validated certificate's DER in it", () => {
  const f = code(fragment);
  const del = f.indexOf('<set-header name="X-Client-Certificate" exists-action="delete" />');
  expect(del).toBeGreaterThan(-1);
  expect(f).toContain('Convert.ToBase64String(context.Request.Certificate.RawData)');
  const send = f.slice(f.indexOf('<send-request'), f.indexOf('</send-request>'));
  expect(send).toContain('<set-header name="X-Client-Certificate" exists-action="override">');
  expect(send).toContain('<authentication-managed-identity resource="{{broker-app-id-uri}}"');
  expect(send).toContain('urn:token-broker:token-type:client-certificate');
  expect(send).toContain('<set-url>{{broker-base-url}}/api/token</set-url>');
  // Nothing the caller sent reaches the broker: no request header, no body.
  expect(send).not.toMatch(/context\.Request\.(Headers|Body)/);
});

test('the cache key is the SHA-256 thumbprint of the validated certificate and the target, nothing the caller chose', () => {
  const f = code(fragment);
  expect(f).toContain('System.Security.Cryptography.SHA256.Create().ComputeHash(context.Request.Certificate.RawData)');
  const key = f.split('\n').find((l) => l.includes('<set-variable name="broker-cache-key"'))!;
  expect(key).toContain('context.Variables["caller-cert-thumbprint"]');
  expect(key).toContain('context.Variables["broker-resource"]');
  expect(key).not.toMatch(/context\.Request/);
  const caches = fragment.match(/<cache-(lookup|store)-value key="[^"]*"/g)!;
  expect(caches).toHaveLength(2);
  for (const c of caches) expect(c).toContain('key="@((string)context.Variables[&quot;broker-cache-key&quot;])"');
});

test('broker refusals become fixed problems (403 / 503 / 502), never its text', () => {
  const f = code(fragment);
  expect(f).toContain('r.StatusCode == 401 && error == "invalid_grant") { return 403; }');
  expect(f).not.toMatch(/LastError|error_description/);
});

test('Bicep: client certificates negotiated, the CA certificates trusted, the fragment and API deployed, the broker told', () => {
  expect(apim).toMatch(/param clientCaCertificates array = \[\]/);
  expect(apim).toMatch(/negotiateClientCertificate: true/);
  expect(apim).toMatch(/certificates: \[for c in clientCaCertificates: \{ storeName: 'Root', encodedCertificate: c \}\]/);
  expect(apim).toContain("loadTextContent('../apim/fragments/broker-exchange-certificate.xml')");
  expect(apim).toContain("loadTextContent('../apim/cloudsql-mtls-api.xml')");
  expect(apim).toMatch(/dependsOn: \[ values, brokerExchangeCertificate, callerErrors \]/);
  expect(functionApp).toContain("{ name: 'BROKER_CERT_GATEWAY_OIDS', value: certGatewayOids }");
  expect(functionApp).toContain("{ name: 'BROKER_CLIENT_CA_BUNDLE', value: clientCaBundle }");
  expect(main).toMatch(/certGatewayOids: empty\(clientCaCertificates\) \? '' : identities\.outputs\.gatewayPrincipalId/);
  expect(main).toMatch(/clientCaCertificates: clientCaCertificates/);
});
