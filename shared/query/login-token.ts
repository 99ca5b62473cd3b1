import type { Logger } from '../log';

/**
 * The one seam between the query function and the Cloud SQL token issue: the `sqlservice.login` access
 * token of a service account, from the broker's own Google token service (shared/google/tokens.ts
 * `getSqlLoginToken`: cached per service account and scope, single-flight), in-process.
 * `setSqlLoginTokenSource` replaces it (fault tests only).
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
  const t = source ? await source(input) : await (await import('../google/tokens')).getSqlLoginToken(input);
  return { token: t.token, expiresAtMs: t.expiresAtMs };
}
