import type { Principal } from './principal';

/**
 * The raw subject token a validated Principal was built from, for the one use that needs it: the caller identity
 * mode's Entra on-behalf-of exchange (shared/cloudsql/caller-chain.ts), whose `assertion` is the caller's own token.
 * Kept beside the Principal (a WeakMap: it lives as long as the Principal and never appears in its fields), so no
 * audit line, log record or explain answer that serialises a Principal can carry the token.
 */
const tokens = new WeakMap<Principal, string>();

export function rememberSubjectToken(p: Principal, token: string): Principal {
  tokens.set(p, token);
  return p;
}

export function subjectTokenOf(p: Principal): string | undefined {
  return tokens.get(p);
}
