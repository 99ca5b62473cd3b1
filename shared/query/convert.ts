/**
 * PostgreSQL text-format values → JSON. Exact by default: bigint and numeric stay strings (JSON numbers
 * lose precision past 2^53), dates and timestamps become ISO 8601, json/jsonb are parsed.
 */

export type JsonValue = string | number | boolean | null | JsonValue[] | { [k: string]: JsonValue };

/** OID → type name, for the common built-in types; others are reported as `oid:N` and returned as text. */
const TYPE_NAMES: Record<number, string> = {
  16: 'bool',
  17: 'bytea',
  18: 'char',
  19: 'name',
  20: 'int8',
  21: 'int2',
  23: 'int4',
  25: 'text',
  26: 'oid',
  114: 'json',
  142: 'xml',
  700: 'float4',
  701: 'float8',
  790: 'money',
  1042: 'bpchar',
  1043: 'varchar',
  1082: 'date',
  1083: 'time',
  1114: 'timestamp',
  1184: 'timestamptz',
  1186: 'interval',
  1266: 'timetz',
  1700: 'numeric',
  2950: 'uuid',
  3802: 'jsonb',
  1000: 'bool[]',
  1005: 'int2[]',
  1007: 'int4[]',
  1016: 'int8[]',
  1009: 'text[]',
  1015: 'varchar[]',
};

export function typeName(oid: number): string {
  return TYPE_NAMES[oid] ?? `oid:${oid}`;
}

function isoTimestamp(text: string, withZone: boolean): string {
  // PostgreSQL ISO DateStyle: "2024-05-01 10:00:00.123456+00" (or without zone); keep microseconds.
  const m = /^(\d{4,}-\d{2}-\d{2}) (\d{2}:\d{2}:\d{2})(\.\d+)?([+-]\d{2})(:?\d{2})?(:?\d{2})?$/.exec(text);
  if (withZone && m) {
    const offset = `${m[4]}:${(m[5] ?? '00').replace(':', '')}`;
    const d = new Date(`${m[1]}T${m[2]}${offset}`);
    if (!Number.isNaN(d.getTime())) {
      const base = d.toISOString().slice(0, 19);
      return `${base}${m[3] ?? ''}Z`;
    }
  }
  return text.replace(' ', 'T'); // infinity, BC dates, or timestamp without zone: as PostgreSQL printed it
}

export function convertValue(oid: number, text: string | null): JsonValue {
  if (text === null) return null;
  switch (oid) {
    case 16:
      return text === 't';
    case 21:
    case 23:
    case 26:
      return Number(text);
    case 700:
    case 701: {
      const n = Number(text);
      return Number.isFinite(n) ? n : text; // NaN / Infinity are not JSON numbers
    }
    case 114:
    case 3802:
      try {
        return JSON.parse(text) as JsonValue;
      } catch {
        return text;
      }
    case 1114:
      return isoTimestamp(text, false);
    case 1184:
      return isoTimestamp(text, true);
    case 17:
      return text.startsWith('\\x') ? Buffer.from(text.slice(2), 'hex').toString('base64') : text;
    default:
      return text; // int8, numeric, date (already YYYY-MM-DD), uuid, text, …
  }
}
