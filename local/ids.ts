/**
 * Fixed identities and names of the local sandbox, shared by the emulators, the sample policy,
 * local.settings.json.template, the tests and the benchmarks. None of these is a secret.
 */
export const SANDBOX = {
  tenantId: '72f988bf-0000-4000-8000-00000000c0de',
  /** APIM's managed identity: the broker's only allowed client. */
  gatewayObjectId: '9a7e0000-0000-4000-8000-0000000a9140',
  gatewayAppId: '9a7e0000-0000-4000-8000-00000000a991',
  /** Audience of gateway (client) tokens: the broker's own App ID URI (the `aud` of a v1.0 token requested for it). */
  clientAudience: 'api://token-broker',
  /** The broker app registration's client id: the `aud` of every v2.0 token for it (Entra puts the GUID there). */
  clientAppId: '7b0c0000-0000-4000-8000-0000000b0c1d',
  /** Audience of end-caller (subject) tokens: the API exposed through APIM (App ID URI, v1.0 `aud`). */
  subjectAudience: 'api://orders-api',
  /** The orders API app registration's client id (v2.0 `aud`). */
  subjectAppId: '0a9e0000-0000-4000-8000-0000000a9101',
  /** An end caller with the Orders.Read role. */
  readerObjectId: '0b5e0000-0000-4000-8000-00000000ead1',
  /** A second end caller (another customer): identity-bound queries and row-level security give each only their own rows. */
  secondReaderObjectId: '0b5e0000-0000-4000-8000-00000000ead2',
  /** An end caller with no roles at all. */
  strangerObjectId: '0b5e0000-0000-4000-8000-0000057a9e70',
  adminRole: 'Broker.Admin',
  /**
   * Caller identity mode (docs/cloudsql.md "Two identity modes"): callers with this role query as themselves. The
   * workforce pool provider trusts the Entra app registration `workforce.appId` (v2.0 tokens); the broker's OBO client is
   * the orders API app (the subject tokens' audience), authenticated by a FIC trusting the Function's managed identity.
   */
  personRole: 'Orders.Person',
  workforce: {
    orgId: '998877665544',
    poolId: 'token-broker-callers',
    providerId: 'entra-obo',
    appId: '6f1f0000-0000-4000-8000-00000000f0f1',
    appIdUri: 'api://google-workforce',
    userProject: 'sandbox-project',
    /** A person added as a database user but without roles/cloudsql.instanceUser. */
    noRoleObjectId: '0b5e0000-0000-4000-8000-00000000ead3',
  },
  /**
   * The MCP server (POST /api/mcp) as an Entra resource: its app registration issues v2.0 tokens
   * (accessTokenAcceptedVersion 2), so `aud` is its client id; its App ID URIs are the local MCP URL and an api:// one
   * (the scope prefix). The agent host is the one client app (`azp`) the sandbox approves; `otherClientAppId` is not.
   */
  mcp: {
    appId: '3c900000-0000-4000-8000-0000000003c9',
    resourceUrl: 'http://127.0.0.1:7071/api/mcp',
    appIdUri: 'api://token-broker-mcp',
    scope: 'mcp.tools',
    agentHostAppId: 'a9e70000-0000-4000-8000-0000000a9e71',
    otherClientAppId: 'a9e70000-0000-4000-8000-0000000a9e7f',
    /** An Entra agent identity (its tokens: `azp` = this id, `xms_act_fct` contains 11), also approved. */
    agentIdentityAppId: 'a9e70000-0000-4000-8000-0000000a9e11',
    /** The blueprint (parent app) of the sandbox's agent identity: logged, never authorized on. */
    agentBlueprintAppId: 'a9e70000-0000-4000-8000-0000000b1e90',
  },
  google: {
    project: 'sandbox-project',
    region: 'europe-west1',
    instance: 'orders-db',
    database: 'orders',
    readerServiceAccount: 'orders-reader@sandbox-project.iam.gserviceaccount.com',
    analystServiceAccount: 'orders-analyst@sandbox-project.iam.gserviceaccount.com',
    projectNumber: '123456789012',
    poolId: 'azure-pool',
    providerId: 'entra',
    /**
     * The Entra app registration Google's guide has the managed identity ask a token for
     * (https://cloud.google.com/iam/docs/workload-identity-federation-with-other-clouds): its client id and its App ID URI
     * in the default form `api://{appId}`. Its tokens are v1.0 (accessTokenAcceptedVersion left null), so the pool
     * provider trusts `https://sts.windows.net/{tid}/` with this URI as the allowed audience.
     */
    wifAppId: '6f1f0000-0000-4000-8000-000000009e1f',
    wifAppIdUri: 'api://6f1f0000-0000-4000-8000-000000009e1f',
  },
  cosmos: {
    account: 'sandbox-cosmos',
    database: 'app',
    container: 'profiles',
    catalogContainer: 'catalog',
    /** The account's ARM resource id (its keys are rotated through the management-plane emulator). */
    resourceId:
      '/subscriptions/5a9d0000-0000-4000-8000-000000005ab0/resourceGroups/rg-sandbox/providers/Microsoft.DocumentDB/databaseAccounts/sandbox-cosmos',
  },
  /**
   * The keyless Cosmos account (disableLocalAuth: Entra ID data-plane RBAC only). Two user-assigned identities of
   * the Function App hold container-scoped role assignments: `orders` read-only (custom role), `audit` read-write.
   */
  cosmosKeyless: {
    account: 'sandbox-cosmos-keyless',
    database: 'shop',
    ordersContainer: 'orders',
    auditContainer: 'audit',
    readerIdentity: { clientId: 'c05e0000-0000-4000-8000-0000000c11e1', objectId: 'c05e0000-0000-4000-8000-00000000a0d1' },
    writerIdentity: { clientId: 'c05e0000-0000-4000-8000-0000000c11e2', objectId: 'c05e0000-0000-4000-8000-00000000a0d2' },
    readOnlyRoleId: 'c05e0000-0000-4000-8000-0000000001e0',
  },
  /** Fixed loopback ports of `npm start` / `npm run emulators` (tests use ephemeral ports). */
  ports: {
    broker: 7071,
    entra: 7100,
    managedIdentity: 7101,
    /** Google STS. */
    google: 7102,
    googleIamCredentials: 7103,
    cosmosKeyless: 7105,
    cosmosManagement: 7106,
    cosmos: 7107,
    keyVault: 7108,
    /** Blob Storage (Azurite, HTTPS): the live policy and the rotation lease. */
    storage: 7109,
    /** Google IAM (service-account keys). */
    googleIam: 7111,
    /** Google OAuth token endpoint (service-account keys). */
    googleOAuth: 7112,
    sqlAdmin: 7131,
    postgres: 7132,
  },
  /**
   * The Cloud SQL instance's ports on its (loopback) host, fixed in tests too: the Cloud SQL connectors always dial
   * 3307 (TLS, connector protocol); direct logins (plain pg over TLS, the IAM token as the password) use 5432, as on
   * Cloud SQL. Tests give each jest worker its own loopback host instead of another port.
   */
  cloudSqlPorts: { connector: 3307, direct: 5432 },
  /** Fixed X-IDENTITY-HEADER of the fixed-port sandbox (so local.settings.json can name it). */
  identityHeader: 'sandbox-identity-header',
  /** The policy container and blob in the sandbox's storage account (Azurite). */
  storage: { container: 'policy', policyBlob: 'policy.json' },
} as const;

/** PostgreSQL's default port: the port of a `postgres://` URL that names none. */
export const POSTGRES_DEFAULT_PORT = 5432;
