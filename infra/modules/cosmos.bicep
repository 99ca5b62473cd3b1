// CosmosDB (SQL API) with the sample database and containers. Key-based auth stays enabled because resource
// tokens are minted with the account key; the key lives only in Key Vault (secret cosmos-<account>-key),
// written here from listKeys() and never placed in an app setting.
param name string
param location string
param tags object = {}
param keyVaultName string
param databaseName string = 'app'
param containers array = [
  { name: 'profiles', partitionKeyPath: '/pk' }
  { name: 'catalog', partitionKeyPath: '/pk' }
]
@description('Principal id of the identity that may only read the keyless orders container')
param keylessReaderPrincipalId string
@description('Principal id of the identity that may read and write the keyless audit container')
param keylessWriterPrincipalId string
param keylessDatabaseName string = 'shop'
@description('Principal id of the broker Function identity (rotates the resource-token account keys)')
param brokerPrincipalId string

resource account 'Microsoft.DocumentDB/databaseAccounts@2024-11-15' = {
  name: 'cosmos-${name}'
  location: location
  tags: tags
  kind: 'GlobalDocumentDB'
  properties: {
    databaseAccountOfferType: 'Standard'
    consistencyPolicy: { defaultConsistencyLevel: 'Session' }
    locations: [ { locationName: location, failoverPriority: 0, isZoneRedundant: false } ]
    capabilities: [ { name: 'EnableServerless' } ]
    minimalTlsVersion: 'Tls12'
    disableLocalAuth: false
  }
}

resource database 'Microsoft.DocumentDB/databaseAccounts/sqlDatabases@2024-11-15' = {
  parent: account
  name: databaseName
  properties: { resource: { id: databaseName } }
}

resource sqlContainers 'Microsoft.DocumentDB/databaseAccounts/sqlDatabases/containers@2024-11-15' = [for c in containers: {
  parent: database
  name: c.name
  properties: {
    resource: {
      id: c.name
      partitionKey: { paths: [ c.partitionKeyPath ], kind: 'Hash', version: 2 }
    }
  }
}]

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' existing = {
  name: keyVaultName
}

resource keySecret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = {
  parent: vault
  name: 'cosmos-${account.name}-key'
  properties: {
    value: account.listKeys().primaryMasterKey
    contentType: 'text/plain'
  }
}

// ---- Key rotation of the resource-token account: a custom role with only the two key actions, on that account
// only, for the broker's identity (shared/rotation/cosmos-keys/run.ts; nothing else may list or regenerate keys).
resource keyOperatorRole 'Microsoft.Authorization/roleDefinitions@2022-04-01' = {
  name: guid(account.id, 'token-broker-cosmos-key-operator')
  properties: {
    roleName: 'Token Broker Cosmos Key Operator (${account.name})'
    description: 'List and regenerate the account keys of one Cosmos account (dual-key rotation).'
    type: 'CustomRole'
    assignableScopes: [ account.id ]
    permissions: [
      {
        actions: [
          'Microsoft.DocumentDB/databaseAccounts/listKeys/action'
          'Microsoft.DocumentDB/databaseAccounts/regenerateKey/action'
        ]
        notActions: []
      }
    ]
  }
}

resource brokerKeyOperator 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  scope: account
  name: guid(account.id, brokerPrincipalId, 'key-operator')
  properties: {
    roleDefinitionId: keyOperatorRole.id
    principalId: brokerPrincipalId
    principalType: 'ServicePrincipal'
  }
}

// ---- Keyless account: Entra ID data-plane RBAC only. disableLocalAuth refuses the account keys and every
// resource token, so resource-token containers stay on the account above.
resource keyless 'Microsoft.DocumentDB/databaseAccounts@2024-11-15' = {
  name: 'cosrb-${name}'
  location: location
  tags: tags
  kind: 'GlobalDocumentDB'
  properties: {
    databaseAccountOfferType: 'Standard'
    consistencyPolicy: { defaultConsistencyLevel: 'Session' }
    locations: [ { locationName: location, failoverPriority: 0, isZoneRedundant: false } ]
    capabilities: [ { name: 'EnableServerless' } ]
    minimalTlsVersion: 'Tls12'
    disableLocalAuth: true
    disableKeyBasedMetadataWriteAccess: true
  }
}

resource keylessDb 'Microsoft.DocumentDB/databaseAccounts/sqlDatabases@2024-11-15' = {
  parent: keyless
  name: keylessDatabaseName
  properties: { resource: { id: keylessDatabaseName } }
}

resource orders 'Microsoft.DocumentDB/databaseAccounts/sqlDatabases/containers@2024-11-15' = {
  parent: keylessDb
  name: 'orders'
  properties: { resource: { id: 'orders', partitionKey: { paths: [ '/customerId' ], kind: 'Hash', version: 2 } } }
}

resource audit 'Microsoft.DocumentDB/databaseAccounts/sqlDatabases/containers@2024-11-15' = {
  parent: keylessDb
  name: 'audit'
  properties: { resource: { id: 'audit', partitionKey: { paths: [ '/day' ], kind: 'Hash', version: 2 } } }
}

// Custom read-only role: metadata, point reads, queries, change feed. Nothing that writes.
resource readOnlyRole 'Microsoft.DocumentDB/databaseAccounts/sqlRoleDefinitions@2024-11-15' = {
  parent: keyless
  name: guid(keyless.id, 'token-broker-read-only')
  properties: {
    roleName: 'Token Broker Cosmos Read Only'
    type: 'CustomRole'
    assignableScopes: [ keyless.id ]
    permissions: [
      {
        dataActions: [
          'Microsoft.DocumentDB/databaseAccounts/readMetadata'
          'Microsoft.DocumentDB/databaseAccounts/sqlDatabases/containers/items/read'
          'Microsoft.DocumentDB/databaseAccounts/sqlDatabases/containers/executeQuery'
          'Microsoft.DocumentDB/databaseAccounts/sqlDatabases/containers/readChangeFeed'
        ]
      }
    ]
  }
}

// Assignments scoped to exactly one container each (data-plane scopes stop at the container).
resource readerOnOrders 'Microsoft.DocumentDB/databaseAccounts/sqlRoleAssignments@2024-11-15' = {
  parent: keyless
  name: guid(keyless.id, keylessReaderPrincipalId, 'orders', 'read-only')
  properties: {
    roleDefinitionId: readOnlyRole.id
    principalId: keylessReaderPrincipalId
    scope: '${keyless.id}/dbs/${keylessDatabaseName}/colls/${orders.name}'
  }
}

resource writerOnAudit 'Microsoft.DocumentDB/databaseAccounts/sqlRoleAssignments@2024-11-15' = {
  parent: keyless
  name: guid(keyless.id, keylessWriterPrincipalId, 'audit', 'contributor')
  properties: {
    // Cosmos DB Built-in Data Contributor
    roleDefinitionId: '${keyless.id}/sqlRoleDefinitions/00000000-0000-0000-0000-000000000002'
    principalId: keylessWriterPrincipalId
    scope: '${keyless.id}/dbs/${keylessDatabaseName}/colls/${audit.name}'
  }
}

output accountName string = account.name
output accountId string = account.id
output endpoint string = account.properties.documentEndpoint
output databaseName string = databaseName
output keySecretName string = keySecret.name
output keylessAccountName string = keyless.name
output keylessEndpoint string = keyless.properties.documentEndpoint
output keylessDatabaseName string = keylessDatabaseName
