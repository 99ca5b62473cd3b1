// User-assigned identities: the broker Function's own, APIM's (the broker's only allowed client), and the two
// identities of keyless Cosmos grants ("auth": "rbac"), attached to the Function App, each holding one
// container-scoped data-plane role assignment (infra/modules/cosmos.bicep) and nothing else.
param name string
param location string
param tags object = {}

resource broker 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: 'id-broker-${name}'
  location: location
  tags: tags
}

resource gateway 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: 'id-apim-${name}'
  location: location
  tags: tags
}

resource cosmosReader 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: 'id-cosmos-reader-${name}'
  location: location
  tags: tags
}

resource cosmosWriter 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: 'id-cosmos-writer-${name}'
  location: location
  tags: tags
}

output brokerId string = broker.id
output brokerClientId string = broker.properties.clientId
output brokerPrincipalId string = broker.properties.principalId
output gatewayId string = gateway.id
output gatewayClientId string = gateway.properties.clientId
output gatewayPrincipalId string = gateway.properties.principalId
output cosmosReaderId string = cosmosReader.id
output cosmosReaderClientId string = cosmosReader.properties.clientId
output cosmosReaderPrincipalId string = cosmosReader.properties.principalId
output cosmosWriterId string = cosmosWriter.id
output cosmosWriterClientId string = cosmosWriter.properties.clientId
output cosmosWriterPrincipalId string = cosmosWriter.properties.principalId
