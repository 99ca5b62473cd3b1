/**
 * Pieces of a provider answer's JSON text (`ProviderResult.json`), which the providers build from parts made once per
 * grant around the per-answer values: each piece is written exactly as `JSON.stringify` of the answer would write it.
 */

/** A number as JSON.stringify writes it (NaN and ±Infinity as null, -0 as 0). */
export function jsonNumber(n: number): string {
  return Number.isFinite(n) ? String(n === 0 ? 0 : n) : 'null';
}
