import type { LogFields, Logger } from '../observability/log';
import type { ManagedIdentities } from '../azure/managed-identity';
import type { GoogleConfig } from '../config/google';

/**
 * The source credential: whatever proves the broker's identity to Google, producing an access token
 * that may call IAM Credentials `generateAccessToken` on the service accounts the policy names.
 *
 * - `keyless` (default): workload identity federation. The Function's managed identity token is
 *   exchanged at Google STS for a federated token (shared/google/keyless.ts).
 * - `sa-key`: a service-account key JSON kept in Key Vault by the rotation timer signs a JWT for an
 *   access token of that "broker" service account (shared/google/sa-key.ts, owned by the rotation work).
 *
 * Implementations do not cache: shared/google/tokens.ts caches the source token per its expiry and
 * coalesces concurrent fetches. They must bound every call with `timeoutMs` and throw BrokerErrors
 * whose messages carry no upstream text.
 */
export interface SourceToken {
  readonly token: string;
  /** Milliseconds since the epoch, from the issuer's answer (expires_in / expiry). */
  readonly expiresAtMs: number;
}

export interface SourceCredential {
  readonly mode: GoogleConfig['authMode'];
  /** A fresh source access token (scope cloud-platform). */
  fetchSourceToken(): Promise<SourceToken>;
}

export interface SourceCredentialContext {
  readonly config: GoogleConfig;
  readonly timeoutMs: number;
  readonly now: () => number;
  /** The app context's managed identities (the keyless subject token, the sa-key fallback's Key Vault). */
  readonly identities: ManagedIdentities;
  /** The app context's loggers (default: stdout). */
  readonly logger?: (fields: LogFields) => Logger;
}
