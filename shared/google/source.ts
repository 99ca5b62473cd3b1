import { BrokerError } from '../errors';
import type { SourceCredential, SourceCredentialContext } from './source-types';

/**
 * Build the source credential for the configured mode (what it is: ./source-types.ts); SDKs are loaded here,
 * lazily. keyless.ts and sa-key.ts implement the types without importing this module (no import cycle).
 */
export async function createSourceCredential(ctx: SourceCredentialContext): Promise<SourceCredential> {
  switch (ctx.config.authMode) {
    case 'keyless':
      return (await import('./keyless')).createKeylessSource(ctx);
    case 'sa-key':
      return (await import('./sa-key')).createSaKeySource(ctx);
    default:
      throw new BrokerError('config_invalid', 'GOOGLE_AUTH_MODE is not supported.');
  }
}
