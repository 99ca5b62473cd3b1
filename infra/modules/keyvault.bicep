// Key Vault with RBAC only. The broker's identity is Key Vault Secrets Officer on this vault: the rotation
// timer writes new service-account key versions and its lease; the token exchange reads the Cosmos key.
param name string
param location string
param tags object = {}
param brokerPrincipalId string

// Vault names: 3-24 characters, letters, digits and single hyphens; the unique suffix of `name` is kept.
var compact = replace(name, '-', '')

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' = {
  name: 'kv${substring(compact, max(0, length(compact) - 22))}'
  location: location
  tags: tags
  properties: {
    tenantId: subscription().tenantId
    sku: { family: 'A', name: 'standard' }
    enableRbacAuthorization: true
    enableSoftDelete: true
    softDeleteRetentionInDays: 90
    enablePurgeProtection: true
    publicNetworkAccess: 'Enabled'
  }
}

// Key Vault Secrets Officer (secrets only: no keys, certificates or access policies).
resource secretsOfficer 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  scope: vault
  name: guid(vault.id, brokerPrincipalId, 'b86a8fe4-44ce-4948-aee5-eccb2c155cd7')
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', 'b86a8fe4-44ce-4948-aee5-eccb2c155cd7')
    principalId: brokerPrincipalId
    principalType: 'ServicePrincipal'
  }
}

output name string = vault.name
output uri string = vault.properties.vaultUri
