import { chmodSync } from 'node:fs';
import { SANDBOX } from './ids';
import { createClientCa, type ClientCa } from './pki';
import type { SandboxBuild } from './sandbox-build';

/**
 * Client certificates (callers authenticated by mTLS at the gateway, docs/client-certificates.md): a client CA the
 * broker trusts (BROKER_CLIENT_CA_BUNDLE) and the sandbox gateway (APIM's identity) allowed to vouch for certificates
 * it issues (BROKER_CERT_GATEWAY_OIDS). With `writeKey` (npm start) the CA's key is kept in the run directory, so
 * `npm run dev-cert` can issue certificates for the running sandbox.
 */
export function startSandboxClientCa(b: SandboxBuild, opts: { writeKey: boolean }): ClientCa {
  const ca = createClientCa();
  b.env.BROKER_CLIENT_CA_BUNDLE = b.writeCaFile('client-ca.pem', ca.certPem);
  b.env.BROKER_CERT_GATEWAY_OIDS = SANDBOX.gatewayObjectId;
  if (opts.writeKey) chmodSync(b.writeCaFile('client-ca.key', ca.keyPem), 0o600);
  b.services['Client certificates (CA for npm run dev-cert)'] = b.env.BROKER_CLIENT_CA_BUNDLE;
  return ca;
}
