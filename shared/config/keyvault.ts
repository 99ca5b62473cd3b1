import { AZURE_CLIENT_ID } from './identity';
import { defineSection } from './settings';
import { int, optionalStr, url } from './setting-types';

/** Key Vault (secrets) access through the Function's managed identity. */
export const keyVaultConfig = defineSection('keyvault', {
  vaultUrl: url('KEY_VAULT_URL', {
    doc: 'Vault URL, e.g. https://my-vault.vault.azure.net (HTTPS only)',
    protocols: ['https:'],
  }),
  caFile: optionalStr('KEY_VAULT_CA_FILE', {
    doc: 'PEM CA bundle trusted for the vault; local development only: honoured only when KEY_VAULT_URL is a loopback host',
  }),
  clientId: AZURE_CLIENT_ID,
  maxRetries: int('KEY_VAULT_MAX_RETRIES', {
    doc: 'Retries of one Key Vault call on 429/5xx/network errors (the SDK retry policy)',
    default: '2',
    min: 0,
    max: 5,
  }),
});

export type KeyVaultConfig = ReturnType<typeof keyVaultConfig.get>;
