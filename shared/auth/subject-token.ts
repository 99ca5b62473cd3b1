import type { Principal } from './principal';
import { detached } from './jwt';

/**
 * The raw subject token a validated Principal was built from, for the one use that needs it: the caller identity
 * mode's Entra on-behalf-of exchange (shared/cloudsql/caller-chain.ts), whose `assertion` is the caller's own token.
 * Kept beside the Principal (a WeakMap: it lives as long as the Principal and never appears in its fields), so no
 * audit line, log record or explain answer that serialises a Principal can carry the token.
 */
const tokens = new WeakMap<Principal, string>();

export function rememberSubjectToken(p: Principal, token: string): Principal {
  // Once per Principal (the verified-token cache hands back the same one for the same token), as a copy of its own:
  // the request's token is cut from the request's text, which would otherwise stay alive as long as the Principal.
  if (!tokens.has(p)) tokens.set(p, detached(token));
  return p;
}

export function subjectTokenOf(p: Principal): string | undefined {
  return tokens.get(p);
}
