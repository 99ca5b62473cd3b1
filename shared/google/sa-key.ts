import { BrokerError } from '../errors';
import type { SourceCredential, SourceCredentialContext } from './source';

/**
 * Fallback source credential (GOOGLE_AUTH_MODE=sa-key): the service-account key JSON the rotation timer
 * keeps in Key Vault. Placeholder until the key-rotation work lands its Key Vault client; it must return
 * a SourceCredential whose fetchSourceToken() reads the key and gets an access token for the key's
 * service account (scope cloud-platform). That account then needs roles/iam.serviceAccountTokenCreator
 * on every service account the policy names (member `serviceAccount:EMAIL`).
 */
export async function createSaKeySource(_ctx: SourceCredentialContext): Promise<SourceCredential> {
  throw new BrokerError('config_invalid', 'GOOGLE_AUTH_MODE=sa-key is not available in this build.');
}
