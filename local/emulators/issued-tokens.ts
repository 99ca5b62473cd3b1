/**
 * Process-wide registry of every credential the emulators hand out (JWTs, opaque Google tokens, Cosmos
 * resource tokens, secret values). Tests scan the broker's log output against it: no issued token may ever
 * appear in a log line. Emulators only; production code never imports this.
 */
const issued = new Set<string>();

/** Remember a credential an emulator issued (ignored when shorter than 16 characters: too short to scan for). */
export function recordIssuedToken(token: string): void {
  if (token.length >= 16) issued.add(token);
}

export function issuedTokens(): ReadonlySet<string> {
  return issued;
}
