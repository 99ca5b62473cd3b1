import type { SourceCredential, SourceCredentialContext } from './source';

/**
 * Fallback source credential (GOOGLE_AUTH_MODE=sa-key): the service-account key JSON the rotation timer
 * keeps in Key Vault (GOOGLE_SA_KEY_SECRET), read through the Function's managed identity, exchanged at
 * Google's OAuth token endpoint (JWT bearer) for a cloud-platform token. That account then needs
 * roles/iam.serviceAccountTokenCreator on every service account the policy names. The key is cached,
 * follows new Key Vault versions, and is re-read once when Google refuses it (rotated).
 */
export async function createSaKeySource(ctx: SourceCredentialContext): Promise<SourceCredential> {
  const { saKeySourceFromSettings } = await import('../rotation/saKeySource');
  return saKeySourceFromSettings({ timeoutMs: ctx.timeoutMs, now: ctx.now });
}
