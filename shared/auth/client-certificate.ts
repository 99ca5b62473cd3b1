import type { AppContext } from '../app/context';
import { X509Certificate } from 'node:crypto';
import type { HttpRequest } from '@azure/functions';
import { clientCertificatesConfig } from '../config/client-certificates';
import type { CoreConfig } from '../config/core';
import { BrokerError } from '../errors';
import { audit } from '../observability/audit';
import type { Logger } from '../observability/log';
import { certificateDenyEntryFor } from '../policy/evaluate';
import type { Policy } from '../policy/schema';
import { ACCESS_TOKEN_TYPE, JWT_TOKEN_TYPE } from '../exchange/types';
import type { RequestScope } from '../http/handler';
import { knownSubject, validateSubject } from './frontdoor';
import { CERTIFICATE_TENANT, type CertificateIdentity, type Principal } from './principal';

/**
 * Callers authenticated by a client certificate at the gateway (docs/client-certificates.md). APIM terminates TLS,
 * validates the certificate and forwards it (DER, base64) in X-Client-Certificate, a header it owns (any incoming
 * copy removed). The broker takes that header only from an authenticated, allowlisted gateway that may vouch
 * (BROKER_CERT_GATEWAY_OIDS) and verifies the certificate again itself: chain to a CA of BROKER_CLIENT_CA_BUNDLE,
 * validity window, an end-entity certificate with the clientAuth extended key usage, not self-signed, not revoked
 * (the live policy's `denyCertificates`). Every refusal names the check that failed. node:crypto only.
 */

/** The header the gateway owns. */
const CLIENT_CERT_HEADER = 'x-client-certificate';

/**
 * RFC 8693 `subject_token_type` of a certificate exchange (a private URI; RFC 8693 §3 allows any URI): the subject
 * is the certificate the gateway forwarded in X-Client-Certificate; `subject_token` is its SHA-256 thumbprint.
 */
export const CLIENT_CERT_TOKEN_TYPE = 'urn:token-broker:token-type:client-certificate';

/** Longest accepted header: base64 of a 12 KiB certificate (a client certificate is typically 1-2 KiB). */
export const MAX_CERT_HEADER_CHARS = 16384;

const CLIENT_AUTH_EKU = '1.3.6.1.5.5.7.3.2';

type CertificateCheck = 'self_signed' | 'chain' | 'validity' | 'key_usage' | 'revocation';

function refused(check: CertificateCheck, reason: string, message: string): BrokerError {
  return new BrokerError('certificate_invalid', `The client certificate failed the ${check} check: ${message}`, {
    party: 'subject',
    detail: { check, failure: reason },
  });
}

function malformed(reason: string, message: string): BrokerError {
  return new BrokerError('certificate_malformed', message, { detail: { header: 'X-Client-Certificate', failure: reason } });
}

/** The raw header value, or undefined when absent (an empty header is malformed, not absent). */
export function clientCertificateHeader(req: HttpRequest): string | undefined {
  const v = req.headers.get(CLIENT_CERT_HEADER);
  return v === null ? undefined : v;
}

/** The DER certificate of a header value: one standard-base64 DER X.509 certificate, nothing else. */
function decodeCertificateHeader(value: string): X509Certificate {
  const v = value.trim();
  if (v.length === 0) throw malformed('empty', 'The X-Client-Certificate header is empty.');
  if (v.length > MAX_CERT_HEADER_CHARS)
    throw malformed('too_large', `The X-Client-Certificate header exceeds ${MAX_CERT_HEADER_CHARS} characters.`);
  // Repeated headers reach the Function joined by ", " (Fetch Headers): never part of base64.
  if (/[,\s]/.test(v)) throw malformed('repeated', 'The X-Client-Certificate header must appear once and hold one certificate.');
  if (!/^[A-Za-z0-9+/]+={0,2}$/.test(v) || v.length % 4 !== 0)
    throw malformed('base64', 'The X-Client-Certificate header must be the base64 of a DER certificate.');
  const der = Buffer.from(v, 'base64');
  if (!derSpansBuffer(der)) throw malformed('der', 'The X-Client-Certificate header is not one DER certificate.');
  try {
    return new X509Certificate(der);
  } catch {
    throw malformed('der', 'The X-Client-Certificate header is not one DER certificate.');
  }
}

/** One DER SEQUENCE exactly filling the buffer (no PEM, no trailing bytes). */
function derSpansBuffer(der: Buffer): boolean {
  if (der.length < 2 || der[0] !== 0x30) return false;
  const first = der[1]!;
  if (first < 0x80) return 2 + first === der.length;
  const n = first & 0x7f;
  if (n === 0 || n > 4 || der.length < 2 + n) return false;
  let len = 0;
  for (let i = 0; i < n; i++) len = len * 256 + der[2 + i]!;
  return 2 + n + len === der.length;
}

/** A DN as one line: Node prints one attribute per line, in certificate order. */
function dnOf(name: string): string {
  return name.split('\n').filter(Boolean).join(', ');
}

function hex(fingerprint: string): string {
  return fingerprint.replace(/:/g, '').toLowerCase();
}

/** DNS and URI names of Node's subjectAltName string (`DNS:a, URI:b`; values with special characters JSON-quoted). */
function altNames(san: string | undefined): { dnsNames: string[]; uris: string[] } {
  const dnsNames: string[] = [];
  const uris: string[] = [];
  for (const m of (san ?? '').matchAll(/(?:^|, )([A-Za-z ]+):("(?:[^"\\]|\\.)*"|[^,]*)/g)) {
    let value = m[2]!;
    if (value.startsWith('"')) {
      try {
        value = JSON.parse(value) as string;
      } catch {
        continue;
      }
    }
    if (m[1] === 'DNS') dnsNames.push(value.toLowerCase());
    else if (m[1] === 'URI') uris.push(value);
  }
  return { dnsNames, uris };
}

function timeOf(t: string): number {
  const ms = Date.parse(t);
  if (Number.isNaN(ms)) throw malformed('der', 'The client certificate has an unreadable validity period.');
  return ms;
}

interface VerifyOptions {
  readonly anchors: readonly X509Certificate[];
  /** The live policy's certificate deny entries. */
  readonly policy: Pick<Policy, 'denyCertificates'>;
  readonly clockSkewSeconds: number;
  readonly now?: number;
}

/** Verify a certificate the gateway forwarded; the identity it stands for, or certificate_invalid naming the check. */
function verifyClientCertificate(cert: X509Certificate, opts: VerifyOptions): CertificateIdentity {
  const now = opts.now ?? Date.now();
  const skew = opts.clockSkewSeconds * 1000;
  if (cert.subject === cert.issuer && cert.verify(cert.publicKey))
    throw refused('self_signed', 'self_signed', 'it is self-signed; it must be issued by a trusted CA.');
  // Chain: issued (names and key identifiers) by a configured CA, and signed by its key.
  const named = opts.anchors.filter((a) => cert.checkIssued(a));
  if (named.length === 0)
    throw refused('chain', 'untrusted_issuer', 'its issuer is not one of the trusted CAs (BROKER_CLIENT_CA_BUNDLE).');
  const anchor = named.find((a) => cert.verify(a.publicKey));
  if (!anchor) throw refused('chain', 'signature', "its signature does not verify with the issuing CA's key.");
  if (timeOf(anchor.validTo) + skew < now || timeOf(anchor.validFrom) - skew > now)
    throw refused('chain', 'ca_not_valid', 'the issuing CA certificate is outside its validity period.');
  const notBefore = timeOf(cert.validFrom);
  const notAfter = timeOf(cert.validTo);
  if (notAfter + skew < now) throw refused('validity', 'expired', 'it has expired.');
  if (notBefore - skew > now) throw refused('validity', 'not_yet_valid', 'it is not valid yet.');
  if (cert.ca) throw refused('key_usage', 'ca_certificate', 'it is a CA certificate, not a client certificate.');
  // Node's `keyUsage` is the extended key usage list (undefined when the extension is absent: required here).
  if (!(cert.keyUsage ?? []).includes(CLIENT_AUTH_EKU))
    throw refused('key_usage', 'no_client_auth', 'it does not carry the clientAuth extended key usage.');
  const { dnsNames, uris } = altNames(cert.subjectAltName);
  const identity: CertificateIdentity = Object.freeze({
    thumbprint: hex(cert.fingerprint256),
    subject: dnOf(cert.subject),
    issuer: dnOf(cert.issuer),
    issuerThumbprint: hex(anchor.fingerprint256),
    serialNumber: cert.serialNumber.toLowerCase().replace(/^0+(?=.)/, ''),
    dnsNames: Object.freeze(dnsNames),
    uris: Object.freeze(uris),
    notBefore: new Date(notBefore).toISOString(),
    notAfter: new Date(notAfter).toISOString(),
  });
  const denied = certificateDenyEntryFor(opts.policy, identity, now);
  if (denied)
    throw refused(
      'revocation',
      denied.thumbprint !== undefined ? 'denied_thumbprint' : 'denied_serial',
      `it is revoked (policy denyCertificates${denied.id ? ` entry "${denied.id}"` : ''}).`,
    );
  return identity;
}

/** The principal a verified certificate becomes. */
export function certificatePrincipal(c: CertificateIdentity): Principal {
  return Object.freeze({
    kind: 'certificate',
    tenantId: CERTIFICATE_TENANT,
    objectId: c.thumbprint,
    roles: [],
    scopes: [],
    groups: [],
    audience: '',
    issuer: c.issuer,
    version: 'x509',
    expiresAt: Math.floor(Date.parse(c.notAfter) / 1000),
    claims: Object.freeze({}),
    certificate: c,
  });
}

/** What authenticateCertificate needs: the header, the authenticated gateway, and where refusals are audited. */
export interface CertificateRequest {
  readonly header: string;
  /** The gateway, already authenticated (authenticateClient). */
  readonly client: Principal;
  readonly core: Pick<CoreConfig, 'clockSkewSeconds'>;
  /** The app context: the live policy (its `denyCertificates`) and the settings, re-read as it says. */
  readonly app: Pick<AppContext, 'policy' | 'settings'>;
  readonly log: Logger;
  /** The audited action of a refusal (`token`, `query`, `explain`). */
  readonly action: string;
}

/**
 * The certificate subject of a request whose gateway is already authenticated: the gateway must be allowed to vouch,
 * the header well-formed, the certificate verified. A gateway that may not vouch and a certificate that fails a check
 * are audited (what was presented, by thumbprint); a malformed header is only answered (400).
 */
export async function authenticateCertificate(r: CertificateRequest): Promise<Principal> {
  const cfg = r.app.settings(clientCertificatesConfig); // a bad setting: 503 config_invalid naming it
  if (!(cfg.gatewayOids ?? []).some((oid) => oid.toLowerCase() === r.client.objectId)) {
    audit(r.log, {
      decision: 'deny',
      action: r.action,
      client: r.client,
      reason: 'client_not_allowed',
      extra: { failure: 'not_a_certificate_gateway' },
    });
    throw new BrokerError('client_not_allowed', 'This gateway may not vouch for client certificates.', {
      party: 'client',
      detail: { failure: 'not_a_certificate_gateway' },
    });
  }
  if (!cfg.caBundle || cfg.caBundle.length === 0)
    throw new BrokerError('config_invalid', 'BROKER_CLIENT_CA_BUNDLE is required when BROKER_CERT_GATEWAY_OIDS is set.');
  const cert = decodeCertificateHeader(r.header);
  const policy = await r.app.policy.current();
  try {
    return certificatePrincipal(
      verifyClientCertificate(cert, { anchors: cfg.caBundle, policy, clockSkewSeconds: r.core.clockSkewSeconds }),
    );
  } catch (e) {
    if (e instanceof BrokerError && e.code === 'certificate_invalid')
      audit(r.log, {
        decision: 'deny',
        action: r.action,
        client: r.client,
        reason: 'certificate_invalid',
        extra: {
          check: String(e.detail?.check),
          failure: String(e.detail?.failure),
          certThumbprint: hex(cert.fingerprint256),
          certSubject: dnOf(cert.subject),
          certIssuer: dnOf(cert.issuer),
        },
      });
    throw e;
  }
}

/** `subject_token` of a certificate exchange: the forwarded certificate's SHA-256 thumbprint (colons allowed). */
function assertThumbprintMatches(subjectToken: string, subject: Principal): void {
  const given = subjectToken.replace(/:/g, '').toLowerCase();
  if (given !== subject.certificate?.thumbprint)
    throw new BrokerError(
      'bad_request',
      'With the client-certificate subject_token_type, subject_token must be the SHA-256 thumbprint of the certificate in X-Client-Certificate.',
      { detail: { parameter: 'subject_token' } },
    );
}

/**
 * How the subject of an exchange or an explain is established, by `subject_token_type`: an Entra token (access_token
 * or jwt; `undefined` on explain, where the type is optional), or the client certificate the gateway forwarded in
 * X-Client-Certificate (CLIENT_CERT_TOKEN_TYPE, `subject_token` its thumbprint). The header is refused with an Entra
 * type, and the certificate type without the header: one request, one subject. Shape errors are thrown at once;
 * tokens and certificates are verified when the returned function runs.
 */
export function subjectResolver(s: {
  readonly req: HttpRequest;
  readonly scope: Pick<RequestScope, 'log' | 'app'>;
  readonly cfg: CoreConfig;
  readonly client: Principal;
  readonly subjectToken: string;
  readonly subjectTokenType: string | undefined;
  readonly action: string;
}): () => Principal | Promise<Principal> {
  const header = clientCertificateHeader(s.req);
  if (s.subjectTokenType === CLIENT_CERT_TOKEN_TYPE) {
    if (header === undefined)
      throw new BrokerError(
        'bad_request',
        `subject_token_type ${CLIENT_CERT_TOKEN_TYPE} needs the certificate in the X-Client-Certificate header (set by the gateway).`,
        { detail: { header: 'X-Client-Certificate' } },
      );
    return async () => {
      const subject = await authenticateCertificate({
        header,
        client: s.client,
        core: s.cfg,
        app: s.scope.app,
        log: s.scope.log,
        action: s.action,
      });
      assertThumbprintMatches(s.subjectToken, subject);
      return subject;
    };
  }
  if (s.subjectTokenType !== undefined && s.subjectTokenType !== ACCESS_TOKEN_TYPE && s.subjectTokenType !== JWT_TOKEN_TYPE)
    throw new BrokerError(
      'unsupported_token_type',
      `subject_token_type must be ${ACCESS_TOKEN_TYPE}, ${JWT_TOKEN_TYPE} or ${CLIENT_CERT_TOKEN_TYPE}.`,
    );
  if (header !== undefined)
    throw new BrokerError(
      'bad_request',
      `X-Client-Certificate is only accepted with subject_token_type ${CLIENT_CERT_TOKEN_TYPE}: a request has one subject.`,
      { detail: { header: 'X-Client-Certificate' } },
    );
  // An already verified token answers without a promise (what a cache hit finds).
  return () => knownSubject(s.subjectToken, s.cfg) ?? validateSubject(s.subjectToken, s.cfg);
}
