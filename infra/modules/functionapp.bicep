// The broker: Azure Functions on Flex Consumption (Linux, Node 20), running as its user-assigned identity.
// Every app setting the code reads in production is set here (test/infra/settings-drift.test.ts checks it
// against shared/config/*); nothing secret is an app setting.
param name string
param location string
param tags object = {}
param brokerIdentityId string
param brokerClientId string
param storageName string
param storageBlobEndpoint string
param appInsightsConnectionString string
param keyVaultUri string

@description('Entra tenant(s) whose tokens the broker accepts')
param allowedTenants string
@description('App ID URI (or client id) of the broker app registration: the audience of APIM\'s token')
param brokerAppIdUri string
@description('Client id of the broker app registration: the `aud` of v2.0 tokens for it (empty: v1.0 tokens only)')
param brokerAppClientId string = ''
@description('Object id(s) of the gateway identities allowed to call the broker (APIM\'s managed identity)')
param allowedClientOids string
@description('Audiences of the end callers\' tokens (the APIs exposed through APIM)')
param subjectAudiences string
@description('Blob URL of the live access policy (the policy container of the storage account)')
param policyBlobUrl string
param queryCatalogPath string = 'config/queries.json'
@description('The MCP endpoint\'s canonical URL (RFC 8707 resource), e.g. https://broker.example.com/api/mcp')
param mcpResourceUrl string
@description('Client id of the MCP resource app registration (v2.0 tokens: the `aud`), and its App ID URI (the scope prefix)')
param mcpAppClientId string
param mcpAppIdUri string = ''
@description('Client ids of the agent hosts allowed to call the MCP endpoint (`azp`), comma-separated')
param mcpAllowedClientAppIds string

@allowed([ 'keyless', 'sa-key' ])
param googleAuthMode string = 'keyless'
@description('//iam.googleapis.com/projects/NUMBER/locations/global/workloadIdentityPools/POOL/providers/PROVIDER (terraform output wif_audience)')
param googleWifAudience string
@description('App ID URI of the Entra app registration the managed identity asks its STS subject token for (v1.0 tokens; never api://AzureADTokenExchange)')
param googleWifSubjectTokenAudience string
@description('sa-key mode only: Key Vault secret with the source service-account key JSON')
param googleSaKeySecret string = ''
@description('Comma-separated SA_EMAIL=SECRET_NAME pairs the rotation timer manages')
param rotationManagedKeys string
param rotationSchedule string = '0 30 2 * * *'
@description('ACCOUNT=ENDPOINT pairs of the Cosmos accounts the broker issues for')
param cosmosEndpoints string
@description('Resource ids of the user-assigned identities of keyless Cosmos grants (attached to the app)')
param cosmosRbacIdentityIds array = []
@description('Their client ids, comma-separated (COSMOS_RBAC_IDENTITY_CLIENT_IDS)')
param cosmosRbacIdentityClientIds string = ''
@description('ACCOUNT=ARM_RESOURCE_ID pairs of the resource-token accounts whose keys the timer rotates')
param cosmosManagedAccounts string = ''
@description('Caller identity mode (empty: off): client id of the app registration the subject tokens are for; it makes the on-behalf-of request with its federated credential trusting the broker identity (docs/deploy.md)')
param callerOboClientId string = ''
@description('Caller identity mode over MCP: client id of the MCP resource app registration when it is another app than callerOboClientId; it makes MCP callers\' on-behalf-of request (docs/mcp.md)')
param callerOboMcpClientId string = ''
@description('Caller identity mode: `{App ID URI}/.default` of the app registration the workforce pool provider trusts')
param callerWorkforceTokenScope string = ''
@description('Caller identity mode: //iam.googleapis.com/locations/global/workforcePools/POOL/providers/PROVIDER (terraform output workforce_audience)')
param callerWorkforceAudience string = ''
@description('Caller identity mode: project number or id for the callers\' Google tokens (STS options.userProject)')
param callerWorkforceUserProject string = ''
@description('Client certificates (docs/client-certificates.md): gateway object ids allowed to vouch for a certificate; empty: none')
param certGatewayOids string = ''
@description('PEM CA certificates client certificates must chain to (BROKER_CLIENT_CA_BUNDLE); empty: none')
param clientCaBundle string = ''

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  name: 'plan-${name}'
  location: location
  tags: tags
  kind: 'functionapp'
  sku: { tier: 'FlexConsumption', name: 'FC1' }
  properties: { reserved: true }
}

var baseSettings = [
  // --- Functions platform: identity-based host storage, telemetry with Entra ID auth ---
  { name: 'AzureWebJobsStorage__accountName', value: storageName }
  { name: 'AzureWebJobsStorage__credential', value: 'managedidentity' }
  { name: 'AzureWebJobsStorage__clientId', value: brokerClientId }
  { name: 'APPLICATIONINSIGHTS_CONNECTION_STRING', value: appInsightsConnectionString }
  { name: 'APPLICATIONINSIGHTS_AUTHENTICATION_STRING', value: 'ClientId=${brokerClientId};Authorization=AAD' }
  // --- core: who may call, whose tokens are accepted, the policy ---
  { name: 'BROKER_ALLOWED_TENANTS', value: allowedTenants }
  { name: 'BROKER_CLIENT_AUDIENCES', value: join(filter([brokerAppIdUri, brokerAppClientId], a => !empty(a)), ',') }
  { name: 'BROKER_ALLOWED_CLIENT_OIDS', value: allowedClientOids }
  { name: 'BROKER_CERT_GATEWAY_OIDS', value: certGatewayOids }
  { name: 'BROKER_CLIENT_CA_BUNDLE', value: clientCaBundle }
  { name: 'BROKER_SUBJECT_AUDIENCES', value: subjectAudiences }
  { name: 'BROKER_POLICY_URL', value: policyBlobUrl }
  { name: 'BROKER_ADMIN_TENANT', value: allowedTenants }
  { name: 'AZURE_CLIENT_ID', value: brokerClientId }
  // --- Google: keyless federation (workload identity pool trusting this identity) ---
  { name: 'GOOGLE_AUTH_MODE', value: googleAuthMode }
  { name: 'GOOGLE_WIF_AUDIENCE', value: googleWifAudience }
  { name: 'GOOGLE_WIF_SUBJECT_TOKEN_AUDIENCE', value: googleWifSubjectTokenAudience }
  // --- Key Vault (rotated keys, Cosmos keys) ---
  { name: 'KEY_VAULT_URL', value: keyVaultUri }
  // --- query function ---
  { name: 'QUERY_CATALOG_PATH', value: queryCatalogPath }
  // --- MCP endpoint (docs/mcp.md): v2.0 tokens for the MCP resource, from approved agent hosts ---
  { name: 'MCP_RESOURCE_URL', value: mcpResourceUrl }
  { name: 'MCP_AUDIENCES', value: mcpAppClientId }
  { name: 'MCP_ALLOWED_CLIENT_APP_IDS', value: mcpAllowedClientAppIds }
  { name: 'MCP_SCOPE_PREFIX', value: empty(mcpAppIdUri) ? 'api://${mcpAppClientId}/' : '${mcpAppIdUri}/' }
  // --- key rotation (the rotation caller federates through the same pool) ---
  { name: 'ROTATION_MANAGED_KEYS', value: rotationManagedKeys }
  { name: 'ROTATION_SCHEDULE', value: rotationSchedule }
  // --- CosmosDB resource tokens (keys are read from Key Vault) ---
  { name: 'COSMOS_ENDPOINTS', value: cosmosEndpoints }
  // --- CosmosDB keyless (Entra ID data-plane RBAC): identities policy grants may name ---
  { name: 'COSMOS_RBAC_IDENTITY_CLIENT_IDS', value: cosmosRbacIdentityClientIds }
  // --- CosmosDB account-key rotation (dual-key; ARM with the broker identity's key-operator role) ---
  { name: 'COSMOS_MANAGED_ACCOUNTS', value: cosmosManagedAccounts }
]
var saKeySettings = googleAuthMode == 'sa-key' ? [ { name: 'GOOGLE_SA_KEY_SECRET', value: googleSaKeySecret } ] : []
// --- caller identity mode (Cloud SQL grants with identity "caller"): set only when the operator turned it on ---
var callerSettings = empty(callerWorkforceAudience) ? [] : [
  { name: 'CALLER_OBO_CLIENT_ID', value: callerOboClientId }
  { name: 'CALLER_OBO_MCP_CLIENT_ID', value: callerOboMcpClientId }
  { name: 'CALLER_WORKFORCE_TOKEN_SCOPE', value: callerWorkforceTokenScope }
  { name: 'CALLER_WORKFORCE_AUDIENCE', value: callerWorkforceAudience }
  { name: 'CALLER_WORKFORCE_USER_PROJECT', value: callerWorkforceUserProject }
]

resource site 'Microsoft.Web/sites@2024-04-01' = {
  name: 'func-${name}'
  location: location
  tags: union(tags, { 'azd-service-name': 'broker' })
  kind: 'functionapp,linux'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: union({ '${brokerIdentityId}': {} }, toObject(cosmosRbacIdentityIds, id => id, id => {}))
  }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    keyVaultReferenceIdentity: brokerIdentityId
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${storageBlobEndpoint}deploymentpackage'
          authentication: { type: 'UserAssignedIdentity', userAssignedIdentityResourceId: brokerIdentityId }
        }
      }
      scaleAndConcurrency: { maximumInstanceCount: 40, instanceMemoryMB: 2048 }
      runtime: { name: 'node', version: '20' }
    }
    siteConfig: {
      minTlsVersion: '1.2'
      ftpsState: 'Disabled'
      appSettings: concat(baseSettings, saKeySettings, callerSettings)
    }
  }
}

output name string = site.name
output defaultHostName string = site.properties.defaultHostName
output url string = 'https://${site.properties.defaultHostName}'
