import type { Principal } from '../auth/principal';
import type { Logger } from '../observability/log';
import type { AppContext } from '../app/context';

export const TOKEN_EXCHANGE_GRANT = 'urn:ietf:params:oauth:grant-type:token-exchange';
export const ACCESS_TOKEN_TYPE = 'urn:ietf:params:oauth:token-type:access_token';
export const JWT_TOKEN_TYPE = 'urn:ietf:params:oauth:token-type:jwt';

/** What a provider gets: both identities, the policy's grant, the caller's requested lifetime. */
export interface IssueInput<G> {
  readonly client: Principal;
  readonly subject: Principal;
  readonly grant: G;
  /** `requested_lifetime` in seconds, if the caller asked for less than the rule's maximum. */
  readonly requestedLifetimeSeconds?: number;
  readonly log: Logger;
  readonly correlationId: string;
  /** The app's process-wide objects (policy, Google tokens, Cosmos clients, identities). */
  readonly app: AppContext;
}

/** The RFC 8693 §2.2.1 response, plus target-specific connection details. */
export interface IssuedToken {
  readonly access_token: string;
  readonly issued_token_type: string;
  readonly token_type: string;
  readonly expires_in: number;
  readonly [extra: string]: string | number | boolean | null | undefined | readonly Readonly<Record<string, string>>[];
}

export interface ProviderResult {
  readonly response: IssuedToken;
  /** `JSON.stringify(response)`, when the provider made it (with parts serialised once); else it is made here. */
  readonly json?: string;
  /** A one-way fingerprint of the credential for the audit log (see audit.tokenFingerprint). */
  readonly tokenIdHash: string;
  /** Whether it was served from the broker's cache. */
  readonly cached: boolean;
}
