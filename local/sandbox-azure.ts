import { existsSync, readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { SANDBOX } from './ids';
import { createCa } from './pki';
import type { SandboxBuild } from './sandbox-build';
import { AZURITE_ACCOUNT, startAzurite, type AzuriteEmulator } from './emulators/azurite';
import { startStorageAuthProxy, storageRolesFromBicep, type StorageAuthProxy } from './emulators/azurite/storage-auth';
import { startCosmos, type CosmosEmulator } from './emulators/cosmos';
import { startCosmosManagement, type CosmosManagementEmulator } from './emulators/cosmos/management';
import { startEntra, type EntraEmulator } from './emulators/entra';
import { startKeyVault, type KeyVaultEmulator } from './emulators/keyvault';
import { startManagedIdentity, type ManagedIdentityEmulator } from './emulators/managed-identity';

/**
 * The Azure side of the sandbox: Entra ID and the Function's managed identity, Key Vault, the two CosmosDB accounts
 * with the management plane, Blob Storage (Azurite). local/sandbox.ts starts them in its order.
 */

/** Entra ID (the sandbox tenant and its app registrations) and the managed identity endpoint. */
export async function startAzureIdentity(
  b: SandboxBuild,
  opts: { allowMint?: boolean },
): Promise<{ entra: EntraEmulator; msi: ManagedIdentityEmulator }> {
  const entra = await startEntra({
    tenants: [SANDBOX.tenantId],
    port: b.port(SANDBOX.ports.entra),
    allowMintEndpoint: opts.allowMint,
    // The tenant's app registrations, with the manifest default accessTokenAcceptedVersion (null: v1.0 tokens).
    apps: [
      { appId: SANDBOX.clientAppId, identifierUris: [SANDBOX.clientAudience] },
      { appId: SANDBOX.subjectAppId, identifierUris: [SANDBOX.subjectAudience] },
      { appId: SANDBOX.google.wifAppId, identifierUris: [SANDBOX.google.wifAppIdUri] },
      // The app the workforce pool provider trusts (caller identity mode): v2.0 tokens, aud = its client id.
      { appId: SANDBOX.workforce.appId, identifierUris: [SANDBOX.workforce.appIdUri], accessTokenAcceptedVersion: 2 },
      // The MCP resource: v2.0 tokens (aud = its client id), App ID URI = the local MCP URL.
      {
        appId: SANDBOX.mcp.appId,
        identifierUris: [SANDBOX.mcp.resourceUrl, SANDBOX.mcp.appIdUri],
        accessTokenAcceptedVersion: 2,
      },
    ],
  });
  b.onStop(() => entra.close());
  const msi = await startManagedIdentity({
    entra,
    port: b.port(SANDBOX.ports.managedIdentity),
    // The identities of keyless Cosmos grants (user-assigned, attached to the Function App, selected by client_id).
    identities: [SANDBOX.cosmosKeyless.readerIdentity, SANDBOX.cosmosKeyless.writerIdentity],
    // The fixed-port sandbox uses a fixed header, so local.settings.json can name it.
    ...(b.fixedPorts ? { secretHeader: SANDBOX.identityHeader } : {}),
  });
  b.onStop(() => msi.close());
  // Caller identity mode: the orders API app (what subject tokens are for) makes the on-behalf-of request,
  // authenticated by a federated credential trusting the Function's managed identity; consented to the workforce app.
  entra.oboClients.push({
    appId: SANDBOX.subjectAppId,
    identifierUris: [SANDBOX.subjectAudience],
    federatedCredentials: [
      {
        issuer: `https://login.microsoftonline.com/${SANDBOX.tenantId}/v2.0`,
        subject: msi.objectId,
        audiences: ['api://AzureADTokenExchange'],
      },
    ],
    consentedResources: [SANDBOX.workforce.appId],
  });
  // MCP callers' tokens are for the MCP resource app (a different app in the sandbox): it makes their on-behalf-of
  // request, with its own federated credential trusting the same managed identity and the same consent.
  entra.oboClients.push({
    appId: SANDBOX.mcp.appId,
    identifierUris: [SANDBOX.mcp.resourceUrl, SANDBOX.mcp.appIdUri],
    federatedCredentials: [
      {
        issuer: `https://login.microsoftonline.com/${SANDBOX.tenantId}/v2.0`,
        subject: msi.objectId,
        audiences: ['api://AzureADTokenExchange'],
      },
    ],
    consentedResources: [SANDBOX.workforce.appId],
  });
  b.env.CALLER_OBO_CLIENT_ID = SANDBOX.subjectAppId;
  b.env.CALLER_OBO_MCP_CLIENT_ID = SANDBOX.mcp.appId;
  b.env.CALLER_WORKFORCE_TOKEN_SCOPE = `${SANDBOX.workforce.appIdUri}/.default`;
  return { entra, msi };
}

/** Key Vault (secrets, HTTPS with its own CA); the Function's identity is a Secrets Officer. */
export async function startSandboxKeyVault(
  b: SandboxBuild,
  entra: EntraEmulator,
  msi: ManagedIdentityEmulator,
): Promise<KeyVaultEmulator> {
  const kvCa = createCa('Token Broker Sandbox Key Vault CA');
  const keyVault = await startKeyVault({
    entra,
    ca: kvCa,
    port: b.port(SANDBOX.ports.keyVault),
    access: { [msi.objectId]: 'officer' },
  });
  b.onStop(() => keyVault.close());
  b.env.KEY_VAULT_URL = keyVault.vaultUrl;
  b.env.KEY_VAULT_CA_FILE = b.writeCaFile('keyvault-ca.pem', kvCa.certPem);
  b.services['Key Vault (secrets, HTTPS)'] = keyVault.vaultUrl;
  return keyVault;
}

export interface SandboxCosmos {
  /** The resource-token account; its primary key is in Key Vault as `keySecret`. */
  readonly cosmos: CosmosEmulator & { readonly keySecret: string };
  /** The keyless account (disableLocalAuth, Entra ID data-plane RBAC only). */
  readonly cosmosKeyless: CosmosEmulator;
  /** Azure Resource Manager slice for the resource-token account's key rotation. */
  readonly cosmosManagement: CosmosManagementEmulator;
}

/** CosmosDB: the resource-token account (key seeded into Key Vault), the keyless account and the management plane. */
export async function startSandboxCosmos(
  b: SandboxBuild,
  entra: EntraEmulator,
  msi: ManagedIdentityEmulator,
  keyVault: KeyVaultEmulator,
): Promise<SandboxCosmos> {
  const cosmosCa = createCa('Token Broker Sandbox CosmosDB CA');
  const cosmosEmu = await startCosmos({
    account: SANDBOX.cosmos.account,
    ca: cosmosCa,
    port: b.port(SANDBOX.ports.cosmos),
    containers: [
      { database: SANDBOX.cosmos.database, id: SANDBOX.cosmos.container, partitionKeyPath: '/pk' },
      { database: SANDBOX.cosmos.database, id: SANDBOX.cosmos.catalogContainer, partitionKeyPath: '/pk' },
    ],
  });
  b.onStop(() => cosmosEmu.close());
  // Sample items (the MCP Cosmos tools' example, docs/mcp.md): a profile per sandbox reader, in their own partition.
  for (const [oid, displayName] of [
    [SANDBOX.readerObjectId, 'Ada Lovelace'],
    [SANDBOX.secondReaderObjectId, 'Grace Hopper'],
  ] as const)
    cosmosEmu.putDocument(SANDBOX.cosmos.database, SANDBOX.cosmos.container, {
      id: 'profile',
      pk: oid,
      displayName,
      theme: 'light',
    });
  const cosmosKeySecret = `cosmos-${SANDBOX.cosmos.account}-key`;
  keyVault.seed(cosmosKeySecret, cosmosEmu.masterKey, { contentType: 'text/plain' });
  const cosmosCaFile = b.writeCaFile('cosmos-ca.pem', cosmosCa.certPem);
  const cosmos = Object.assign(cosmosEmu, { keySecret: cosmosKeySecret });
  // The keyless account: disableLocalAuth (keys and resource tokens refused), Entra ID data-plane RBAC only.
  // Same CA as the resource-token account. Role assignments as infra/modules/cosmos.bicep makes them.
  const K = SANDBOX.cosmosKeyless;
  const cosmosKeyless = await startCosmos({
    name: 'cosmos-keyless',
    account: K.account,
    ca: cosmosCa,
    port: b.port(SANDBOX.ports.cosmosKeyless),
    entra,
    disableLocalAuth: true,
    containers: [
      { database: K.database, id: K.ordersContainer, partitionKeyPath: '/customerId' },
      { database: K.database, id: K.auditContainer, partitionKeyPath: '/day' },
    ],
  });
  b.onStop(() => cosmosKeyless.close());
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
  cosmosKeyless.putDocument(K.database, K.ordersContainer, {
    id: 'order-1',
    customerId: SANDBOX.readerObjectId,
    status: 'shipped',
    total: 42,
  });
  b.env.COSMOS_ENDPOINTS = `${SANDBOX.cosmos.account}=${cosmosEmu.endpoint},${K.account}=${cosmosKeyless.endpoint}`;
  b.env.COSMOS_CA_FILE = cosmosCaFile;
  b.env.COSMOS_RBAC_IDENTITY_CLIENT_IDS = `${K.readerIdentity.clientId},${K.writerIdentity.clientId}`;
  // Management plane (ARM) for the resource-token account's key rotation: the Function's identity holds only
  // listKeys + regenerateKey on that account (the custom role of infra/modules/cosmos.bicep).
  const cosmosManagement = await startCosmosManagement({
    entra,
    ca: cosmosCa,
    port: b.port(SANDBOX.ports.cosmosManagement),
    accounts: [{ resourceId: SANDBOX.cosmos.resourceId, emulator: cosmosEmu }],
  });
  b.onStop(() => cosmosManagement.close());
  cosmosManagement.grantKeyOperator(msi.objectId, SANDBOX.cosmos.resourceId);
  cosmosManagement.grantOperationReader(msi.objectId, SANDBOX.cosmos.resourceId.split('/')[2]!);
  b.env.COSMOS_MANAGEMENT_ENDPOINT = cosmosManagement.endpoint;
  b.env.COSMOS_MANAGED_ACCOUNTS = `${SANDBOX.cosmos.account}=${SANDBOX.cosmos.resourceId}`;
  b.services['Azure Resource Manager (Cosmos keys)'] = cosmosManagement.endpoint;
  b.services['CosmosDB (HTTPS)'] = cosmosEmu.endpoint;
  b.services['CosmosDB keyless (HTTPS, RBAC only)'] = cosmosKeyless.endpoint;
  return { cosmos, cosmosKeyless, cosmosManagement };
}

/** infra/modules/storage.bicep (from the source tree or the compiled one). */
export function storageBicep(): string {
  const candidates = [
    resolve(__dirname, '..', 'infra', 'modules', 'storage.bicep'),
    resolve(__dirname, '..', '..', 'infra', 'modules', 'storage.bicep'),
  ];
  return readFileSync(candidates.find((c) => existsSync(c)) ?? candidates[0]!, 'utf8');
}

/** The sandbox's Blob Storage: Azurite behind Storage's own checks (`auth`); the broker is given the proxy's URLs. */
export type SandboxStorage = AzuriteEmulator & {
  /** The policy blob, at the proxy (what BROKER_POLICY_URL names). */
  readonly policyBlobUrl: string;
  /** Storage's checks in front of Azurite: signature, tenant, audience, lifetime, the role table of storage.bicep. */
  readonly auth: StorageAuthProxy;
};

/**
 * Blob Storage (Azurite, HTTPS + OAuth) behind Storage's own checks: the live policy, seeded from `policyPath`
 * (BROKER_POLICY_URL replaces BROKER_POLICY_PATH), and the rotation lease. The broker talks to the proxy
 * (the fixed port); Azurite listens on an ephemeral port behind it. The role table is infra/modules/storage.bicep's,
 * `brokerPrincipalId` being the Function's identity.
 */
export async function startSandboxStorage(
  b: SandboxBuild,
  policyPath: string,
  entra: EntraEmulator,
  msi: ManagedIdentityEmulator,
): Promise<SandboxStorage> {
  const storageCa = createCa('Token Broker Sandbox Storage CA');
  const azurite = await startAzurite({ ca: storageCa, port: 0 });
  b.onStop(() => azurite.close());
  const auth = await startStorageAuthProxy({
    targetPort: azurite.port,
    account: AZURITE_ACCOUNT,
    ca: storageCa,
    entra,
    tenantId: SANDBOX.tenantId,
    assignments: storageRolesFromBicep(storageBicep(), { brokerPrincipalId: msi.objectId }),
    port: b.port(SANDBOX.ports.storage),
  });
  b.onStop(() => auth.close());
  const container = azurite.admin().getContainerClient(SANDBOX.storage.container);
  await container.create();
  const text = readFileSync(policyPath, 'utf8');
  await container.getBlockBlobClient(SANDBOX.storage.policyBlob).upload(text, Buffer.byteLength(text), {
    metadata: { revision: '1', updatedby: 'sandbox', updatedat: new Date().toISOString(), change: 'seed' },
    blobHTTPHeaders: { blobContentType: 'application/json' },
  });
  const storageCaFile = b.writeCaFile('storage-ca.pem', storageCa.certPem);
  const policyBlobUrl = `${auth.accountUrl}/${SANDBOX.storage.container}/${SANDBOX.storage.policyBlob}`;
  delete b.env.BROKER_POLICY_PATH;
  b.env.BROKER_POLICY_URL = policyBlobUrl;
  b.env.BROKER_POLICY_CA_FILE = storageCaFile;
  b.services['Blob Storage (Azurite behind Storage auth checks, HTTPS)'] = policyBlobUrl;
  return Object.assign(azurite, { policyBlobUrl, auth });
}
