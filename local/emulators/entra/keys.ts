import { createHash, generateKeyPairSync, randomBytes, type KeyObject } from 'node:crypto';
import { exportJWK, type JWK } from 'jose';

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
  return { kid, privateKey, publicJwk: { kty: 'RSA', use: 'sig', kid, x5t: kid, n: jwk.n, e: jwk.e } };
}

/** Export a key's public JWK (for tests that build their own key sets). */
export async function publicJwkOf(key: KeyObject): Promise<JWK> {
  return exportJWK(key);
}
