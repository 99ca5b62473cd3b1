/**
 * What the query pools have observed of each database (instance/database/identity), for /api/health:
 * the outcome of the last round trip, so a health call never opens a connection of its own.
 */

export interface DbObservation {
  readonly ok: boolean;
  /** Failure reason (db_unavailable reason or error code); absent when ok. */
  readonly reason?: string;
  readonly at: number;
}

const observed = new Map<string, DbObservation>();
const MAX_TRACKED = 256;

export function observeDb(key: string, ok: boolean, reason?: string): void {
  // A success after a success changes nothing health reads (`at` is only reported for failures): no re-insert.
  if (ok && observed.get(key)?.ok === true) return;
  observed.delete(key);
  observed.set(key, ok ? { ok, at: Date.now() } : { ok, reason, at: Date.now() });
  if (observed.size > MAX_TRACKED) observed.delete(observed.keys().next().value as string);
}

/** Every database the pools talked to, with the outcome of the last round trip. */
export function dbObservations(): ReadonlyMap<string, DbObservation> {
  return observed;
}
