import type { Logger } from '../observability/log';
import type { GoogleTokens } from '../google/tokens';

/**
 * The query function's view of the Cloud SQL token issue: the connector's access token of a service account
 * (sqlservice.admin + sqlservice.login: the connector uses one credential for the Admin API and the login), from the broker's own Google token service (shared/google/tokens.ts: cached per service account
 * and scope, single-flight), loaded lazily (the Google SDK stays off the cold path of the other functions).
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

export async function getLoginToken(google: GoogleTokens, input: SqlLoginTokenRequest): Promise<SqlLoginToken> {
  const t = await google.sqlConnectorToken(input);
  return { token: t.token, expiresAtMs: t.expiresAtMs };
}

/** The instance refused a login with this token (revoked, expired early): the next login gets a fresh one. */
export function forgetLoginToken(google: GoogleTokens, serviceAccount: string): void {
  google.forgetSqlLoginToken({ serviceAccount });
}
