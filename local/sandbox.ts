import { mkdirSync, mkdtempSync, readlinkSync, renameSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { basename, join, resolve } from 'node:path';
import { SANDBOX } from './ids';
import type { EntraEmulator } from './emulators/entra';
import type { ManagedIdentityEmulator } from './emulators/managed-identity';
import type { SqlAdminEmulator } from './emulators/google/sqladmin';
import type { GoogleState } from './emulators/google/state';
import type { CloudSqlServer } from './emulators/cloudsql-server';
import type { SandboxPostgres } from './postgres';
import type { KeyVaultEmulator } from './emulators/keyvault';
import type { CosmosEmulator } from './emulators/cosmos';
import type { CosmosManagementEmulator } from './emulators/cosmos/management';
import { faultOptionsFromEnv, type Emulator, type EmulatorFaultOptions } from './emulators/harness';
import { createSandboxBuild, samplePolicyPath } from './sandbox-build';
import { startSandboxClientCa } from './sandbox-client-certificates';
import type { ClientCa } from './pki';
import {
  startAzureIdentity,
  startSandboxCosmos,
  startSandboxKeyVault,
  startSandboxStorage,
  type SandboxStorage,
} from './sandbox-azure';
import {
  keyPropagationFromEnv,
  startGoogleFederation,
  startGoogleKeys,
  type GoogleKeysSandbox,
  type GoogleSandbox,
} from './sandbox-google';
import { startSandboxCloudSql, startSandboxSqlAdminOnly, type SandboxCloudSql } from './sandbox-cloudsql';

export { type GoogleKeysSandbox, type GoogleSandbox } from './sandbox-google';

/**
 * The local sandbox: every emulator the broker talks to, on loopback, plus the app settings that
 * point the broker at them. The clouds' parts start in local/sandbox-azure.ts, local/sandbox-google.ts and
 * local/sandbox-cloudsql.ts (context: local/sandbox-build.ts); this module composes them. Tests start it on ephemeral ports; `npm start` on the fixed ports of
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
  /**
   * Directory for this run's files (the Key Vault and Cosmos CA bundles). Given by `npm start` (its per-run
   * directory, see createRunDir); default: a fresh temporary directory removed by stop(). Never shared by two runs.
   */
  stateDir?: string;
  /**
   * Cloud SQL / PostgreSQL (query function): SQL Admin emulator, the instance's TLS endpoint on
   * HOST:3307 and a PostgreSQL (embedded, or SANDBOX_POSTGRES_URL). Default: on with fixedPorts
   * (npm start), off otherwise (it costs a PostgreSQL and port 3307). Tests pass their own loopback
   * host (one per jest worker, e.g. 127.0.0.(10+JEST_WORKER_ID)): the connector always dials port 3307.
   */
  cloudSql?: boolean | { host?: string; postgresUrl?: string };
  /**
   * Latency and 429 throttling of the HTTP emulators: `all` applies to every one, `byName` (emulator name,
   * e.g. `google-sts`, `cosmos`) overrides it per emulator. Without it, SANDBOX_EMULATOR_LATENCY_MS and
   * SANDBOX_EMULATOR_THROTTLE (see faultOptionsFromEnv), limited to the names in SANDBOX_EMULATOR_FAULTS_ONLY
   * when set, apply. Changeable later with `setEmulatorFaults`.
   */
  emulatorFaults?: EmulatorFaults;
  /**
   * Blob Storage (Azurite, HTTPS + OAuth): the live policy (BROKER_POLICY_URL, seeded from `policyPath`) and the
   * rotation lease. Default: on with fixedPorts (npm start), off otherwise (the policy is then the file
   * BROKER_POLICY_PATH, and a real rotation run has no lease).
   */
  storage?: boolean;
  /**
   * How long a newly created Google service-account key is refused by the OAuth token endpoint, ms (Google: a new key
   * may need a minute or more). Default: SANDBOX_GOOGLE_KEY_PROPAGATION_MS, else 3000.
   */
  googleKeyPropagationMs?: number;
}

export interface EmulatorFaults {
  readonly all?: EmulatorFaultOptions;
  readonly byName?: Readonly<Record<string, EmulatorFaultOptions>>;
}

/** The faults the environment asks for (npm start, the benchmarks' child processes). */
export function emulatorFaultsFromEnv(env: NodeJS.ProcessEnv = process.env): EmulatorFaults | undefined {
  const f = faultOptionsFromEnv(env);
  if (!f) return undefined;
  const only = env.SANDBOX_EMULATOR_FAULTS_ONLY?.split(',')
    .map((s) => s.trim())
    .filter(Boolean);
  return only?.length ? { byName: Object.fromEntries(only.map((n) => [n, f])) } : { all: f };
}

export interface Sandbox {
  /** App settings for the broker, as local.settings.json `Values` would hold them. */
  readonly env: Record<string, string>;
  readonly entra: EntraEmulator;
  readonly msi: ManagedIdentityEmulator;
  readonly google: GoogleSandbox;
  /** Cloud SQL Admin API emulator (always; the instance's endpoints only when `cloudSql` is on); `sqlAdmin.state` is the Google state it checks tokens in. */
  readonly sqlAdmin?: SqlAdminEmulator & { readonly state: GoogleState };
  /** The Cloud SQL instance's server-side TLS endpoint on port 3307. */
  readonly cloudSql?: CloudSqlServer;
  /** The PostgreSQL behind it. */
  readonly postgres?: SandboxPostgres;
  /** The CA of client certificates (BROKER_CLIENT_CA_BUNDLE); the sandbox gateway may vouch for them. */
  readonly clientCa: ClientCa;
  /** Key Vault secrets emulator (HTTPS, sandbox CA); the Function's identity is a Secrets Officer. */
  readonly keyVault: KeyVaultEmulator;
  /** CosmosDB gateway emulator (HTTPS, sandbox CA); its primary key is in Key Vault as `cosmosKeySecret`. */
  readonly cosmos: CosmosEmulator & { readonly keySecret: string };
  /** The keyless CosmosDB account (disableLocalAuth, Entra ID data-plane RBAC only). */
  readonly cosmosKeyless: CosmosEmulator;
  /** Azure Resource Manager slice for Cosmos key rotation (listKeys, regenerateKey + polling). */
  readonly cosmosManagement: CosmosManagementEmulator;
  /** Google IAM service-account keys API and OAuth token endpoint (key rotation), over `googleState`. */
  readonly googleKeys: GoogleKeysSandbox;
  /** Azurite behind Storage's checks (`auth`) when `storage` is on; the policy blob is `policyBlobUrl` (at the proxy). */
  readonly storage?: SandboxStorage;
  /** Everything started, for printing. */
  readonly services: Record<string, string>;
  /** Every HTTP emulator of the sandbox. */
  readonly emulators: readonly Emulator[];
  /** Set latency and throttling (replaces what was set before; emulators not named get none). */
  setEmulatorFaults(faults: EmulatorFaults | undefined): void;
  /** Copy env into process.env; returns a function that restores the previous values. */
  applyEnv(): () => void;
  stop(): Promise<void>;
}

export async function startSandbox(opts: SandboxOptions = {}): Promise<Sandbox> {
  const stops: (() => Promise<void>)[] = [];
  const b = createSandboxBuild(opts, stops);
  const { env, services } = b;
  try {
    const { entra, msi } = await startAzureIdentity(b, opts);
    Object.assign(env, {
      ENTRA_AUTHORITY_HOST: entra.url,
      BROKER_ALLOWED_TENANTS: SANDBOX.tenantId,
      // Both spellings of each audience: v1.0 tokens carry the App ID URI asked for, v2.0 tokens the client id.
      BROKER_CLIENT_AUDIENCES: `${SANDBOX.clientAudience},${SANDBOX.clientAppId}`,
      BROKER_ALLOWED_CLIENT_OIDS: SANDBOX.gatewayObjectId,
      BROKER_SUBJECT_AUDIENCES: `${SANDBOX.subjectAudience},${SANDBOX.subjectAppId}`,
      BROKER_POLICY_PATH: opts.policyPath ?? samplePolicyPath(),
      BROKER_ADMIN_ROLE: SANDBOX.adminRole,
      MCP_RESOURCE_URL: SANDBOX.mcp.resourceUrl,
      MCP_AUDIENCES: SANDBOX.mcp.appId,
      MCP_ALLOWED_CLIENT_APP_IDS: `${SANDBOX.mcp.agentHostAppId},${SANDBOX.mcp.agentIdentityAppId}`,
      MCP_SCOPE_PREFIX: `${SANDBOX.mcp.appIdUri}/`,
      IDENTITY_ENDPOINT: msi.endpoint,
      IDENTITY_HEADER: msi.secretHeader,
      AZURE_CLIENT_ID: msi.clientId,
    });
    services['Entra ID (OIDC, JWKS)'] = `${entra.url}/${SANDBOX.tenantId}/v2.0/.well-known/openid-configuration`;
    services['Managed identity endpoint'] = msi.endpoint;

    // Google: STS + IAM Credentials (Cloud SQL token exchange). Every further Google emulator shares `google.state`.
    const google = await startGoogleFederation(b, entra, msi);

    // Cloud SQL / PostgreSQL (query function).
    const cloudSqlOpt = opts.cloudSql ?? opts.fixedPorts ?? false;
    const sql: Partial<SandboxCloudSql> = cloudSqlOpt
      ? await startSandboxCloudSql(b, google.state, typeof cloudSqlOpt === 'object' ? cloudSqlOpt : {})
      : await startSandboxSqlAdminOnly(b, google.state);

    const keyVault = await startSandboxKeyVault(b, entra, msi);
    const googleKeys = await startGoogleKeys(b, google.state, msi, opts.googleKeyPropagationMs ?? keyPropagationFromEnv());
    const { cosmos, cosmosKeyless, cosmosManagement } = await startSandboxCosmos(b, entra, msi, keyVault);
    // Client certificates (mTLS at the gateway): a client CA the broker trusts, the sandbox gateway allowed to vouch.
    const clientCa = startSandboxClientCa(b, { writeKey: opts.stateDir !== undefined });
    const storage =
      (opts.storage ?? opts.fixedPorts ?? false)
        ? await startSandboxStorage(b, opts.policyPath ?? samplePolicyPath(), entra, msi)
        : undefined;

    Object.assign(env, opts.env ?? {});
    const emulators: Emulator[] = [
      entra,
      msi,
      google.sts,
      google.iamcredentials,
      ...(sql.sqlAdmin ? [sql.sqlAdmin] : []),
      keyVault,
      googleKeys.oauth,
      googleKeys.iam,
      cosmos,
      cosmosKeyless,
      cosmosManagement,
    ];
    const setEmulatorFaults = (faults: EmulatorFaults | undefined) => {
      const names = new Set(emulators.map((e) => e.name));
      for (const n of Object.keys(faults?.byName ?? {}))
        if (!names.has(n)) throw new Error(`emulatorFaults: no emulator named "${n}" (${[...names].join(', ')})`);
      for (const e of emulators) {
        const f = faults?.byName?.[e.name] ?? faults?.all;
        e.setLatency(f?.latencyMs ?? 0);
        e.setThrottle(f?.throttle);
      }
    };
    setEmulatorFaults(opts.emulatorFaults ?? emulatorFaultsFromEnv());
    return {
      emulators,
      setEmulatorFaults,
      env,
      entra,
      msi,
      google,
      sqlAdmin: sql.sqlAdmin,
      cloudSql: sql.cloudSql,
      postgres: sql.postgres,
      keyVault,
      clientCa,
      cosmos,
      cosmosKeyless,
      cosmosManagement,
      googleKeys,
      storage,
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

/** Where `npm start` keeps its per-run directories (`run-PID-RANDOM/`) and the `current` link. */
const STATE_DIR = resolve(process.cwd(), '.sandbox');
/** The link to the fixed-port run's directory (what local.settings.json and `npm run dev-token` name). */
export const CURRENT_LINK = join(STATE_DIR, 'current');

/** A directory of this run's own: two sandboxes started from one checkout never write each other's files. */
export function createRunDir(): string {
  mkdirSync(STATE_DIR, { recursive: true });
  return mkdtempSync(join(STATE_DIR, `run-${process.pid}-`));
}

/**
 * Point `.sandbox/current` at this run (fixed ports only: the ports are exclusive, so at most one such run is
 * alive). Replaced atomically (a new link renamed over the old one).
 */
export function linkCurrent(runDir: string): void {
  const tmp = `${CURRENT_LINK}.${process.pid}`;
  rmSync(tmp, { force: true });
  symlinkSync(basename(runDir), tmp);
  renameSync(tmp, CURRENT_LINK);
}

/** Remove `.sandbox/current` if it still points at this run. */
export function unlinkCurrent(runDir: string): void {
  try {
    if (readlinkSync(CURRENT_LINK) === basename(runDir)) rmSync(CURRENT_LINK, { force: true });
  } catch {
    /* no link */
  }
}

/** Record what this run started (for `npm run dev-token` and tests) in its own directory. */
export function writeState(runDir: string, state: Record<string, unknown>): string {
  const file = join(runDir, 'sandbox.json');
  writeFileSync(file, JSON.stringify(state, null, 2) + '\n');
  return file;
}
