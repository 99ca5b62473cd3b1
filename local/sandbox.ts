import { existsSync, mkdirSync, readFileSync, readlinkSync, renameSync, symlinkSync, writeFileSync } from 'node:fs';
import { basename, join, resolve } from 'node:path';
import { SANDBOX } from './ids';
import { startEntra, type EntraEmulator } from './emulators/entra';
import { startManagedIdentity, type ManagedIdentityEmulator } from './emulators/managed-identity';
import { GoogleState } from './emulators/google/state';
import {
  federatedPrincipal,
  providerAudience,
  startSts,
  type StsEmulator,
  type WorkloadIdentityProvider,
} from './emulators/google/sts';
import { startIamCredentials, type IamCredentialsEmulator } from './emulators/google/iamcredentials';
// ---- Cloud SQL / PostgreSQL (query function) ----
import { startSqlAdmin, type SqlAdminEmulator, type SqlInstance } from './emulators/google/sqladmin';
import { startCloudSqlServer, type CloudSqlServer } from './emulators/cloudsql-server';
import { iamDbUser, startPostgres, type SandboxPostgres } from './postgres';
import { verifyIamLoginToken } from './emulators/google/iam-login';
import { createCa } from './pki';
// ---- end Cloud SQL / PostgreSQL ----
import { startKeyVault, type KeyVaultEmulator } from './emulators/keyvault';
import { startGoogleIam, type GoogleIamEmulator } from './emulators/google/iam';
import { startGoogleOAuth, type GoogleOAuthEmulator } from './emulators/google/oauth';
import { mkdtempSync, rmSync } from 'node:fs';
import { startCosmos, type CosmosEmulator } from './emulators/cosmos';
import { startCosmosManagement, type CosmosManagementEmulator } from './emulators/cosmos/management';
import { startAzurite, type AzuriteEmulator } from './emulators/azurite';
import { tmpdir } from 'node:os';
import { faultOptionsFromEnv, type Emulator, type EmulatorFaultOptions } from './emulators/harness';

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
/** SANDBOX_GOOGLE_KEY_PROPAGATION_MS (whole ms, 0–600000), default 3000; a bad value throws naming it. */
export function keyPropagationFromEnv(env: NodeJS.ProcessEnv = process.env): number {
  const raw = env.SANDBOX_GOOGLE_KEY_PROPAGATION_MS;
  if (raw === undefined || raw === '') return 3000;
  if (!/^\d+$/.test(raw) || Number(raw) > 600_000)
    throw new Error(`SANDBOX_GOOGLE_KEY_PROPAGATION_MS must be whole milliseconds between 0 and 600000, got "${raw}"`);
  return Number(raw);
}

export function emulatorFaultsFromEnv(env: NodeJS.ProcessEnv = process.env): EmulatorFaults | undefined {
  const f = faultOptionsFromEnv(env);
  if (!f) return undefined;
  const only = env.SANDBOX_EMULATOR_FAULTS_ONLY?.split(',')
    .map((s) => s.trim())
    .filter(Boolean);
  return only?.length ? { byName: Object.fromEntries(only.map((n) => [n, f])) } : { all: f };
}

/** The Google emulators; every one of them shares `state` (service accounts, bindings, issued tokens). */
export interface GoogleSandbox {
  readonly state: GoogleState;
  readonly sts: StsEmulator;
  readonly iamcredentials: IamCredentialsEmulator;
  /** The workload identity pool provider trusting the sandbox Entra tenant. */
  readonly wif: WorkloadIdentityProvider;
  /** The Function's federated principal (what the service-account bindings name). */
  readonly functionPrincipal: string;
}

export interface Sandbox {
  /** App settings for the broker, as local.settings.json `Values` would hold them. */
  readonly env: Record<string, string>;
  readonly entra: EntraEmulator;
  readonly msi: ManagedIdentityEmulator;
  readonly google: GoogleSandbox;
  /** Cloud SQL Admin API emulator (when `cloudSql` is on); `sqlAdmin.state` is the Google state it checks tokens in. */
  readonly sqlAdmin?: SqlAdminEmulator & { readonly state: GoogleState };
  /** The Cloud SQL instance's server-side TLS endpoint on port 3307. */
  readonly cloudSql?: CloudSqlServer;
  /** The PostgreSQL behind it. */
  readonly postgres?: SandboxPostgres;
  /** Key Vault secrets emulator (HTTPS, sandbox CA); the Function's identity is a Secrets Officer. */
  readonly keyVault: KeyVaultEmulator;
  /** CosmosDB gateway emulator (HTTPS, sandbox CA); its primary key is in Key Vault as `cosmosKeySecret`. */
  readonly cosmos: CosmosEmulator & { readonly keySecret: string };
  /** The keyless CosmosDB account (disableLocalAuth, Entra ID data-plane RBAC only). */
  readonly cosmosKeyless: CosmosEmulator;
  /** Azure Resource Manager slice for Cosmos key rotation (listKeys, regenerateKey + polling). */
  readonly cosmosManagement: CosmosManagementEmulator;
  /** Google IAM service-account keys API and OAuth token endpoint (key rotation), over `googleState`. */
  readonly googleKeys: {
    readonly state: GoogleState;
    readonly iam: GoogleIamEmulator;
    readonly oauth: GoogleOAuthEmulator;
    readonly rotationPrincipal: string;
  };
  /** Azurite (when `storage` is on); the policy blob is `policyBlobUrl`. */
  readonly storage?: AzuriteEmulator & { readonly policyBlobUrl: string };
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

export const SAMPLE_POLICY = resolve(__dirname, '..', '..', 'local', 'sample-policy.json');

/**
 * An attribute of the workload identity provider (`attribute_condition`, `issuer_uri`) as infra/gcp/main.tf writes
 * it, with its `${var.NAME}` references replaced: the STS emulator enforces the very provider that is deployed.
 */
export function terraformProviderAttribute(
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
export function terraformAttributeCondition(vars: Readonly<Record<string, string>>): string {
  return terraformProviderAttribute('attribute_condition', vars);
}

function samplePolicyPath(): string {
  // Works from local/ (ts-jest) and from dist/local/ (compiled).
  const candidates = [resolve(__dirname, 'sample-policy.json'), SAMPLE_POLICY];
  return candidates.find((c) => existsSync(c)) ?? candidates[0]!;
}

// ---- Cloud SQL / PostgreSQL (query function) ----
/** Fixed port of the SQL Admin emulator under `npm start`. */
export const SQL_ADMIN_PORT = 7131;
export const SAMPLE_QUERIES = resolve(__dirname, '..', '..', 'local', 'queries.json');
function sampleQueriesPath(): string {
  const candidates = [resolve(__dirname, 'queries.json'), SAMPLE_QUERIES];
  return candidates.find((c) => existsSync(c)) ?? candidates[0]!;
}
// ---- end Cloud SQL / PostgreSQL ----

export async function startSandbox(opts: SandboxOptions = {}): Promise<Sandbox> {
  const stops: (() => Promise<void>)[] = [];
  const port = (p: number) => (opts.fixedPorts ? p : 0);
  try {
    const entra = await startEntra({
      tenants: [SANDBOX.tenantId],
      port: port(SANDBOX.ports.entra),
      allowMintEndpoint: opts.allowMint,
      // The tenant's app registrations, with the manifest default accessTokenAcceptedVersion (null: v1.0 tokens).
      apps: [
        { appId: SANDBOX.clientAppId, identifierUris: [SANDBOX.clientAudience] },
        { appId: SANDBOX.subjectAppId, identifierUris: [SANDBOX.subjectAudience] },
        { appId: SANDBOX.google.wifAppId, identifierUris: [SANDBOX.google.wifAppIdUri] },
        // The MCP resource: v2.0 tokens (aud = its client id), App ID URI = the local MCP URL.
        {
          appId: SANDBOX.mcp.appId,
          identifierUris: [SANDBOX.mcp.resourceUrl, SANDBOX.mcp.appIdUri],
          accessTokenAcceptedVersion: 2,
        },
      ],
    });
    stops.push(() => entra.close());
    const msi = await startManagedIdentity({
      entra,
      port: port(SANDBOX.ports.managedIdentity),
      // The identities of keyless Cosmos grants (user-assigned, attached to the Function App, selected by client_id).
      identities: [SANDBOX.cosmosKeyless.readerIdentity, SANDBOX.cosmosKeyless.writerIdentity],
      // The fixed-port sandbox uses a fixed header, so local.settings.json can name it.
      ...(opts.fixedPorts ? { secretHeader: SANDBOX.identityHeader } : {}),
    });
    stops.push(() => msi.close());
    const identityHeader = msi.secretHeader;

    const env: Record<string, string> = {
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
      IDENTITY_HEADER: identityHeader,
      AZURE_CLIENT_ID: msi.clientId,
    };
    const services: Record<string, string> = {
      'Entra ID (OIDC, JWKS)': `${entra.url}/${SANDBOX.tenantId}/v2.0/.well-known/openid-configuration`,
      'Managed identity endpoint': msi.endpoint,
    };

    // ---- Google: STS + IAM Credentials (Cloud SQL token exchange). Further Google emulators share `googleState`. ----
    const googleState = new GoogleState();
    const sandboxServiceAccounts = [SANDBOX.google.readerServiceAccount, SANDBOX.google.analystServiceAccount];
    for (const sa of sandboxServiceAccounts) googleState.addServiceAccount(sa);
    const wif: WorkloadIdentityProvider = {
      projectNumber: SANDBOX.google.projectNumber,
      poolId: SANDBOX.google.poolId,
      providerId: SANDBOX.google.providerId,
      // As Google's Azure guide and infra/gcp/main.tf configure it: the managed identity's v1.0 token for the WIF app
      // registration (issuer sts.windows.net, aud its App ID URI; local/emulators/managed-identity.ts).
      issuer: terraformProviderAttribute('issuer_uri', { azure_tenant_id: SANDBOX.tenantId }),
      discoveryUrl: `${entra.url}/${SANDBOX.tenantId}/.well-known/openid-configuration`,
      allowedAudiences: [SANDBOX.google.wifAppIdUri],
      // Exactly the condition infra/gcp/main.tf writes, for the sandbox's tenant and identity.
      attributeCondition: terraformAttributeCondition({
        azure_tenant_id: SANDBOX.tenantId,
        broker_identity_principal_id: msi.objectId,
      }),
    };
    const sts = await startSts({ state: googleState, providers: [wif], port: port(SANDBOX.ports.google) });
    stops.push(() => sts.close());
    const iamcredentials = await startIamCredentials({ state: googleState, port: port(SANDBOX.ports.google + 1) });
    stops.push(() => iamcredentials.close());
    // The Function's managed identity token has sub = its object id; the pool maps google.subject = assertion.sub.
    const functionPrincipal = federatedPrincipal(wif, msi.objectId);
    for (const sa of sandboxServiceAccounts) googleState.allowImpersonation(sa, functionPrincipal);
    Object.assign(env, {
      GOOGLE_AUTH_MODE: 'keyless',
      GOOGLE_WIF_AUDIENCE: providerAudience(wif),
      GOOGLE_WIF_SUBJECT_TOKEN_AUDIENCE: SANDBOX.google.wifAppIdUri,
      GOOGLE_STS_TOKEN_URL: `${sts.url}/v1/token`,
      GOOGLE_IAM_CREDENTIALS_ENDPOINT: iamcredentials.url,
      // Tests count upstream calls from a cold cache; npm start (fixed ports) prewarms as production does.
      GOOGLE_TOKEN_PREWARM: opts.fixedPorts ? 'true' : 'false',
    });
    services['Google STS'] = `${sts.url}/v1/token`;
    services['Google IAM Credentials'] = `${iamcredentials.url}/v1/projects/-/serviceAccounts/{email}:generateAccessToken`;
    const google: GoogleSandbox = { state: googleState, sts, iamcredentials, wif, functionPrincipal };
    // ---- end Google ----

    // ---- Cloud SQL / PostgreSQL (query function) ----
    let sqlAdmin: (SqlAdminEmulator & { readonly state: GoogleState }) | undefined;
    let cloudSql: CloudSqlServer | undefined;
    let postgres: SandboxPostgres | undefined;
    const cloudSqlOpt = opts.cloudSql ?? opts.fixedPorts ?? false;
    if (cloudSqlOpt) {
      const g = SANDBOX.google;
      const host = (typeof cloudSqlOpt === 'object' && cloudSqlOpt.host) || '127.0.0.1';
      // The Google state shared with STS and IAM Credentials: SQL Admin checks the tokens they issue.
      const state = googleState;
      const pgHandle = await startPostgres({
        database: g.database,
        iamUsers: [
          { user: iamDbUser(g.readerServiceAccount), level: 'reader' },
          { user: iamDbUser(g.analystServiceAccount), level: 'analyst' },
        ],
        port: opts.fixedPorts ? SANDBOX.ports.postgres : undefined,
        existingUrl:
          (typeof cloudSqlOpt === 'object' && cloudSqlOpt.postgresUrl) || process.env.SANDBOX_POSTGRES_URL || undefined,
      });
      postgres = pgHandle;
      stops.push(() => pgHandle.close());
      const instance: SqlInstance = {
        project: g.project,
        region: g.region,
        name: g.instance,
        ipAddress: host,
        databaseVersion: 'POSTGRES_16',
        clients: new Set([g.readerServiceAccount, g.analystServiceAccount]),
        ca: createCa(`Google Cloud SQL Server CA ${g.instance} (sandbox)`),
        stopped: false,
      };
      const admin = Object.assign(await startSqlAdmin({ state, instances: [instance], port: port(SQL_ADMIN_PORT) }), { state });
      sqlAdmin = admin;
      stops.push(() => admin.close());
      const server = await startCloudSqlServer({
        connectionName: `${g.project}:${g.region}:${g.instance}`,
        ca: instance.ca,
        host,
        port: 3307,
        upstream: { host: pgHandle.host, port: pgHandle.port, iamPassword: pgHandle.iamPassword },
        bindingOf: (fp) => admin.bindingOf(fp),
        // Direct logins (plain pg over TLS, the IAM token as the password) on HOST:5432, as on Cloud SQL.
        direct: { port: 5432, verifyLoginToken: (user, token) => verifyIamLoginToken(state, instance, user, token) },
      });
      cloudSql = server;
      stops.push(() => server.close());
      env.CLOUDSQL_ADMIN_ENDPOINT = admin.url;
      env.QUERY_CATALOG_PATH = sampleQueriesPath();
      services['Cloud SQL Admin API'] = `${admin.url}/v1beta4/projects/${g.project}/instances/${g.instance}/connectSettings`;
      services['Cloud SQL instance (TLS)'] = `${host}:3307 → PostgreSQL ${pgHandle.host}:${pgHandle.port}/${g.database}`;
    }
    // ---- end Cloud SQL / PostgreSQL ----

    // ---- Key Vault (secrets) ----
    const kvCa = createCa('Token Broker Sandbox Key Vault CA');
    const keyVault = await startKeyVault({
      entra,
      ca: kvCa,
      port: port(SANDBOX.ports.keyVault),
      access: { [msi.objectId]: 'officer' },
    });
    stops.push(() => keyVault.close());
    const kvCaDir = opts.stateDir ?? mkdtempSync(join(tmpdir(), 'broker-kv-'));
    mkdirSync(kvCaDir, { recursive: true });
    const kvCaFile = join(kvCaDir, 'keyvault-ca.pem');
    writeFileSync(kvCaFile, kvCa.certPem);
    if (!opts.stateDir) stops.push(() => Promise.resolve(rmSync(kvCaDir, { recursive: true, force: true })));
    env.KEY_VAULT_URL = keyVault.vaultUrl;
    env.KEY_VAULT_CA_FILE = kvCaFile;
    services['Key Vault (secrets, HTTPS)'] = keyVault.vaultUrl;
    // ---- end Key Vault ----

    // ---- Google service-account keys (rotation): IAM keys API + OAuth token endpoint ----
    // Shares the sandbox's single GoogleState with STS, IAM Credentials and SQL Admin.
    const g = SANDBOX.google;
    for (const sa of [g.readerServiceAccount, g.analystServiceAccount])
      if (!googleState.serviceAccounts.has(sa)) googleState.addServiceAccount(sa);
    googleState.keyPropagationMs = opts.googleKeyPropagationMs ?? keyPropagationFromEnv();
    const googleOauth = await startGoogleOAuth({ state: googleState, port: port(7112) });
    stops.push(() => googleOauth.close());
    const googleIam = await startGoogleIam({ state: googleState, tokenUri: googleOauth.tokenUrl, port: port(7111) });
    stops.push(() => googleIam.close());
    // The Function's federated identity (workload identity pool principal of its managed identity) administers the keys
    // of the rotated accounts only (SA-level roles/iam.serviceAccountKeyAdmin, as infra/gcp/main.tf grants it).
    const rotationPrincipal = `principal://iam.googleapis.com/projects/${g.projectNumber}/locations/global/workloadIdentityPools/${g.poolId}/subject/${msi.objectId}`;
    googleIam.grantKeyAdmin(rotationPrincipal, [g.readerServiceAccount]);
    env.GOOGLE_IAM_ENDPOINT = googleIam.endpoint;
    env.GOOGLE_OAUTH_TOKEN_URL = googleOauth.tokenUrl;
    env.ROTATION_MANAGED_KEYS = `${g.readerServiceAccount}=orders-reader-sa-key`;
    env.ROTATION_SCHEDULE = '0 30 2 * * *'; // the Functions host resolves %ROTATION_SCHEDULE% itself: it must be set
    // The rotation's own Google identity is the keyless source credential above (GOOGLE_WIF_AUDIENCE, GOOGLE_STS_TOKEN_URL).
    services['Google IAM (service-account keys)'] = `${googleIam.endpoint}/v1/projects/-/serviceAccounts/{email}/keys`;
    services['Google OAuth token endpoint'] = googleOauth.tokenUrl;
    const googleKeys = { state: googleState, iam: googleIam, oauth: googleOauth, rotationPrincipal };
    // ---- end Google service-account keys ----

    // ---- CosmosDB (resource tokens) ----
    const cosmosCa = createCa('Token Broker Sandbox CosmosDB CA');
    const cosmosEmu = await startCosmos({
      account: SANDBOX.cosmos.account,
      ca: cosmosCa,
      port: port(SANDBOX.ports.cosmos),
      containers: [
        { database: SANDBOX.cosmos.database, id: SANDBOX.cosmos.container, partitionKeyPath: '/pk' },
        { database: SANDBOX.cosmos.database, id: SANDBOX.cosmos.catalogContainer, partitionKeyPath: '/pk' },
      ],
    });
    stops.push(() => cosmosEmu.close());
    const cosmosKeySecret = `cosmos-${SANDBOX.cosmos.account}-key`;
    keyVault.seed(cosmosKeySecret, cosmosEmu.masterKey, { contentType: 'text/plain' });
    const cosmosCaFile = join(kvCaDir, 'cosmos-ca.pem');
    writeFileSync(cosmosCaFile, cosmosCa.certPem);
    const cosmos = Object.assign(cosmosEmu, { keySecret: cosmosKeySecret });
    // The keyless account: disableLocalAuth (keys and resource tokens refused), Entra ID data-plane RBAC only.
    // Same CA as the resource-token account. Role assignments as infra/modules/cosmos.bicep makes them.
    const K = SANDBOX.cosmosKeyless;
    const cosmosKeyless = await startCosmos({
      name: 'cosmos-keyless',
      account: K.account,
      ca: cosmosCa,
      port: port(SANDBOX.ports.cosmosKeyless),
      entra,
      disableLocalAuth: true,
      containers: [
        { database: K.database, id: K.ordersContainer, partitionKeyPath: '/customerId' },
        { database: K.database, id: K.auditContainer, partitionKeyPath: '/day' },
      ],
    });
    stops.push(() => cosmosKeyless.close());
    cosmosKeyless.defineRole({
      id: K.readOnlyRoleId,
      roleName: 'Token Broker Cosmos Read Only',
      dataActions: [
        'Microsoft.DocumentDB/databaseAccounts/readMetadata',
        'Microsoft.DocumentDB/databaseAccounts/sqlDatabases/containers/items/read',
        'Microsoft.DocumentDB/databaseAccounts/sqlDatabases/containers/executeQuery',
        'Microsoft.DocumentDB/databaseAccounts/sqlDatabases/containers/readChangeFeed',
      ],
    });
    cosmosKeyless.assignRole({
      principalId: K.readerIdentity.objectId,
      roleDefinitionId: K.readOnlyRoleId,
      scope: `/dbs/${K.database}/colls/${K.ordersContainer}`,
    });
    cosmosKeyless.assignRole({
      principalId: K.writerIdentity.objectId,
      roleDefinitionId: '00000000-0000-0000-0000-000000000002',
      scope: `/dbs/${K.database}/colls/${K.auditContainer}`,
    });
    cosmosKeyless.putDocument(K.database, K.ordersContainer, { id: 'order-1', customerId: SANDBOX.readerObjectId, total: 42 });
    env.COSMOS_ENDPOINTS = `${SANDBOX.cosmos.account}=${cosmosEmu.endpoint},${K.account}=${cosmosKeyless.endpoint}`;
    env.COSMOS_CA_FILE = cosmosCaFile;
    env.COSMOS_RBAC_IDENTITY_CLIENT_IDS = `${K.readerIdentity.clientId},${K.writerIdentity.clientId}`;
    // Management plane (ARM) for the resource-token account's key rotation: the Function's identity holds only
    // listKeys + regenerateKey on that account (the custom role of infra/modules/cosmos.bicep).
    const cosmosManagement = await startCosmosManagement({
      entra,
      ca: cosmosCa,
      port: port(SANDBOX.ports.cosmosManagement),
      accounts: [{ resourceId: SANDBOX.cosmos.resourceId, emulator: cosmosEmu }],
    });
    stops.push(() => cosmosManagement.close());
    cosmosManagement.grantKeyOperator(msi.objectId, SANDBOX.cosmos.resourceId);
    cosmosManagement.grantOperationReader(msi.objectId, SANDBOX.cosmos.resourceId.split('/')[2]!);
    env.COSMOS_MANAGEMENT_ENDPOINT = cosmosManagement.endpoint;
    env.COSMOS_MANAGED_ACCOUNTS = `${SANDBOX.cosmos.account}=${SANDBOX.cosmos.resourceId}`;
    services['Azure Resource Manager (Cosmos keys)'] = cosmosManagement.endpoint;
    services['CosmosDB (HTTPS)'] = cosmosEmu.endpoint;
    services['CosmosDB keyless (HTTPS, RBAC only)'] = cosmosKeyless.endpoint;
    // ---- end CosmosDB ----

    // ---- Blob Storage (Azurite): the live policy and the rotation lease ----
    let storage: (AzuriteEmulator & { readonly policyBlobUrl: string }) | undefined;
    if (opts.storage ?? opts.fixedPorts ?? false) {
      const storageCa = createCa('Token Broker Sandbox Storage CA');
      const azurite = await startAzurite({ ca: storageCa, port: port(SANDBOX.ports.storage) });
      stops.push(() => azurite.close());
      const container = azurite.admin().getContainerClient(SANDBOX.storage.container);
      await container.create();
      const text = readFileSync(opts.policyPath ?? samplePolicyPath(), 'utf8');
      await container.getBlockBlobClient(SANDBOX.storage.policyBlob).upload(text, Buffer.byteLength(text), {
        metadata: { revision: '1', updatedby: 'sandbox', updatedat: new Date().toISOString(), change: 'seed' },
        blobHTTPHeaders: { blobContentType: 'application/json' },
      });
      const storageCaFile = join(kvCaDir, 'storage-ca.pem');
      writeFileSync(storageCaFile, storageCa.certPem);
      const policyBlobUrl = `${azurite.accountUrl}/${SANDBOX.storage.container}/${SANDBOX.storage.policyBlob}`;
      delete env.BROKER_POLICY_PATH;
      env.BROKER_POLICY_URL = policyBlobUrl;
      env.BROKER_POLICY_CA_FILE = storageCaFile;
      services['Blob Storage (Azurite, HTTPS)'] = policyBlobUrl;
      storage = Object.assign(azurite, { policyBlobUrl });
    }
    // ---- end Blob Storage ----

    Object.assign(env, opts.env ?? {});
    const emulators: Emulator[] = [
      entra,
      msi,
      sts,
      iamcredentials,
      ...(sqlAdmin ? [sqlAdmin] : []),
      keyVault,
      googleOauth,
      googleIam,
      cosmosEmu,
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
      sqlAdmin,
      cloudSql,
      postgres,
      keyVault,
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
export const STATE_DIR = resolve(process.cwd(), '.sandbox');
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
