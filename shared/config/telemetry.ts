import { AZURE_CLIENT_ID } from './identity';
import { defineSection } from './settings';
import { optionalStr } from './setting-types';

/**
 * Telemetry (OpenTelemetry metrics and traces to Application Insights). Unset: no telemetry SDK is
 * loaded and every instrument is a no-op. Read once per process, on the first instrument call.
 */
export const telemetryConfig = defineSection('telemetry', {
  connectionString: optionalStr('APPLICATIONINSIGHTS_CONNECTION_STRING', {
    doc: 'Application Insights connection string; when set, metrics and traces are exported with @azure/monitor-opentelemetry (unset: no telemetry)',
  }),
  clientId: AZURE_CLIENT_ID,
});

export type TelemetryConfig = ReturnType<typeof telemetryConfig.get>;
