// Log Analytics + workspace-based Application Insights. The Functions host sends its telemetry with Entra ID
// (APPLICATIONINSIGHTS_AUTHENTICATION_STRING + Monitoring Metrics Publisher). The broker's own OpenTelemetry export
// (shared/telemetry.ts, @azure/monitor-opentelemetry) authenticates with the connection string only: it does not
// read APPLICATIONINSIGHTS_AUTHENTICATION_STRING and is given no credential, so local auth stays on by default.
// Turn disableLocalAuth on once shared/telemetry.ts passes a managed-identity credential to the exporter
// (test/infra/iac-wiring.test.ts holds the two together).
param name string
param location string
param tags object = {}
@description('Principal id of the Function identity (publishes telemetry with Entra ID auth)')
param brokerPrincipalId string
@description('Entra-only ingestion; requires the broker\'s exporter to authenticate with its managed identity')
param disableLocalAuth bool = false

resource workspace 'Microsoft.OperationalInsights/workspaces@2023-09-01' = {
  name: 'log-${name}'
  location: location
  tags: tags
  properties: {
    sku: { name: 'PerGB2018' }
    retentionInDays: 30
  }
}

resource appInsights 'Microsoft.Insights/components@2020-02-02' = {
  name: 'appi-${name}'
  location: location
  tags: tags
  kind: 'web'
  properties: {
    Application_Type: 'web'
    WorkspaceResourceId: workspace.id
    DisableLocalAuth: disableLocalAuth
  }
}

// Monitoring Metrics Publisher: the only right the Function needs on Application Insights (Entra ID ingestion).
resource metricsPublisher 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  scope: appInsights
  name: guid(appInsights.id, brokerPrincipalId, '3913510d-42f4-4e42-8a64-420c390055eb')
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', '3913510d-42f4-4e42-8a64-420c390055eb')
    principalId: brokerPrincipalId
    principalType: 'ServicePrincipal'
  }
}

output appInsightsName string = appInsights.name
output appInsightsId string = appInsights.id
output connectionString string = appInsights.properties.ConnectionString
output workspaceId string = workspace.id
