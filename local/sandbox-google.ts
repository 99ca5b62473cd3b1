import { existsSync, readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { SANDBOX } from './ids';
import type { SandboxBuild } from './sandbox-build';
import type { EntraEmulator } from './emulators/entra';
import type { ManagedIdentityEmulator } from './emulators/managed-identity';
import { startGoogleIam, type GoogleIamEmulator } from './emulators/google/iam';
import { startIamCredentials, type IamCredentialsEmulator } from './emulators/google/iamcredentials';
import { startGoogleOAuth, type GoogleOAuthEmulator } from './emulators/google/oauth';
import { GoogleState } from './emulators/google/state';
import {
  federatedPrincipal,
  providerAudience,
  startSts,
  type StsEmulator,
  type WorkloadIdentityProvider,
  type WorkforcePoolProvider,
  workforceAudience,
} from './emulators/google/sts';

/**
 * The Google side of the sandbox (Cloud SQL apart, see local/sandbox-cloudsql.ts): STS and IAM Credentials for the
 * keyless token exchange, then the IAM keys API and the OAuth token endpoint for key rotation. Every Google emulator
 * shares one GoogleState (service accounts, bindings, issued tokens).
 */

/** The Google emulators; every one of them shares `state` (service accounts, bindings, issued tokens). */
export interface GoogleSandbox {
  readonly state: GoogleState;
  readonly sts: StsEmulator;
  readonly iamcredentials: IamCredentialsEmulator;
  /** The workload identity pool provider trusting the sandbox Entra tenant. */
  readonly wif: WorkloadIdentityProvider;
  /** The Function's federated principal (what the service-account bindings name). */
  readonly functionPrincipal: string;
  /** The workforce pool provider of the caller identity mode (infra/gcp/workforce.tf). */
  readonly workforce: WorkforcePoolProvider;
}

/** Google IAM service-account keys API and OAuth token endpoint (key rotation), over the shared state. */
export interface GoogleKeysSandbox {
  readonly state: GoogleState;
  readonly iam: GoogleIamEmulator;
  readonly oauth: GoogleOAuthEmulator;
  readonly rotationPrincipal: string;
}

/**
 * An attribute of the workload identity provider (`attribute_condition`, `issuer_uri`) as infra/gcp/main.tf writes
 * it, with its `${var.NAME}` references replaced: the STS emulator enforces the very provider that is deployed.
 */
function terraformProviderAttribute(
  attribute: 'attribute_condition' | 'issuer_uri',
  vars: Readonly<Record<string, string>>,
): string {
  const candidates = [
    resolve(__dirname, '..', 'infra', 'gcp', 'main.tf'),
    resolve(__dirname, '..', '..', 'infra', 'gcp', 'main.tf'),
  ];
  const tf = readFileSync(candidates.find((c) => existsSync(c)) ?? candidates[0]!, 'utf8');
  const m = new RegExp(`^\\s*${attribute}\\s*=\\s*"((?:[^"\\\\]|\\\\.)*)"\\s*$`, 'm').exec(tf);
  if (!m) throw new Error(`infra/gcp/main.tf has no ${attribute}`);
  return m[1]!.replace(/\$\{var\.([a-z_]+)\}/g, (_, name: string) => {
    const v = vars[name];
    if (v === undefined) throw new Error(`${attribute} names var.${name}, which the sandbox does not set`);
    return v;
  });
}

/** The provider's `attribute_condition` as infra/gcp/main.tf writes it. */
function terraformAttributeCondition(vars: Readonly<Record<string, string>>): string {
  return terraformProviderAttribute('attribute_condition', vars);
}

/** SANDBOX_GOOGLE_KEY_PROPAGATION_MS (whole ms, 0–600000), default 3000; a bad value throws naming it. */
export function keyPropagationFromEnv(env: NodeJS.ProcessEnv = process.env): number {
  const raw = env.SANDBOX_GOOGLE_KEY_PROPAGATION_MS;
  if (raw === undefined || raw === '') return 3000;
  if (!/^\d+$/.test(raw) || Number(raw) > 600_000)
    throw new Error(`SANDBOX_GOOGLE_KEY_PROPAGATION_MS must be whole milliseconds between 0 and 600000, got "${raw}"`);
  return Number(raw);
}

/** STS + IAM Credentials (Cloud SQL token exchange): the pool provider trusts the sandbox tenant's managed identity. */
export async function startGoogleFederation(
  b: SandboxBuild,
  entra: EntraEmulator,
  msi: ManagedIdentityEmulator,
): Promise<GoogleSandbox> {
  const googleState = new GoogleState();
  const sandboxServiceAccounts = [SANDBOX.google.readerServiceAccount, SANDBOX.google.analystServiceAccount];
  for (const sa of sandboxServiceAccounts) googleState.addServiceAccount(sa);
  const wif: WorkloadIdentityProvider = {
    projectNumber: SANDBOX.google.projectNumber,
    poolId: SANDBOX.google.poolId,
    providerId: SANDBOX.google.providerId,
    // As Google's Azure guide and infra/gcp/main.tf configure it: the managed identity's v1.0 token for the WIF app
    // registration (issuer sts.windows.net, aud its App ID URI; local/emulators/managed-identity/).
    issuer: terraformProviderAttribute('issuer_uri', { azure_tenant_id: SANDBOX.tenantId }),
    discoveryUrl: `${entra.url}/${SANDBOX.tenantId}/.well-known/openid-configuration`,
    allowedAudiences: [SANDBOX.google.wifAppIdUri],
    // Exactly the condition infra/gcp/main.tf writes, for the sandbox's tenant and identity.
    attributeCondition: terraformAttributeCondition({
      azure_tenant_id: SANDBOX.tenantId,
      broker_identity_principal_id: msi.objectId,
    }),
  };
  const workforce = workforceProviderFromTerraform(entra);
  const sts = await startSts({
    state: googleState,
    providers: [wif],
    workforceProviders: [workforce],
    port: b.port(SANDBOX.ports.google),
  });
  b.onStop(() => sts.close());
  const iamcredentials = await startIamCredentials({ state: googleState, port: b.port(SANDBOX.ports.googleIamCredentials) });
  b.onStop(() => iamcredentials.close());
  // The Function's managed identity token has sub = its object id; the pool maps google.subject = assertion.sub.
  const functionPrincipal = federatedPrincipal(wif, msi.objectId);
  for (const sa of sandboxServiceAccounts) googleState.allowImpersonation(sa, functionPrincipal);
  Object.assign(b.env, {
    GOOGLE_AUTH_MODE: 'keyless',
    GOOGLE_WIF_AUDIENCE: providerAudience(wif),
    GOOGLE_WIF_SUBJECT_TOKEN_AUDIENCE: SANDBOX.google.wifAppIdUri,
    GOOGLE_STS_TOKEN_URL: `${sts.url}/v1/token`,
    GOOGLE_IAM_CREDENTIALS_ENDPOINT: iamcredentials.url,
    // Tests count upstream calls from a cold cache; npm start (fixed ports) prewarms as production does.
    GOOGLE_TOKEN_PREWARM: b.fixedPorts ? 'true' : 'false',
    CALLER_WORKFORCE_AUDIENCE: workforceAudience(workforce),
    CALLER_WORKFORCE_USER_PROJECT: SANDBOX.workforce.userProject,
  });
  b.services['Google STS'] = `${sts.url}/v1/token`;
  b.services['Google IAM Credentials'] = `${iamcredentials.url}/v1/projects/-/serviceAccounts/{email}:generateAccessToken`;
  return { state: googleState, sts, iamcredentials, wif, functionPrincipal, workforce };
}

/** infra/gcp/workforce.tf, read as the sandbox needs it: the provider's issuer, client id, mapping and condition. */
function workforceProviderFromTerraform(entra: Pick<EntraEmulator, 'url'>): WorkforcePoolProvider {
  const candidates = [
    resolve(__dirname, '..', 'infra', 'gcp', 'workforce.tf'),
    resolve(__dirname, '..', '..', 'infra', 'gcp', 'workforce.tf'),
  ];
  const tf = readFileSync(candidates.find((c) => existsSync(c)) ?? candidates[0]!, 'utf8');
  const vars: Record<string, string> = { azure_tenant_id: SANDBOX.tenantId };
  const subst = (v: string) => v.replace(/\$\{var\.([a-z_]+)\}/g, (_, n: string) => vars[n] ?? `\${var.${n}}`);
  const attr = (name: string): string => {
    const m = new RegExp(`^\\s*${name}\\s*=\\s*"((?:[^"\\\\]|\\\\.)*)"\\s*$`, 'm').exec(tf);
    if (!m) throw new Error(`infra/gcp/workforce.tf has no ${name}`);
    return subst(m[1]!);
  };
  const block = /attribute_mapping\s*=\s*\{([^}]*)\}/.exec(tf);
  if (!block) throw new Error('infra/gcp/workforce.tf has no attribute_mapping');
  const attributeMapping: Record<string, string> = {};
  for (const m of block[1]!.matchAll(/"([^"]+)"\s*=\s*"([^"]+)"/g)) attributeMapping[m[1]!] = m[2]!;
  const issuer = attr('issuer_uri');
  if (issuer.includes('${')) throw new Error(`workforce.tf issuer_uri names a variable the sandbox does not set: ${issuer}`);
  return {
    poolId: SANDBOX.workforce.poolId,
    providerId: SANDBOX.workforce.providerId,
    issuer,
    // The Entra emulator's v2.0 discovery document (its issuer is exactly `issuer`).
    discoveryUrl: `${entra.url}/${SANDBOX.tenantId}/v2.0/.well-known/openid-configuration`,
    clientId: SANDBOX.workforce.appId,
    attributeMapping,
    attributeCondition: attr('attribute_condition'),
  };
}

/**
 * Google service-account keys (rotation): IAM keys API + OAuth token endpoint, over the sandbox's single GoogleState
 * (shared with STS, IAM Credentials and SQL Admin).
 */
export async function startGoogleKeys(
  b: SandboxBuild,
  googleState: GoogleState,
  msi: ManagedIdentityEmulator,
  keyPropagationMs: number,
): Promise<GoogleKeysSandbox> {
  const g = SANDBOX.google;
  for (const sa of [g.readerServiceAccount, g.analystServiceAccount])
    if (!googleState.serviceAccounts.has(sa)) googleState.addServiceAccount(sa);
  googleState.keyPropagationMs = keyPropagationMs;
  const googleOauth = await startGoogleOAuth({ state: googleState, port: b.port(SANDBOX.ports.googleOAuth) });
  b.onStop(() => googleOauth.close());
  const googleIam = await startGoogleIam({
    state: googleState,
    tokenUri: googleOauth.tokenUrl,
    port: b.port(SANDBOX.ports.googleIam),
  });
  b.onStop(() => googleIam.close());
  // The Function's federated identity (workload identity pool principal of its managed identity) administers the keys
  // of the rotated accounts only (SA-level roles/iam.serviceAccountKeyAdmin, as infra/gcp/main.tf grants it).
  const rotationPrincipal = federatedPrincipal(g, msi.objectId);
  googleIam.grantKeyAdmin(rotationPrincipal, [g.readerServiceAccount]);
  b.env.GOOGLE_IAM_ENDPOINT = googleIam.endpoint;
  b.env.GOOGLE_OAUTH_TOKEN_URL = googleOauth.tokenUrl;
  b.env.ROTATION_MANAGED_KEYS = `${g.readerServiceAccount}=orders-reader-sa-key`;
  b.env.ROTATION_SCHEDULE = '0 30 2 * * *'; // the Functions host resolves %ROTATION_SCHEDULE% itself: it must be set
  // The rotation's own Google identity is the keyless source credential (GOOGLE_WIF_AUDIENCE, GOOGLE_STS_TOKEN_URL).
  b.services['Google IAM (service-account keys)'] = `${googleIam.endpoint}/v1/projects/-/serviceAccounts/{email}/keys`;
  b.services['Google OAuth token endpoint'] = googleOauth.tokenUrl;
  return { state: googleState, iam: googleIam, oauth: googleOauth, rotationPrincipal };
}
