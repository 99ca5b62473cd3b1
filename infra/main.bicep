// azd entry point (`azd up`): one resource group with the token broker and everything it needs on Azure.
// The Google side is infra/gcp (Terraform); its outputs feed googleWifAudience and rotationManagedKeys here.
targetScope = 'subscription'

@minLength(1)
@maxLength(40)
@description('azd environment name; names every resource')
param environmentName string
@description('Azure region')
param location string

@description('Tenant whose callers and gateway tokens are accepted')
param tenantId string = subscription().tenantId
@description('App ID URI of the broker app registration (audience of APIM\'s managed-identity token), e.g. api://token-broker')
param brokerAppIdUri string
@description('App ID URI of the Orders API app registration (audience of callers\' tokens)')
param ordersApiAudience string
@description('App ID URI of the Profiles API app registration (audience of SPA/mobile callers\' tokens)')
param profilesApiAudience string
@description('Client ids of the broker, Orders API and Profiles API app registrations: the `aud` of v2.0 tokens (v1.0 tokens carry the App ID URI); empty if the app only gets v1.0 tokens')
param brokerAppClientId string = ''
param ordersApiClientId string = ''
param profilesApiClientId string = ''
@description('Backend of the Orders API (it receives X-Db-Token)')
param ordersBackendUrl string
@description('cloudsql://PROJECT/REGION/INSTANCE/DATABASE the Orders API exchanges for')
param cloudsqlTarget string
@description('Workload identity provider audience (terraform output wif_audience)')
param googleWifAudience string
@description('App ID URI of the Entra app registration the broker\'s managed identity asks its Google STS subject token for (Google\'s Azure guide; terraform variable subject_token_audience)')
param googleWifSubjectTokenAudience string
@description('SA_EMAIL=SECRET_NAME pairs the rotation timer manages (terraform output rotation_managed_keys)')
param rotationManagedKeys string = ''
@allowed([ 'keyless', 'sa-key' ])
param googleAuthMode string = 'keyless'
@description('sa-key mode only: Key Vault secret with the source service-account key JSON (terraform output google_sa_key_secret)')
param googleSaKeySecret string = ''
@description('Caller identity mode (off when callerWorkforceAudience is empty): the Orders API app registration makes the on-behalf-of request, authenticated by a federated credential trusting the broker identity (callerOboFederatedCredentials creates it; docs/deploy.md)')
param callerWorkforceAudience string = ''
@description('Caller identity mode: create the federated identity credentials (Microsoft Graph Bicep, modules/caller-obo.bicep) on the Orders API app registration and, when mcpAppUniqueName is set, the MCP resource app; the deploying principal needs Application.ReadWrite.All or ownership of the apps')
param callerOboFederatedCredentials bool = false
@description('uniqueName of the Orders API app registration (Microsoft Graph Bicep key; set once on an app created elsewhere, docs/deploy.md)')
param ordersApiAppUniqueName string = ''
@description('Caller identity mode over MCP: uniqueName of the MCP resource app registration (it makes MCP callers\' on-behalf-of request); empty: MCP callers cannot use caller-mode rules')
param mcpAppUniqueName string = ''
@description('Caller identity mode: `{App ID URI}/.default` of the app registration the workforce pool provider trusts (terraform variable workforce_app_client_id)')
param callerWorkforceTokenScope string = ''
@description('Caller identity mode: project number or id for the callers\' Google tokens (STS options.userProject)')
param callerWorkforceUserProject string = ''
@description('The MCP endpoint\'s canonical URL, e.g. https://broker.example.com/api/mcp (docs/mcp.md)')
param mcpResourceUrl string
@description('Client id and App ID URI of the MCP resource app registration (requestedAccessTokenVersion 2)')
param mcpAppClientId string
param mcpAppIdUri string = ''
@description('Client ids of the agent hosts (MCP clients) an operator approved, comma-separated')
param mcpAllowedClientAppIds string
param publisherEmail string
param publisherName string = 'Token broker'
param apimSku string = 'Developer'
@description('Client certificates (mTLS at APIM, docs/client-certificates.md): CA certificates, each base64 DER; empty: no certificate callers')
param clientCaCertificates array = []

// At most 31 characters, so every derived name fits its service's limit (APIM 50, Cosmos 44, Key Vault 24, ...).
var name = toLower('${take(environmentName, 24)}-${take(uniqueString(subscription().id, environmentName, location), 6)}')
var tags = { 'azd-env-name': environmentName }

resource rg 'Microsoft.Resources/resourceGroups@2024-03-01' = {
  name: 'rg-${environmentName}'
  location: location
  tags: tags
}

module identities 'modules/identities.bicep' = {
  scope: rg
  name: 'identities'
  params: { name: name, location: location, tags: tags }
}

module monitoring 'modules/monitoring.bicep' = {
  scope: rg
  name: 'monitoring'
  params: { name: name, location: location, tags: tags, brokerPrincipalId: identities.outputs.brokerPrincipalId }
}

module storage 'modules/storage.bicep' = {
  scope: rg
  name: 'storage'
  params: { name: name, location: location, tags: tags, brokerPrincipalId: identities.outputs.brokerPrincipalId }
}

module keyVault 'modules/keyvault.bicep' = {
  scope: rg
  name: 'keyvault'
  params: { name: name, location: location, tags: tags, brokerPrincipalId: identities.outputs.brokerPrincipalId }
}

module cosmos 'modules/cosmos.bicep' = {
  scope: rg
  name: 'cosmos'
  params: {
    name: name
    location: location
    tags: tags
    keyVaultName: keyVault.outputs.name
    keylessReaderPrincipalId: identities.outputs.cosmosReaderPrincipalId
    keylessWriterPrincipalId: identities.outputs.cosmosWriterPrincipalId
    brokerPrincipalId: identities.outputs.brokerPrincipalId
  }
}

// Cosmos key rotation polls regenerateKey's asynchronous operation; its status path is under
// /subscriptions/{sub}/providers/Microsoft.DocumentDB/locations, not the account, so reading it needs this read-only
// role at the subscription (ARM: "permission for tracking async status"). Nothing else.
resource cosmosOperationReader 'Microsoft.Authorization/roleDefinitions@2022-04-01' = {
  name: guid(subscription().id, 'token-broker-cosmos-operation-reader')
  properties: {
    roleName: 'Token Broker Cosmos Operation Reader (${name})'
    description: 'Read the status of Cosmos DB asynchronous operations (key regeneration).'
    type: 'CustomRole'
    assignableScopes: [ subscription().id ]
    permissions: [
      {
        actions: [
          'Microsoft.DocumentDB/locations/operationsStatus/read'
          'Microsoft.DocumentDB/locations/operationResults/read'
        ]
        notActions: []
      }
    ]
  }
}

resource brokerOperationReader 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(subscription().id, name, 'cosmos-operation-reader')
  properties: {
    roleDefinitionId: cosmosOperationReader.id
    principalId: identities.outputs.brokerPrincipalId
    principalType: 'ServicePrincipal'
  }
}

// Caller identity mode: the apps making the on-behalf-of request trust the broker's managed identity (no secret).
module callerObo 'modules/caller-obo.bicep' = if (callerOboFederatedCredentials) {
  scope: rg
  name: 'caller-obo'
  params: {
    oboAppUniqueName: ordersApiAppUniqueName
    mcpAppUniqueName: mcpAppUniqueName
    tenantId: tenantId
    brokerPrincipalId: identities.outputs.brokerPrincipalId
  }
}

module functionApp 'modules/functionapp.bicep' = {
  scope: rg
  name: 'functionapp'
  params: {
    name: name
    location: location
    tags: tags
    brokerIdentityId: identities.outputs.brokerId
    brokerClientId: identities.outputs.brokerClientId
    storageName: storage.outputs.name
    storageBlobEndpoint: storage.outputs.blobEndpoint
    policyBlobUrl: storage.outputs.policyBlobUrl
    appInsightsConnectionString: monitoring.outputs.connectionString
    keyVaultUri: keyVault.outputs.uri
    allowedTenants: tenantId
    brokerAppIdUri: brokerAppIdUri
    brokerAppClientId: brokerAppClientId
    allowedClientOids: identities.outputs.gatewayPrincipalId
    subjectAudiences: join(filter([ordersApiAudience, ordersApiClientId, profilesApiAudience, profilesApiClientId], a => !empty(a)), ',')
    googleAuthMode: googleAuthMode
    googleWifAudience: googleWifAudience
    googleWifSubjectTokenAudience: googleWifSubjectTokenAudience
    googleSaKeySecret: googleSaKeySecret
    rotationManagedKeys: rotationManagedKeys
    cosmosEndpoints: '${cosmos.outputs.accountName}=${cosmos.outputs.endpoint},${cosmos.outputs.keylessAccountName}=${cosmos.outputs.keylessEndpoint}'
    cosmosRbacIdentityIds: [ identities.outputs.cosmosReaderId, identities.outputs.cosmosWriterId ]
    cosmosRbacIdentityClientIds: '${identities.outputs.cosmosReaderClientId},${identities.outputs.cosmosWriterClientId}'
    cosmosManagedAccounts: '${cosmos.outputs.accountName}=${cosmos.outputs.accountId}'
    callerOboClientId: ordersApiClientId
    callerOboMcpClientId: empty(mcpAppUniqueName) ? '' : mcpAppClientId
    callerWorkforceTokenScope: callerWorkforceTokenScope
    callerWorkforceAudience: callerWorkforceAudience
    callerWorkforceUserProject: callerWorkforceUserProject
    certGatewayOids: empty(clientCaCertificates) ? '' : identities.outputs.gatewayPrincipalId
    clientCaBundle: join(map(clientCaCertificates, c => '-----BEGIN CERTIFICATE-----\n${c}\n-----END CERTIFICATE-----'), '\n')
    mcpResourceUrl: mcpResourceUrl
    mcpAppClientId: mcpAppClientId
    mcpAppIdUri: mcpAppIdUri
    mcpAllowedClientAppIds: mcpAllowedClientAppIds
  }
}

module apim 'modules/apim.bicep' = {
  scope: rg
  name: 'apim'
  params: {
    name: name
    location: location
    tags: tags
    sku: apimSku
    publisherEmail: publisherEmail
    publisherName: publisherName
    gatewayIdentityId: identities.outputs.gatewayId
    gatewayClientId: identities.outputs.gatewayClientId
    tenantId: tenantId
    brokerUrl: functionApp.outputs.url
    brokerAppIdUri: brokerAppIdUri
    ordersApiAudience: ordersApiAudience
    profilesApiAudience: profilesApiAudience
    ordersBackendUrl: ordersBackendUrl
    cloudsqlTarget: cloudsqlTarget
    cosmosTarget: 'cosmos://${cosmos.outputs.accountName}/${cosmos.outputs.databaseName}/profiles'
    cosmosRbacTarget: 'cosmos://${cosmos.outputs.keylessAccountName}/${cosmos.outputs.keylessDatabaseName}/orders'
    cosmosRbacEndpoint: cosmos.outputs.keylessEndpoint
    clientCaCertificates: clientCaCertificates
  }
}

output AZURE_LOCATION string = location
output AZURE_TENANT_ID string = tenantId
output AZURE_RESOURCE_GROUP string = rg.name
output BROKER_FUNCTION_APP_NAME string = functionApp.outputs.name
output BROKER_URL string = functionApp.outputs.url
output BROKER_IDENTITY_CLIENT_ID string = identities.outputs.brokerClientId
output BROKER_IDENTITY_PRINCIPAL_ID string = identities.outputs.brokerPrincipalId
output APIM_NAME string = apim.outputs.name
output APIM_GATEWAY_URL string = apim.outputs.gatewayUrl
output APIM_IDENTITY_PRINCIPAL_ID string = identities.outputs.gatewayPrincipalId
output KEY_VAULT_NAME string = keyVault.outputs.name
output KEY_VAULT_URL string = keyVault.outputs.uri
output COSMOS_ACCOUNT_NAME string = cosmos.outputs.accountName
output COSMOS_ENDPOINT string = cosmos.outputs.endpoint
output COSMOS_KEYLESS_ACCOUNT_NAME string = cosmos.outputs.keylessAccountName
output COSMOS_KEYLESS_ENDPOINT string = cosmos.outputs.keylessEndpoint
output APPLICATIONINSIGHTS_NAME string = monitoring.outputs.appInsightsName
