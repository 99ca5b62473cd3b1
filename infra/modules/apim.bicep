// API Management: its user-assigned identity is the broker's client (RFC 8693 client authentication with a
// managed-identity token); named values hold every environment-specific setting the policies use (no secret
// among them); four APIs with the policies of infra/apim/, and the broker's own API imported from openapi.yaml.
param name string
param location string
param tags object = {}
param publisherEmail string
param publisherName string
@allowed([ 'Developer', 'Basic', 'Standard', 'BasicV2', 'StandardV2', 'Premium' ])
@description('A tier with the built-in cache (the Consumption tier has none; the policies cache tokens)')
param sku string = 'Developer'
param gatewayIdentityId string
param gatewayClientId string
param tenantId string
param brokerUrl string
param brokerAppIdUri string
param ordersApiAudience string
param profilesApiAudience string
param ordersBackendUrl string
param cloudsqlTarget string
param cosmosTarget string
@description('cosmos://ACCOUNT/DATABASE/CONTAINER of the keyless (rbac) orders container')
param cosmosRbacTarget string
@description('Endpoint of the keyless Cosmos account (APIM calls its REST API with the identity token)')
param cosmosRbacEndpoint string
@description('Client certificates (mTLS, docs/client-certificates.md): the CA certificates callers\' certificates chain to, each base64 DER; empty: no mTLS API')
param clientCaCertificates array = []

var apimName = 'apim-${name}'
var mtls = !empty(clientCaCertificates)

resource apim 'Microsoft.ApiManagement/service@2024-05-01' = {
  name: 'apim-${name}'
  location: location
  tags: tags
  sku: { name: sku, capacity: 1 }
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: { '${gatewayIdentityId}': {} }
  }
  properties: {
    publisherEmail: publisherEmail
    publisherName: publisherName
    // Client certificates: the gateway asks callers for one on its host name (negotiateClientCertificate) and trusts
    // the client CA certificates (validate-client-certificate validate-trust). APIM terminates TLS; the broker verifies
    // the forwarded certificate again against BROKER_CLIENT_CA_BUNDLE (the same CAs).
    certificates: [for c in clientCaCertificates: { storeName: 'Root', encodedCertificate: c }]
    hostnameConfigurations: mtls
      ? [
          {
            type: 'Proxy'
            hostName: '${apimName}.azure-api.net'
            certificateSource: 'BuiltIn'
            defaultSslBinding: true
            negotiateClientCertificate: true
          }
        ]
      : []
  }
}

var namedValues = {
  'entra-tenant-id': tenantId
  'broker-base-url': brokerUrl
  'broker-app-id-uri': brokerAppIdUri
  'apim-identity-client-id': gatewayClientId
  'orders-api-audience': ordersApiAudience
  'profiles-api-audience': profilesApiAudience
  'cloudsql-target': cloudsqlTarget
  'cosmos-target': cosmosTarget
  'cosmos-rbac-target': cosmosRbacTarget
  'cosmos-rbac-endpoint': cosmosRbacEndpoint
}

resource values 'Microsoft.ApiManagement/service/namedValues@2024-05-01' = [for nv in items(namedValues): {
  parent: apim
  name: nv.key
  properties: {
    displayName: nv.key
    value: nv.value
    secret: false
  }
}]

// --- Policy fragments shared by the APIs: the cached token exchange at the broker, and the on-error answer ---
resource brokerExchange 'Microsoft.ApiManagement/service/policyFragments@2024-05-01' = {
  parent: apim
  name: 'broker-exchange'
  properties: {
    description: 'Credential for the validated caller from the token broker, through the APIM cache'
    format: 'xml'
    value: loadTextContent('../apim/fragments/broker-exchange.xml')
  }
  dependsOn: [ values ]
}

resource callerErrors 'Microsoft.ApiManagement/service/policyFragments@2024-05-01' = {
  parent: apim
  name: 'caller-errors'
  properties: {
    description: 'Fixed problem answers for on-error sections (never the error message)'
    format: 'xml'
    value: loadTextContent('../apim/fragments/caller-errors.xml')
  }
}

// The same exchange for callers authenticated by a client certificate (validated by APIM, verified again by the broker).
resource brokerExchangeCertificate 'Microsoft.ApiManagement/service/policyFragments@2024-05-01' = if (mtls) {
  parent: apim
  name: 'broker-exchange-certificate'
  properties: {
    format: 'xml'
    value: loadTextContent('../apim/fragments/broker-exchange-certificate.xml')
  }
  dependsOn: [ values ]
}

// --- Orders API, backed by Cloud SQL: the backend receives the caller's database token (X-Db-Token) ---
resource ordersApi 'Microsoft.ApiManagement/service/apis@2024-05-01' = {
  parent: apim
  name: 'orders'
  properties: {
    displayName: 'Orders (Cloud SQL)'
    path: 'orders'
    protocols: [ 'https' ]
    serviceUrl: ordersBackendUrl
    subscriptionRequired: false
  }
}

resource ordersGet 'Microsoft.ApiManagement/service/apis/operations@2024-05-01' = {
  parent: ordersApi
  name: 'list-orders'
  properties: { displayName: 'List orders', method: 'GET', urlTemplate: '/' }
}

resource ordersPolicy 'Microsoft.ApiManagement/service/apis/policies@2024-05-01' = {
  parent: ordersApi
  name: 'policy'
  properties: { format: 'xml', value: loadTextContent('../apim/cloudsql-api.xml') }
  dependsOn: [ values, brokerExchange, callerErrors ]
}

// --- Orders API for certificate callers (mTLS): partners, devices, on-premises jobs ---
resource partnerOrdersApi 'Microsoft.ApiManagement/service/apis@2024-05-01' = if (mtls) {
  parent: apim
  name: 'orders-mtls'
  properties: {
    displayName: 'Orders (Cloud SQL, client certificate)'
    path: 'orders-mtls'
    protocols: [ 'https' ]
    serviceUrl: ordersBackendUrl
    subscriptionRequired: false
  }
}

resource partnerOrdersGet 'Microsoft.ApiManagement/service/apis/operations@2024-05-01' = if (mtls) {
  parent: partnerOrdersApi
  name: 'list-orders'
  properties: { displayName: 'List orders', method: 'GET', urlTemplate: '/' }
}

resource partnerOrdersPolicy 'Microsoft.ApiManagement/service/apis/policies@2024-05-01' = if (mtls) {
  parent: partnerOrdersApi
  name: 'policy'
  properties: { format: 'xml', value: loadTextContent('../apim/cloudsql-mtls-api.xml') }
  dependsOn: [ values, brokerExchangeCertificate, callerErrors ]
}

// --- Profiles token API: hands Cosmos resource tokens to SPA/mobile clients ---
resource profilesApi 'Microsoft.ApiManagement/service/apis@2024-05-01' = {
  parent: apim
  name: 'profiles-token'
  properties: {
    displayName: 'Profiles (Cosmos resource tokens)'
    path: 'profiles'
    protocols: [ 'https' ]
    subscriptionRequired: false
  }
}

resource profilesToken 'Microsoft.ApiManagement/service/apis/operations@2024-05-01' = {
  parent: profilesApi
  name: 'get-token'
  properties: { displayName: 'Get a resource token for my profile', method: 'POST', urlTemplate: '/token' }
}

resource profilesPolicy 'Microsoft.ApiManagement/service/apis/policies@2024-05-01' = {
  parent: profilesApi
  name: 'policy'
  properties: { format: 'xml', value: loadTextContent('../apim/cosmos-token-api.xml') }
  dependsOn: [ values, brokerExchange, callerErrors ]
}

// --- My orders API, backed by keyless Cosmos (Entra ID RBAC): the identity token stays inside APIM ---
resource myOrdersApi 'Microsoft.ApiManagement/service/apis@2024-05-01' = {
  parent: apim
  name: 'my-orders'
  properties: {
    displayName: 'My orders (Cosmos, keyless)'
    path: 'my-orders'
    protocols: [ 'https' ]
    serviceUrl: cosmosRbacEndpoint
    subscriptionRequired: false
  }
}

resource myOrdersGet 'Microsoft.ApiManagement/service/apis/operations@2024-05-01' = {
  parent: myOrdersApi
  name: 'get-order'
  properties: {
    displayName: 'Read one of my orders'
    method: 'GET'
    urlTemplate: '/docs/{id}'
    templateParameters: [ { name: 'id', type: 'string', required: true } ]
  }
}

resource myOrdersPolicy 'Microsoft.ApiManagement/service/apis/policies@2024-05-01' = {
  parent: myOrdersApi
  name: 'policy'
  properties: { format: 'xml', value: loadTextContent('../apim/cosmos-rbac-api.xml') }
  dependsOn: [ values, brokerExchange, callerErrors ]
}

// --- Orders query API: fronts the broker's POST /api/query/{name} ---
resource queryApi 'Microsoft.ApiManagement/service/apis@2024-05-01' = {
  parent: apim
  name: 'orders-query'
  properties: {
    displayName: 'Orders queries (Cloud SQL, read-only)'
    path: 'orders-query'
    protocols: [ 'https' ]
    serviceUrl: '${brokerUrl}/api'
    subscriptionRequired: false
  }
}

resource queryRun 'Microsoft.ApiManagement/service/apis/operations@2024-05-01' = {
  parent: queryApi
  name: 'run-query'
  properties: {
    displayName: 'Run a catalogued query'
    method: 'POST'
    urlTemplate: '/query/{name}'
    templateParameters: [ { name: 'name', type: 'string', required: true } ]
  }
}

resource queryPolicy 'Microsoft.ApiManagement/service/apis/policies@2024-05-01' = {
  parent: queryApi
  name: 'policy'
  properties: { format: 'xml', value: loadTextContent('../apim/query-api.xml') }
  dependsOn: [ values, callerErrors ]
}

// --- The broker's own API, imported from its OpenAPI document (operators' and admins' view; subscription key required) ---
resource brokerApi 'Microsoft.ApiManagement/service/apis@2024-05-01' = {
  parent: apim
  name: 'token-broker'
  properties: {
    displayName: 'Token broker (internal)'
    path: 'broker'
    protocols: [ 'https' ]
    serviceUrl: '${brokerUrl}/api'
    subscriptionRequired: true
    format: 'openapi'
    value: loadTextContent('../../openapi.yaml')
  }
}

output name string = apim.name
output gatewayUrl string = apim.properties.gatewayUrl
