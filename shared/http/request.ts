import type { HttpRequest } from '@azure/functions';
import { BrokerError } from '../errors';
import { parseStrictJson, StrictJsonError } from './strict-json';

export const MAX_BODY_BYTES = 64 * 1024;

export type FormValue = string;

/**
 * The body as UTF-8 text, read at most `maxBytes` far: a declared Content-Length over the cap is refused before
 * reading, a streamed body over it as soon as the cap is passed (the rest is never read: the stream is cancelled).
 */
export function readBodyText(
  req: Pick<HttpRequest, 'headers' | 'body'> & Partial<Pick<HttpRequest, 'text'>>,
  maxBytes = MAX_BODY_BYTES,
): Promise<string> {
  return uncheckedBodyText(req, maxBytes).then((text) => withinCap(text, maxBytes));
}

/**
 * The body's text as the host hands it over — the host's own promise, nothing chained to it — NOT yet checked against
 * the cap's decoded size: pass it to `paramsOfBody` (which checks it); anything else reads with `readBodyText` or
 * `readParams`. A caller with one `await` for its body makes no other promise for it. A declared length within the cap bounds the body (HTTP framing: nothing past Content-Length is
 * body), so the whole text is read at once; a chunked body is read as a stream and cut at the cap.
 */
export function uncheckedBodyText(
  req: Pick<HttpRequest, 'headers' | 'body'> & Partial<Pick<HttpRequest, 'text'>>,
  maxBytes = MAX_BODY_BYTES,
): Promise<string> {
  const length = req.headers.get('content-length');
  const declared = Number(length ?? '0');
  if (declared > maxBytes) return Promise.reject(tooLarge(maxBytes));
  if (length !== null && /^\d+$/.test(length) && typeof req.text === 'function' && !req.headers.get('transfer-encoding'))
    return req.text();
  return readStream(req.body, maxBytes);
}

/** The text, unless its UTF-8 passes the cap (bytes that are not UTF-8 decode to a 3-byte U+FFFD each). */
function withinCap(text: string, maxBytes: number): string {
  // UTF-8 is at most 3 bytes per UTF-16 unit: only a long text is counted.
  if (text.length * 3 > maxBytes && Buffer.byteLength(text) > maxBytes) throw tooLarge(maxBytes);
  return text;
}

function tooLarge(maxBytes: number): BrokerError {
  return new BrokerError('payload_too_large', `The request body exceeds ${maxBytes} bytes.`);
}

async function readStream(stream: HttpRequest['body'], maxBytes: number): Promise<string> {
  if (!stream) return '';
  const reader = stream.getReader();
  const chunks: Uint8Array[] = [];
  let size = 0;
  for (;;) {
    const { done, value } = (await reader.read()) as ReadableStreamReadResult<Uint8Array>;
    if (done) break;
    size += value.byteLength;
    if (size > maxBytes) {
      await reader.cancel().catch(() => undefined);
      throw tooLarge(maxBytes);
    }
    chunks.push(value);
  }
  return Buffer.concat(chunks).toString('utf8');
}

/**
 * Decoded short names and values, remembered (bounded): a token request repeats the same few escaped ones (grant_type,
 * subject_token_type, resource) on every call. Keyed by the raw text, so the same text always decodes the same.
 */
const decodedShort = new Map<string, string>();
const SHORT = 256;

/** One name or value of a form: `+` is a space, then percent-decoding and UTF-8 (as URLSearchParams does). */
function formDecode(raw: string, sequence: string, which: 0 | 1): string {
  if (!raw.includes('+') && !raw.includes('%')) return raw;
  if (raw.length > SHORT) return decodeEscaped(raw, sequence, which);
  let decoded = decodedShort.get(raw);
  if (decoded === undefined) {
    decoded = decodeEscaped(raw, sequence, which);
    if (decodedShort.size >= 1024) decodedShort.clear();
    decodedShort.set(raw, decoded);
  }
  return decoded;
}

function decodeEscaped(raw: string, sequence: string, which: 0 | 1): string {
  const spaced = raw.replace(/\+/g, ' ');
  if (!spaced.includes('%')) return spaced;
  try {
    return decodeURIComponent(spaced);
  } catch {
    // A malformed escape or bytes that are not UTF-8: URLSearchParams keeps the one and replaces the other.
    // ('&' first: URLSearchParams strips a leading '?' of its whole input, never of a later sequence.)
    const [entry] = new URLSearchParams(`&${sequence}`);
    return entry![which];
  }
}

/**
 * The name-value pairs of an `application/x-www-form-urlencoded` body, in order, exactly as `new URLSearchParams(text)`
 * gives them (WHATWG URL §5.1: split on `&`, skip empty sequences, split at the first `=`, decode), without its
 * per-character scan of a body that is mostly a JWT with nothing to decode.
 */
export function parseForm(text: string): [string, string][] {
  const out: [string, string][] = [];
  let start = text.startsWith('?') ? 1 : 0; // as URLSearchParams: one leading '?' of the input is not part of it
  while (start <= text.length) {
    let end = text.indexOf('&', start);
    if (end < 0) end = text.length;
    if (end > start) {
      const sequence = text.slice(start, end);
      const eq = sequence.indexOf('=');
      const name = eq < 0 ? sequence : sequence.slice(0, eq);
      const value = eq < 0 ? '' : sequence.slice(eq + 1);
      out.push([formDecode(name, sequence, 0), formDecode(value, sequence, 1)]);
    }
    start = end + 1;
  }
  return out;
}

/**
 * Parse an `application/x-www-form-urlencoded` (RFC 6749/8693) or JSON object body into string fields.
 * Repeated form parameters are rejected (RFC 6749 §3.2), non-string JSON values are rejected.
 */
export function readParams(req: HttpRequest, maxBytes = MAX_BODY_BYTES): Promise<Record<string, FormValue>> {
  return uncheckedBodyText(req, maxBytes).then((text) => paramsOfBody(req, text, maxBytes));
}

/** `readParams` of a body already read with `uncheckedBodyText`: the cap checked, then the form or JSON object parsed. */
export function paramsOfBody(req: HttpRequest, text: string, maxBytes = MAX_BODY_BYTES): Record<string, FormValue> {
  const type = (req.headers.get('content-type') ?? '').split(';')[0]!.trim().toLowerCase();
  return paramsOf(type, withinCap(text, maxBytes));
}

function paramsOf(type: string, text: string): Record<string, FormValue> {
  if (type === 'application/x-www-form-urlencoded') {
    const out: Record<string, string> = Object.create(null) as Record<string, string>; // no inherited names (toString, __proto__)
    for (const [k, v] of parseForm(text)) {
      if (Object.prototype.hasOwnProperty.call(out, k)) {
        throw new BrokerError('bad_request', `Parameter "${k}" is repeated.`, { detail: { parameter: k } });
      }
      out[k] = v;
    }
    return out;
  }
  if (type === 'application/json' || type.endsWith('+json')) {
    const parsed = text.length === 0 ? {} : parseJsonBody(text);
    if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) {
      throw new BrokerError('bad_request', 'The request body must be a JSON object.');
    }
    const out: Record<string, string> = Object.create(null) as Record<string, string>; // no inherited names (toString, __proto__)
    for (const [k, v] of Object.entries(parsed as Record<string, unknown>)) {
      if (v === undefined || v === null) continue;
      if (typeof v === 'number' && Number.isFinite(v)) out[k] = String(v);
      else if (typeof v === 'string') out[k] = v;
      else throw new BrokerError('bad_request', `Parameter "${k}" must be a string.`, { detail: { parameter: k } });
    }
    return out;
  }
  throw new BrokerError('unsupported_media_type', 'Send application/x-www-form-urlencoded (RFC 8693) or application/json.');
}

/**
 * A required string parameter; names the parameter when it is missing. Trimmed, unless `exact` (a value that is
 * judged and audited as sent, e.g. `resource`: surrounding whitespace makes it invalid, never silently dropped).
 */
export function requireParam(params: Record<string, string>, name: string, opts: { exact?: boolean } = {}): string {
  const raw = params[name];
  const v = opts.exact ? raw : raw?.trim();
  if (!v || (opts.exact && v.trim() === ''))
    throw new BrokerError('bad_request', `Parameter "${name}" is required.`, { detail: { parameter: name } });
  return v;
}

/**
 * Parse a JSON request body with the one strict parser (shared/http/strict-json.ts): a syntax error, a duplicate
 * member name at any depth (400 naming it as `parameter`, e.g. `filters.status`) or excessive nesting is refused.
 */
export function parseJsonBody(text: string): unknown {
  try {
    return parseStrictJson(text);
  } catch (e) {
    if (!(e instanceof StrictJsonError)) throw e;
    const f = e.failure;
    if (f.kind === 'duplicate') {
      throw new BrokerError('bad_request', `Parameter "${f.path}" is repeated.`, { detail: { parameter: f.path } });
    }
    if (f.kind === 'too_deep') throw new BrokerError('bad_request', 'The request body is nested too deeply.');
    throw new BrokerError('bad_request', 'The request body is not valid JSON.');
  }
}

// ---------- query strings ----------

/** The names repeated in a query string (`?a=1&a=2`), or an empty list. */
function repeatedNames(query: URLSearchParams): string[] {
  const seen = new Set<string>();
  const repeated = new Set<string>();
  for (const k of query.keys()) (seen.has(k) ? repeated : seen).add(k);
  return [...repeated];
}

/**
 * Refuse a query string that repeats a parameter (`?dryRun=true&dryRun=false`): which one counts would be
 * up to the reader (first-wins here, last-wins in APIM), so neither does. Called for every request by httpHandler.
 */
export function assertNoRepeatedQuery(query: URLSearchParams): void {
  const [name] = repeatedNames(query);
  if (name !== undefined) {
    throw new BrokerError('bad_request', `Query parameter "${name.slice(0, 64)}" is repeated.`, {
      detail: { parameter: name.slice(0, 64) },
    });
  }
}

/** One query-string switch: its value, or undefined; repeated is refused (400 naming it). */
export function queryParam(req: Pick<HttpRequest, 'query'>, name: string): string | undefined {
  const all = req.query.getAll(name);
  if (all.length > 1)
    throw new BrokerError('bad_request', `Query parameter "${name}" is repeated.`, { detail: { parameter: name } });
  return all[0];
}

/** Read a JSON object body (problem-style endpoints). */
export async function readJsonObject(req: HttpRequest, maxBytes = MAX_BODY_BYTES): Promise<Record<string, unknown>> {
  const type = (req.headers.get('content-type') ?? '').split(';')[0]!.trim().toLowerCase();
  const text = await readBodyText(req, maxBytes);
  if (text.length === 0) return {};
  if (type !== 'application/json' && !type.endsWith('+json')) {
    throw new BrokerError('unsupported_media_type', 'Send application/json.');
  }
  const parsed = parseJsonBody(text);
  if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) {
    throw new BrokerError('bad_request', 'The request body must be a JSON object.');
  }
  return parsed as Record<string, unknown>;
}
