import { defineSection } from './settings';
import { url } from './setting-types';

/** Cloud SQL settings shared by the token exchange (connect details of the answer) and the query function. */
export const cloudSqlConfig = defineSection('cloudsql', {
  sqlAdminEndpoint: url('CLOUDSQL_ADMIN_ENDPOINT', {
    doc: "Root URL of the Cloud SQL Admin API: connectSettings (the token answer's IP addresses and server CA) and, through the connector, generateEphemeralCert",
    default: 'https://sqladmin.googleapis.com',
  }),
});
