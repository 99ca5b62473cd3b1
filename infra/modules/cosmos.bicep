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

output accountName string = account.name
output endpoint string = account.properties.documentEndpoint
output databaseName string = databaseName
output keySecretName string = keySecret.name
