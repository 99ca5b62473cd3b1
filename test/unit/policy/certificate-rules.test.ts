import { parsePolicy } from '../../../shared/policy/load';
import { ConfigError } from '../../../shared/errors';
import { evaluate, explainDecision } from '../../../shared/policy/evaluate';
import { certificatePrincipal } from '../../../shared/auth/client-certificate';
import type { CertificateIdentity } from '../../../shared/auth/principal';

/** Issue #29: policy rules and deny entries for client certificates (schema and evaluation, no sandbox). */

const TID = '72f988bf-0000-4000-8000-00000000c0de';
const CA = 'a'.repeat(64);
const THUMB = 'b'.repeat(64);
const QUERY = { kind: 'query', name: 'order-count' } as const;

function problemsOf(doc: unknown): string[] {
  try {
    parsePolicy(JSON.stringify(doc));
  } catch (e) {
    expect(e).toBeInstanceOf(ConfigError);
    return [...(e as ConfigError).problems];
  }
  throw new Error('expected the policy to be rejected');
}

const identity = (o: Partial<CertificateIdentity> = {}): CertificateIdentity => ({
  thumbprint: THUMB,
  subject: 'O=Contoso, CN=job',
  issuer: 'CN=Contoso CA',
  issuerThumbprint: CA,
  serialNumber: '1f',
  dnsNames: ['job.contoso.example'],
  uris: ['spiffe://contoso/job'],
  notBefore: '2026-01-01T00:00:00.000Z',
  notAfter: '2027-01-01T00:00:00.000Z',
  ...o,
});

const policyWith = (subject: unknown, extra: Record<string, unknown> = {}) =>
  parsePolicy(JSON.stringify({ version: 1, rules: [{ id: 'r', subject, grants: { queries: ['order-count'] } }], ...extra }));

test('a certificate subject names the CA and at least one certificate attribute; errors name the path', () => {
  const problems = problemsOf({
    version: 1,
    rules: [
      { id: 'no-ca', subject: { certificate: { thumbprints: [THUMB] } }, grants: {} },
      { id: 'ca-only', subject: { certificate: { issuerThumbprint: CA } }, grants: {} },
      { id: 'bad-thumb', subject: { certificate: { issuerThumbprint: CA, thumbprints: ['xyz'] } }, grants: {} },
      { id: 'extra', subject: { certificate: { issuer: 'CN=CA', subjects: ['CN=x'] }, tenantId: TID }, grants: {} },
    ],
  });
  expect(problems.join('\n')).toMatch(/rules\[0\]\.subject\.certificate: must name the issuing CA/);
  expect(problems.join('\n')).toMatch(/rules\[1\]\.subject\.certificate: must list at least one of thumbprints/);
  expect(problems.join('\n')).toMatch(/rules\[2\]\.subject\.certificate\.thumbprints\[0\]: must be a SHA-256 thumbprint/);
  expect(problems.join('\n')).toMatch(/rules\[3\]\.subject: Unrecognized key\(s\) in object: 'tenantId'/);
});

test('denyCertificates: a thumbprint or a serial (optionally with its CA), never both; ids unique across deny lists', () => {
  const problems = problemsOf({
    version: 1,
    deny: [{ id: 'x', tenantId: TID, objectId: TID }],
    denyCertificates: [{ id: 'x', thumbprint: THUMB }, { thumbprint: THUMB, serialNumber: '01' }, { issuerThumbprint: CA }],
    rules: [],
  });
  const text = problems.join('\n');
  expect(text).toMatch(/denyCertificates\[0\]\.id: duplicate deny id "x"/);
  expect(text).toMatch(/denyCertificates\[1\]: must name exactly one of thumbprint and serialNumber/);
  expect(text).toMatch(/denyCertificates\[2\]\.issuerThumbprint: only with serialNumber/);
});

test('thumbprints with colons / upper case and serials with leading zeros are stored canonical', () => {
  const colons = THUMB.toUpperCase().match(/../g)!.join(':');
  const p = policyWith(
    { certificate: { issuerThumbprint: CA.toUpperCase(), thumbprints: [colons] } },
    { denyCertificates: [{ serialNumber: '00:1F' }] },
  );
  expect(p.rules[0]!.subject).toEqual({ certificate: { issuerThumbprint: CA, thumbprints: [THUMB] } });
  expect(p.denyCertificates[0]!.serialNumber).toBe('1f');
});

test.each([
  [{ issuerThumbprint: CA, thumbprints: [THUMB] }, 'grant'],
  [{ issuer: 'CN=Contoso CA', subjects: ['O=Contoso, CN=job'] }, 'grant'],
  [{ issuer: 'CN=Contoso CA', dnsNames: ['JOB.contoso.example'] }, 'grant'],
  [{ issuer: 'CN=Contoso CA', uris: ['spiffe://contoso/job'] }, 'grant'],
  [{ issuer: 'CN=Other CA', subjects: ['O=Contoso, CN=job'] }, 'deny'],
  [{ issuerThumbprint: 'c'.repeat(64), thumbprints: [THUMB] }, 'deny'],
  [{ issuer: 'CN=Contoso CA', subjects: ['CN=job'] }, 'deny'],
  [{ issuer: 'CN=Contoso CA', subjects: ['O=Contoso, CN=job'], uris: ['spiffe://contoso/other'] }, 'deny'],
])('certificate rule %j → %s', (certificate, decision) => {
  expect(evaluate(policyWith({ certificate }), certificatePrincipal(identity()), QUERY).decision).toBe(decision);
});

test('an Entra rule never matches a certificate, a certificate rule never an Entra caller', () => {
  const cert = certificatePrincipal(identity());
  const entraRule = policyWith({ tenantId: TID, roles: ['Orders.Read'] });
  const d = explainDecision(entraRule, cert, QUERY);
  expect(d.decision).toBe('deny');
  expect(d.trace[0]!.why).toMatch(/Entra ID callers/);
  const entra = {
    tenantId: TID,
    objectId: TID,
    roles: ['Orders.Read'],
    scopes: [],
    groups: [],
    audience: 'x',
    issuer: 'x',
    version: '2.0' as const,
    expiresAt: 0,
  };
  const certRule = policyWith({ certificate: { issuerThumbprint: CA, thumbprints: [THUMB] } });
  expect(explainDecision(certRule, entra, QUERY).trace[0]!.why).toMatch(/client certificates/);
});

test('a live certificate deny entry wins over the rule (subject_denied); an expired one no longer applies', () => {
  const subject = { certificate: { issuerThumbprint: CA, thumbprints: [THUMB] } };
  const cert = certificatePrincipal(identity());
  expect(evaluate(policyWith(subject, { denyCertificates: [{ thumbprint: THUMB }] }), cert, QUERY)).toMatchObject({
    decision: 'deny',
    code: 'subject_denied',
  });
  expect(
    evaluate(policyWith(subject, { denyCertificates: [{ serialNumber: '1F', issuerThumbprint: CA }] }), cert, QUERY).decision,
  ).toBe('deny');
  expect(
    evaluate(policyWith(subject, { denyCertificates: [{ serialNumber: '1f', issuerThumbprint: 'c'.repeat(64) }] }), cert, QUERY)
      .decision,
  ).toBe('grant');
  expect(
    evaluate(policyWith(subject, { denyCertificates: [{ thumbprint: THUMB, expiresAt: '2020-01-01T00:00:00Z' }] }), cert, QUERY)
      .decision,
  ).toBe('grant');
});
