import { BrokerError } from '../errors';
import type { Logger } from '../log';

/**
 * The one seam between the query function and the Cloud SQL token issue: the `sqlservice.login` access
 * token of a service account, from the broker's own Google token service (cached, single-flight), in-process.
 *
 * STAND-IN until the Cloud SQL token exchange (shared/google/tokens.ts `getSqlLoginToken`) is on this
 * branch: `setSqlLoginTokenSource` must be called (the tests give it a source backed by the sandbox's
 * Google emulator state); without it the query function answers 503 config_invalid.
 */

export interface SqlLoginToken {
  readonly token: string;
  /** From Google's expireTime. */
  readonly expiresAtMs: number;
}

export interface SqlLoginTokenRequest {
  readonly serviceAccount: string;
  readonly lifetimeSeconds: number;
  readonly log?: Logger;
}

export type SqlLoginTokenSource = (input: SqlLoginTokenRequest) => Promise<SqlLoginToken>;

let source: SqlLoginTokenSource | undefined;

/** Replace the token source (tests; returns the previous one). */
export function setSqlLoginTokenSource(next: SqlLoginTokenSource | undefined): SqlLoginTokenSource | undefined {
  const prev = source;
  source = next;
  return prev;
}

export async function getLoginToken(input: SqlLoginTokenRequest): Promise<SqlLoginToken> {
  if (!source) {
    throw new BrokerError('config_invalid', 'Cloud SQL login tokens are not available in this build (the token exchange is not wired in).');
  }
  const t = await source(input);
  return { token: t.token, expiresAtMs: t.expiresAtMs };
}
