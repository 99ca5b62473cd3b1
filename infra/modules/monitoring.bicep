// Log Analytics + workspace-based Application Insights, Entra ID ingestion only: the Functions host sends its
// telemetry with APPLICATIONINSIGHTS_AUTHENTICATION_STRING, the broker's own OpenTelemetry export
// (shared/observability/telemetry.ts) with the Function's managed identity as the exporter credential; both need Monitoring
// Metrics Publisher, granted below. (test/infra/iac-wiring.test.ts holds the exporter and this setting together.)
param name string
param location string
param tags object = {}
@description('Principal id of the Function identity (publishes telemetry with Entra ID auth)')
param brokerPrincipalId string
@description('Entra-only ingestion; requires the broker\'s exporter to authenticate with its managed identity')
param disableLocalAuth bool = true

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
