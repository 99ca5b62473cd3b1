// The Function's storage: no shared keys (identity-based AzureWebJobsStorage), TLS 1.2, no public blob access.
param name string
param location string
param tags object = {}
@description('Principal id of the Function identity')
param brokerPrincipalId string

// Storage names: 3-24 lowercase letters and digits; the unique suffix of `name` is kept.
var compact = replace(name, '-', '')

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  name: 'st${substring(compact, max(0, length(compact) - 22))}'
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: { name: 'Standard_LRS' }
  properties: {
    allowSharedKeyAccess: false
    allowBlobPublicAccess: false
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    defaultToOAuthAuthentication: true
  }
}

// Versioning on: every overwrite of the policy blob keeps the previous version in Azure as well (the broker's own
// history, GET /api/admin/policy/history, is the snapshot it takes before each write; the two coexist).
resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: storage
  name: 'default'
  properties: {
    isVersioningEnabled: true
  }
}

// The live access policy (policy.json) and the rotation lease blob (rotation-lock): read and written by the broker
// with its managed identity only.
resource policyContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: 'policy'
  properties: { publicAccess: 'None' }
}

// Storage Blob Data Contributor on the policy container only (read/write/lease of the policy and the lease blob).
resource policyContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  scope: policyContainer
  name: guid(policyContainer.id, brokerPrincipalId, 'ba92f5b4-2d11-453d-a403-e96b0029c9fe')
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', 'ba92f5b4-2d11-453d-a403-e96b0029c9fe')
    principalId: brokerPrincipalId
    principalType: 'ServicePrincipal'
  }
}

// Flex Consumption deploys the app package into this container.
resource deployments 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: 'deploymentpackage'
}

// Storage Blob Data Owner: the host keeps its leases (timer singleton) and the deployment package in blobs.
resource blobOwner 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  scope: storage
  name: guid(storage.id, brokerPrincipalId, 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b')
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b')
    principalId: brokerPrincipalId
    principalType: 'ServicePrincipal'
  }
}

output name string = storage.name
output blobEndpoint string = storage.properties.primaryEndpoints.blob
output policyBlobUrl string = '${storage.properties.primaryEndpoints.blob}${policyContainer.name}/policy.json'
