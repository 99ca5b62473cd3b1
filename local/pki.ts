import forge from 'node-forge';

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

export function createCa(commonName = 'Token Broker Sandbox CA', bits = 2048): SandboxCa {
  const keys = forge.pki.rsa.generateKeyPair({ bits, e: 0x10001 });
  const cert = forge.pki.createCertificate();
  cert.publicKey = keys.publicKey;
  cert.serialNumber = serial();
  cert.validity.notBefore = new Date(Date.now() - 3600_000);
  cert.validity.notAfter = new Date(Date.now() + 365 * 86400_000);
  const attrs = [
    { name: 'commonName', value: commonName },
    { name: 'organizationName', value: 'token-broker sandbox' },
  ];
  cert.setSubject(attrs);
  cert.setIssuer(attrs);
  cert.setExtensions([
    { name: 'basicConstraints', cA: true, critical: true },
    { name: 'keyUsage', keyCertSign: true, cRLSign: true, digitalSignature: true, critical: true },
    { name: 'subjectKeyIdentifier' },
  ]);
  cert.sign(keys.privateKey, forge.md.sha256.create());
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
