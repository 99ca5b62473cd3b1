// Caller identity mode (docs/cloudsql.md, "Two identity modes"; docs/deploy.md): the federated identity credentials
// that let the broker's managed identity authenticate the app registrations making the Entra on-behalf-of request, so
// no client secret or certificate exists (https://learn.microsoft.com/entra/workload-id/workload-identity-federation-config-app-trust-managed-identity).
// Microsoft Graph Bicep (GA, types v1.0:1.0.0, Bicep >= 0.36.1; infra/bicepconfig.json):
// https://learn.microsoft.com/graph/templates/reference/federatedidentitycredentials?view=graph-bicep-1.0
// The deploying principal needs Application.ReadWrite.All (delegated) or Application.ReadWrite.OwnedBy as an owner.
extension microsoftGraphV1

@description('uniqueName of the app registration whose tokens callers present to the token and query endpoints (its client id is CALLER_OBO_CLIENT_ID). An app created outside Bicep needs its uniqueName set once (docs/deploy.md).')
param oboAppUniqueName string
@description('uniqueName of the MCP resource app registration, when MCP callers use the caller identity mode and it is another app (CALLER_OBO_MCP_CLIENT_ID); empty: none')
param mcpAppUniqueName string = ''
@description('Tenant of the managed identity: the FIC issuer is https://login.microsoftonline.com/TENANT/v2.0')
param tenantId string
@description('Principal (object) id of the broker\'s managed identity: the FIC subject')
param brokerPrincipalId string

var issuer = '${environment().authentication.loginEndpoint}${tenantId}/v2.0'
// Entra allows exactly one audience on a FIC; for a managed identity as the credential it is this one (public cloud).
var audiences = [ 'api://AzureADTokenExchange' ]

resource oboApp 'Microsoft.Graph/applications@v1.0' existing = {
  uniqueName: oboAppUniqueName
}

resource oboFic 'Microsoft.Graph/applications/federatedIdentityCredentials@v1.0' = {
  name: '${oboApp.uniqueName}/token-broker-managed-identity'
  description: 'The token broker\'s managed identity makes the on-behalf-of request for callers in the caller identity mode'
  issuer: issuer
  subject: brokerPrincipalId
  audiences: audiences
}

resource mcpApp 'Microsoft.Graph/applications@v1.0' existing = if (!empty(mcpAppUniqueName)) {
  uniqueName: mcpAppUniqueName
}

resource mcpFic 'Microsoft.Graph/applications/federatedIdentityCredentials@v1.0' = if (!empty(mcpAppUniqueName)) {
  name: '${mcpApp.uniqueName}/token-broker-managed-identity'
  description: 'The token broker\'s managed identity makes the on-behalf-of request for MCP callers in the caller identity mode'
  issuer: issuer
  subject: brokerPrincipalId
  audiences: audiences
}

output oboAppClientId string = oboApp.appId
output mcpAppClientId string = empty(mcpAppUniqueName) ? '' : mcpApp.appId
