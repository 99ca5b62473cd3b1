import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { SANDBOX } from './ids';
import { startEntra, type EntraEmulator } from './emulators/entra';
import { startManagedIdentity, type ManagedIdentityEmulator } from './emulators/managed-identity';
import { startKeyVault, type KeyVaultEmulator } from './emulators/keyvault';
import { createCa } from './pki';
import { GoogleState } from './emulators/google/state';
import { startGoogleIam, type GoogleIamEmulator } from './emulators/google/iam';
import { startGoogleOAuth, type GoogleOAuthEmulator } from './emulators/google/oauth';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';

/**
 * The local sandbox: every emulator the broker talks to, on loopback, plus the app settings that
 * point the broker at them. Tests start it on ephemeral ports; `npm start` on the fixed ports of
 * local/ids.ts (so `func start` with local.settings.json finds them too).
 */

export interface SandboxOptions {
  /** Use the fixed ports of local/ids.ts (npm start), else ephemeral ports (tests, benchmarks). */
  fixedPorts?: boolean;
  /** Policy file (default local/sample-policy.json). */
  policyPath?: string;
  /** Serve the Entra emulator's mint endpoint for `npm run dev-token`. */
  allowMint?: boolean;
  /** Extra settings to layer over the generated ones. */
  env?: Record<string, string>;
}

export interface Sandbox {
  /** App settings for the broker, as local.settings.json `Values` would hold them. */
  readonly env: Record<string, string>;
  readonly entra: EntraEmulator;
  readonly msi: ManagedIdentityEmulator;
  /** Key Vault secrets emulator (HTTPS, sandbox CA); the Function's identity is a Secrets Officer. */
  readonly keyVault: KeyVaultEmulator;
  /** Google IAM service-account keys API and OAuth token endpoint (key rotation), over `googleState`. */
  readonly googleKeys: { readonly state: GoogleState; readonly iam: GoogleIamEmulator; readonly oauth: GoogleOAuthEmulator; readonly rotationPrincipal: string };
  /** Everything started, for printing. */
  readonly services: Record<string, string>;
  /** Copy env into process.env; returns a function that restores the previous values. */
  applyEnv(): () => void;
  stop(): Promise<void>;
}

export const SAMPLE_POLICY = resolve(__dirname, '..', '..', 'local', 'sample-policy.json');

function samplePolicyPath(): string {
  // Works from local/ (ts-jest) and from dist/local/ (compiled).
  const candidates = [resolve(__dirname, 'sample-policy.json'), SAMPLE_POLICY];
  return candidates.find((c) => existsSync(c)) ?? candidates[0]!;
}

export async function startSandbox(opts: SandboxOptions = {}): Promise<Sandbox> {
  const stops: (() => Promise<void>)[] = [];
  const port = (p: number) => (opts.fixedPorts ? p : 0);
  try {
    const entra = await startEntra({ tenants: [SANDBOX.tenantId], port: port(SANDBOX.ports.entra), allowMintEndpoint: opts.allowMint });
    stops.push(() => entra.close());
    const msi = await startManagedIdentity({ entra, port: port(SANDBOX.ports.managedIdentity) });
    stops.push(() => msi.close());
    const identityHeader = opts.fixedPorts ? SANDBOX.identityHeader : msi.secretHeader;
    if (opts.fixedPorts) Object.assign(msi, { secretHeader: identityHeader });

    const env: Record<string, string> = {
      ENTRA_AUTHORITY_HOST: entra.url,
      BROKER_ALLOWED_TENANTS: SANDBOX.tenantId,
      BROKER_CLIENT_AUDIENCES: SANDBOX.clientAudience,
      BROKER_ALLOWED_CLIENT_OIDS: SANDBOX.gatewayObjectId,
      BROKER_SUBJECT_AUDIENCES: SANDBOX.subjectAudience,
      BROKER_POLICY_PATH: opts.policyPath ?? samplePolicyPath(),
      BROKER_ADMIN_ROLE: SANDBOX.adminRole,
      IDENTITY_ENDPOINT: msi.endpoint,
      IDENTITY_HEADER: identityHeader,
      AZURE_CLIENT_ID: msi.clientId,
    };
    const services: Record<string, string> = {
      'Entra ID (OIDC, JWKS)': `${entra.url}/${SANDBOX.tenantId}/v2.0/.well-known/openid-configuration`,
      'Managed identity endpoint': msi.endpoint,
    };

    // ---- Key Vault (secrets) ----
    const kvCa = createCa('Token Broker Sandbox Key Vault CA');
    const keyVault = await startKeyVault({ entra, ca: kvCa, port: port(SANDBOX.ports.keyVault), access: { [msi.objectId]: 'officer' } });
    stops.push(() => keyVault.close());
    const kvCaDir = opts.fixedPorts ? STATE_DIR : mkdtempSync(join(tmpdir(), 'broker-kv-'));
    mkdirSync(kvCaDir, { recursive: true });
    const kvCaFile = join(kvCaDir, 'keyvault-ca.pem');
    writeFileSync(kvCaFile, kvCa.certPem);
    if (!opts.fixedPorts) stops.push(async () => rmSync(kvCaDir, { recursive: true, force: true }));
    env.KEY_VAULT_URL = keyVault.vaultUrl;
    env.KEY_VAULT_CA_FILE = kvCaFile;
    services['Key Vault (secrets, HTTPS)'] = keyVault.vaultUrl;
    // ---- end Key Vault ----

    // ---- Google service-account keys (rotation): IAM keys API + OAuth token endpoint ----
    // TODO(merge): use the sandbox's single GoogleState once the Cloud SQL block creates it.
    const googleState = new GoogleState();
    const g = SANDBOX.google;
    for (const sa of [g.readerServiceAccount, g.analystServiceAccount]) if (!googleState.serviceAccounts.has(sa)) googleState.addServiceAccount(sa);
    const googleOauth = await startGoogleOAuth({ state: googleState, port: port(7112) });
    stops.push(() => googleOauth.close());
    const googleIam = await startGoogleIam({ state: googleState, tokenUri: googleOauth.tokenUrl, port: port(7111) });
    stops.push(() => googleIam.close());
    // The Function's federated identity (workload identity pool principal of its managed identity) administers keys.
    const rotationPrincipal = `principal://iam.googleapis.com/projects/${g.projectNumber}/locations/global/workloadIdentityPools/${g.poolId}/subject/${msi.objectId}`;
    googleIam.grantKeyAdmin(rotationPrincipal);
    env.GOOGLE_IAM_ENDPOINT = googleIam.endpoint;
    env.GOOGLE_OAUTH_TOKEN_URL = googleOauth.tokenUrl;
    env.ROTATION_MANAGED_KEYS = `${g.readerServiceAccount}=orders-reader-sa-key`;
    env.ROTATION_SCHEDULE = '0 30 2 * * *'; // the Functions host resolves %ROTATION_SCHEDULE% itself: it must be set
    env.ROTATION_WIF_AUDIENCE = `//iam.googleapis.com/projects/${g.projectNumber}/locations/global/workloadIdentityPools/${g.poolId}/providers/${g.providerId}`;
    services['Google IAM (service-account keys)'] = `${googleIam.endpoint}/v1/projects/-/serviceAccounts/{email}/keys`;
    services['Google OAuth token endpoint'] = googleOauth.tokenUrl;
    const googleKeys = { state: googleState, iam: googleIam, oauth: googleOauth, rotationPrincipal };
    // ---- end Google service-account keys ----

    Object.assign(env, opts.env ?? {});
    return {
      env,
      entra,
      msi,
      keyVault,
      googleKeys,
      services,
      applyEnv() {
        const prev: Record<string, string | undefined> = {};
        for (const [k, v] of Object.entries(env)) {
          prev[k] = process.env[k];
          process.env[k] = v;
        }
        return () => {
          for (const [k, v] of Object.entries(prev)) {
            if (v === undefined) delete process.env[k];
            else process.env[k] = v;
          }
        };
      },
      async stop() {
        for (const s of stops.reverse()) await s().catch(() => undefined);
      },
    };
  } catch (e) {
    for (const s of stops.reverse()) await s().catch(() => undefined);
    throw e;
  }
}

/** Where `npm start` records what it started, for `npm run dev-token`. */
export const STATE_DIR = resolve(process.cwd(), '.sandbox');

export function writeState(state: Record<string, unknown>): string {
  mkdirSync(STATE_DIR, { recursive: true });
  const file = join(STATE_DIR, 'sandbox.json');
  writeFileSync(file, JSON.stringify(state, null, 2) + '\n');
  return file;
}
