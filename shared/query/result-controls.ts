import { createHmac } from 'node:crypto';
import { BrokerError } from '../errors';
import type { CatalogQuery } from './catalog';
import type { JsonValue } from './convert';

/**
 * Result controls a catalog entry declares, applied by the broker before an answer leaves it, whoever asked
 * (POST /api/query/{name} and MCP tools alike, on the one query path):
 * - `rowLimit` (rows; at most rowLimit + 1 leave the server) and `maxBytes` (the JSON size of the rows): a result cut
 *   short carries `truncated: true` and a `notice` naming the limit, its value and the rows returned. Never silent.
 * - `masks` per column: `redact` (null), `partial` (keep the last N characters, the rest `*`), `hash` (HMAC-SHA256
 *   with QUERY_MASK_HASH_KEY, hex: the same value hashes the same, so masked values still join and group). A policy
 *   rule may exempt the callers it grants from named masks (`maskExemptions`: `QUERY.COLUMN` or `QUERY.*`).
 */

export interface TruncationNotice {
  /** `maxItems`: a Cosmos query tool's item limit (shared/mcp/cosmos-tools.ts). */
  readonly limit: 'rowLimit' | 'maxItems' | 'maxBytes';
  readonly value: number;
  readonly rowsReturned: number;
}

export type MaskSpec = NonNullable<CatalogQuery['masks']>[string];

/** Whether the granting rule's exemptions lift the mask of `column` of `query`. */
export function exempt(exemptions: readonly string[], query: string, column: string): boolean {
  return exemptions.includes(`${query}.${column}`) || exemptions.includes(`${query}.*`);
}

function maskValue(v: JsonValue, mask: MaskSpec, key: string | undefined): JsonValue {
  if (v === null) return null;
  const text = typeof v === 'string' ? v : JSON.stringify(v);
  switch (mask.type) {
    case 'redact':
      return null;
    case 'partial': {
      const chars = [...text];
      const keep = Math.min(mask.keepLast, Math.floor(chars.length / 2));
      return '*'.repeat(chars.length - keep) + chars.slice(chars.length - keep).join('');
    }
    case 'hash':
      if (key === undefined || key.length < 32)
        throw new BrokerError(
          'config_invalid',
          'QUERY_MASK_HASH_KEY (at least 32 characters) is required by a catalog hash mask.',
        );
      return createHmac('sha256', key).update(text, 'utf8').digest('hex');
  }
}

/** Mask the declared columns (those the granting rule does not exempt). */
export function applyMasks(
  q: Pick<CatalogQuery, 'name' | 'masks'>,
  columns: readonly { name: string }[],
  rows: JsonValue[][],
  exemptions: readonly string[],
  key: string | undefined,
): { rows: JsonValue[][]; masked: string[] } {
  const masks = q.masks ?? {};
  const active = columns
    .map((c, i) => ({ i, name: c.name, mask: Object.prototype.hasOwnProperty.call(masks, c.name) ? masks[c.name] : undefined }))
    .filter((c): c is { i: number; name: string; mask: MaskSpec } => c.mask !== undefined && !exempt(exemptions, q.name, c.name));
  if (active.length === 0) return { rows, masked: [] };
  for (const row of rows) for (const c of active) row[c.i] = maskValue(row[c.i] ?? null, c.mask, key);
  return { rows, masked: active.map((c) => c.name) };
}

/** Keep the leading rows (or Cosmos items) whose JSON fits in `maxBytes`: the rows kept, or the same array when all fit. */
export function capBytes<T>(rows: T[], maxBytes: number | undefined): { rows: T[]; cut: boolean } {
  if (maxBytes === undefined) return { rows, cut: false };
  let size = 2; // []
  for (let i = 0; i < rows.length; i++) {
    size += Buffer.byteLength(JSON.stringify(rows[i])) + (i > 0 ? 1 : 0);
    if (size > maxBytes) return { rows: rows.slice(0, i), cut: true };
  }
  return { rows, cut: false };
}
