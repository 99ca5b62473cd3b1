// Two user-assigned identities: the broker Function's own, and APIM's (the broker's only allowed client).
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

output brokerId string = broker.id
output brokerClientId string = broker.properties.clientId
output brokerPrincipalId string = broker.properties.principalId
output gatewayId string = gateway.id
output gatewayClientId string = gateway.properties.clientId
output gatewayPrincipalId string = gateway.properties.principalId
