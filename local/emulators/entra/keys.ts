import { createHash, generateKeyPairSync, randomBytes, type KeyObject } from 'node:crypto';
import { type JWK } from 'jose';
import forge from 'node-forge';

/** The Entra emulator's signing keys: RSA-2048, published in the tenant's JWKS under their `kid`. */

export interface SigningKey {
  readonly kid: string;
  readonly privateKey: KeyObject;
  readonly publicJwk: JWK;
}

export function newSigningKey(): SigningKey {
  const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const der = publicKey.export({ type: 'spki', format: 'der' });
  const kid = createHash('sha1').update(der).update(randomBytes(4)).digest('base64url').slice(0, 27);
  const jwk = publicKey.export({ format: 'jwk' }) as JWK;
  return {
    kid,
    privateKey,
    publicJwk: { kty: 'RSA', use: 'sig', kid, x5t: kid, n: jwk.n, e: jwk.e, x5c: [selfSignedDer(privateKey, publicKey)] },
  };
}

/**
 * The key's certificate as Entra publishes it in `x5c` (one base64 DER certificate, CN=accounts.accesscontrol.windows.net:
 * agentgateway/agentgateway JWT tests, issue #477, a copy of a real Entra key).
 */
function selfSignedDer(privateKey: KeyObject, publicKey: KeyObject): string {
  const cert = forge.pki.createCertificate();
  cert.publicKey = forge.pki.publicKeyFromPem(publicKey.export({ type: 'spki', format: 'pem' }).toString());
  cert.serialNumber = '01' + forge.util.bytesToHex(forge.random.getBytesSync(15));
  cert.validity.notBefore = new Date(Date.now() - 86400_000);
  cert.validity.notAfter = new Date(Date.now() + 5 * 365 * 86400_000);
  const subject = [{ name: 'commonName', value: 'accounts.accesscontrol.windows.net' }];
  cert.setSubject(subject);
  cert.setIssuer(subject);
  cert.sign(
    forge.pki.privateKeyFromPem(privateKey.export({ type: 'pkcs1', format: 'pem' }).toString()),
    forge.md.sha256.create(),
  );
  return forge.util.encode64(forge.asn1.toDer(forge.pki.certificateToAsn1(cert)).getBytes());
}
