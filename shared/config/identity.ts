import { optionalStr } from './setting-types';

/**
 * The Function's managed identity, declared once and shared by every section that needs it (Key Vault, the
 * keyless Google exchange, telemetry): the one credential every Azure-side token comes from (shared/azure/managed-identity.ts).
 */
export const AZURE_CLIENT_ID = optionalStr('AZURE_CLIENT_ID', {
  doc: "Client id of the Function's user-assigned managed identity (unset: the system-assigned identity)",
});
