import forge from 'node-forge';
import { createHash, generateKeyPairSync, X509Certificate } from 'node:crypto';

/**
 * A sandbox certificate authority for the emulators that must speak HTTPS/TLS (Key Vault, the Cloud SQL
 * server). Real X.509 certificates, generated at start, never written to the repository.
 */

export interface CertPair {
  readonly certPem: string;
  readonly keyPem: string;
}

export interface SandboxCa extends CertPair {
  /** Issue a server certificate for the given DNS names and IP addresses. */
  issueServer(opts: { commonName: string; dnsNames?: readonly string[]; ips?: readonly string[]; days?: number }): CertPair;
  /** Sign a client's public key (PEM) into a certificate, e.g. a Cloud SQL ephemeral certificate. */
  signPublicKey(publicKeyPem: string, opts: { commonName: string; validSeconds: number }): string;
  readonly cert: forge.pki.Certificate;
  readonly key: forge.pki.rsa.PrivateKey;
}

function serial(): string {
  return '01' + forge.util.bytesToHex(forge.random.getBytesSync(15));
}

/** A self-signed CA certificate valid for a year (backdated an hour), signed with `keys`. */
function selfSignedCaCert(
  keys: { publicKey: forge.pki.rsa.PublicKey; privateKey: forge.pki.rsa.PrivateKey },
  subject: { name: string; value: string }[],
  keyUsage: Record<string, boolean>,
): forge.pki.Certificate {
  const cert = forge.pki.createCertificate();
  cert.publicKey = keys.publicKey;
  cert.serialNumber = serial();
  cert.validity.notBefore = new Date(Date.now() - 3600_000);
  cert.validity.notAfter = new Date(Date.now() + 365 * 86400_000);
  cert.setSubject(subject);
  cert.setIssuer(subject);
  cert.setExtensions([
    { name: 'basicConstraints', cA: true, critical: true },
    { name: 'keyUsage', keyCertSign: true, cRLSign: true, ...keyUsage, critical: true },
    { name: 'subjectKeyIdentifier' },
  ]);
  cert.sign(keys.privateKey, forge.md.sha256.create());
  return cert;
}

export function createCa(commonName = 'Token Broker Sandbox CA', bits = 2048): SandboxCa {
  const keys = forge.pki.rsa.generateKeyPair({ bits, e: 0x10001 });
  const cert = selfSignedCaCert(
    keys,
    [
      { name: 'commonName', value: commonName },
      { name: 'organizationName', value: 'token-broker sandbox' },
    ],
    { digitalSignature: true },
  );
  const caCertPem = forge.pki.certificateToPem(cert);

  const issue = (publicKey: forge.pki.PublicKey, cn: string, seconds: number, exts: object[]): forge.pki.Certificate => {
    const c = forge.pki.createCertificate();
    c.publicKey = publicKey;
    c.serialNumber = serial();
    c.validity.notBefore = new Date(Date.now() - 60_000);
    c.validity.notAfter = new Date(Date.now() + seconds * 1000);
    c.setSubject([{ name: 'commonName', value: cn }]);
    c.setIssuer(cert.subject.attributes);
    c.setExtensions(exts);
    c.sign(keys.privateKey, forge.md.sha256.create());
    return c;
  };

  return {
    cert,
    key: keys.privateKey,
    certPem: caCertPem,
    keyPem: forge.pki.privateKeyToPem(keys.privateKey),
    issueServer({ commonName: cn, dnsNames = [], ips = [], days = 30 }) {
      const k = forge.pki.rsa.generateKeyPair({ bits: 2048, e: 0x10001 });
      const altNames = [...dnsNames.map((value) => ({ type: 2, value })), ...ips.map((ip) => ({ type: 7, ip }))];
      const c = issue(k.publicKey, cn, days * 86400, [
        { name: 'basicConstraints', cA: false },
        { name: 'keyUsage', digitalSignature: true, keyEncipherment: true, critical: true },
        { name: 'extKeyUsage', serverAuth: true },
        ...(altNames.length ? [{ name: 'subjectAltName', altNames }] : []),
      ]);
      return { certPem: forge.pki.certificateToPem(c), keyPem: forge.pki.privateKeyToPem(k.privateKey) };
    },
    signPublicKey(publicKeyPem, { commonName: cn, validSeconds }) {
      const pub = forge.pki.publicKeyFromPem(publicKeyPem);
      const c = issue(pub, cn, validSeconds, [
        { name: 'basicConstraints', cA: false },
        { name: 'keyUsage', digitalSignature: true, keyEncipherment: true, critical: true },
        { name: 'extKeyUsage', clientAuth: true },
      ]);
      return forge.pki.certificateToPem(c);
    },
  };
}

// ---- Client certificates (callers authenticated by mTLS at the gateway, docs/client-certificates.md) ----

/** A client certificate, with what the gateway forwards (`base64`, the DER) and what a policy names. */
export interface ClientCert extends CertPair {
  readonly der: Buffer;
  /** Base64 of the DER: the X-Client-Certificate header value. */
  readonly base64: string;
  /** SHA-256 of the DER, lower-case hex. */
  readonly thumbprint: string;
  /** Lower-case hex. */
  readonly serialNumber: string;
}

export interface ClientCertOptions {
  readonly commonName: string;
  readonly organization?: string;
  readonly dnsNames?: readonly string[];
  readonly uris?: readonly string[];
  readonly notBefore?: Date;
  readonly notAfter?: Date;
  /** Include the clientAuth extended key usage (default true; false issues a serverAuth-only certificate). */
  readonly clientAuth?: boolean;
}

/** A CA issuing client certificates: the sandbox's (npm start, `npm run dev-cert`) and the tests'. */
export interface ClientCa extends CertPair {
  /** The CA's subject DN as the broker prints it (what a policy rule's `certificate.issuer` names). */
  readonly subjectDn: string;
  /** SHA-256 of the CA certificate (what `certificate.issuerThumbprint` names). */
  readonly thumbprint: string;
  issueClient(opts: ClientCertOptions): ClientCert;
}

/** An RSA key pair from node:crypto (native, far faster than forge's), as forge keys. */
function rsaKeys(bits = 2048): { publicKey: forge.pki.rsa.PublicKey; privateKey: forge.pki.rsa.PrivateKey } {
  const k = generateKeyPairSync('rsa', {
    modulusLength: bits,
    publicKeyEncoding: { type: 'spki', format: 'pem' },
    privateKeyEncoding: { type: 'pkcs8', format: 'pem' },
  });
  return { publicKey: forge.pki.publicKeyFromPem(k.publicKey), privateKey: forge.pki.privateKeyFromPem(k.privateKey) };
}

function clientCertOf(c: forge.pki.Certificate, key: forge.pki.rsa.PrivateKey): ClientCert {
  const der = Buffer.from(forge.asn1.toDer(forge.pki.certificateToAsn1(c)).getBytes(), 'binary');
  return {
    certPem: forge.pki.certificateToPem(c),
    keyPem: forge.pki.privateKeyToPem(key),
    der,
    base64: der.toString('base64'),
    thumbprint: createHash('sha256').update(der).digest('hex'),
    serialNumber: new X509Certificate(der).serialNumber.toLowerCase().replace(/^0+(?=.)/, ''),
  };
}

function clientExtensions(o: ClientCertOptions): object[] {
  const altNames = [
    ...(o.dnsNames ?? []).map((value) => ({ type: 2, value })),
    ...(o.uris ?? []).map((value) => ({ type: 6, value })),
  ];
  return [
    { name: 'basicConstraints', cA: false },
    { name: 'keyUsage', digitalSignature: true, keyEncipherment: true, critical: true },
    o.clientAuth === false ? { name: 'extKeyUsage', serverAuth: true } : { name: 'extKeyUsage', clientAuth: true },
    ...(altNames.length ? [{ name: 'subjectAltName', altNames }] : []),
  ];
}

function clientSubject(o: ClientCertOptions): forge.pki.CertificateField[] {
  return [
    ...(o.organization ? [{ name: 'organizationName', value: o.organization }] : []),
    { name: 'commonName', value: o.commonName },
  ];
}

/** A client CA from its PEM certificate and key (`npm run dev-cert` loads the running sandbox's). */
export function loadClientCa(certPem: string, keyPem: string): ClientCa {
  const cert = forge.pki.certificateFromPem(certPem);
  const key = forge.pki.privateKeyFromPem(keyPem);
  const x = new X509Certificate(certPem);
  return {
    certPem,
    keyPem,
    subjectDn: x.subject.split('\n').filter(Boolean).join(', '),
    thumbprint: x.fingerprint256.replace(/:/g, '').toLowerCase(),
    issueClient(o) {
      const k = rsaKeys();
      const c = clientCertificate(o, k.publicKey, cert.subject.attributes);
      c.sign(key, forge.md.sha256.create());
      return clientCertOf(c, k.privateKey);
    },
  };
}

/** An unsigned client certificate of `o` (30 days by default, backdated a minute) issued by `issuer`. */
function clientCertificate(
  o: ClientCertOptions,
  publicKey: forge.pki.rsa.PublicKey,
  issuer: forge.pki.CertificateField[],
): forge.pki.Certificate {
  const c = forge.pki.createCertificate();
  c.publicKey = publicKey;
  c.serialNumber = serial();
  c.validity.notBefore = o.notBefore ?? new Date(Date.now() - 60_000);
  c.validity.notAfter = o.notAfter ?? new Date(Date.now() + 30 * 86400_000);
  c.setSubject(clientSubject(o));
  c.setIssuer(issuer);
  c.setExtensions(clientExtensions(o));
  return c;
}

/** A new client CA (RSA 2048, one year). */
export function createClientCa(commonName = 'Token Broker Sandbox Client CA', organization = 'token-broker sandbox'): ClientCa {
  const k = rsaKeys();
  const cert = selfSignedCaCert(
    k,
    [
      { name: 'organizationName', value: organization },
      { name: 'commonName', value: commonName },
    ],
    {},
  );
  return loadClientCa(forge.pki.certificateToPem(cert), forge.pki.privateKeyToPem(k.privateKey));
}

/** A self-signed certificate with the clientAuth usage: what no trusted CA issued. */
export function selfSignedClient(o: ClientCertOptions): ClientCert {
  const k = rsaKeys();
  const c = clientCertificate(o, k.publicKey, clientSubject(o));
  c.sign(k.privateKey, forge.md.sha256.create());
  return clientCertOf(c, k.privateKey);
}
