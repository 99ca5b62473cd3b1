import { writeSync } from 'node:fs';
import { loggingConfig } from '../config/logging';

/**
 * Structured JSON logging. Every line carries the correlation id. Values under sensitive keys and
 * anything that looks like a bearer token, JWT, Google access token or PEM key are masked before
 * they are written, so a careless call cannot leak a credential.
 */

export type LogLevel = 'debug' | 'info' | 'warn' | 'error';

export type LogFields = Record<string, unknown>;

export interface LogRecord extends LogFields {
  ts: string;
  level: LogLevel;
  msg: string;
  correlationId?: string;
}

export type LogSink = (record: LogRecord) => void;

const SENSITIVE_KEY =
  /^(authorization|cookie|set-cookie|password|passwd|secret|client_secret|private_?key|privatekeydata|access_?token|id_?token|refresh_?token|subject_?token|actor_?token|assertion|token|key|masterkey|resourcetoken|sig|signature|x-identity-header|x-ms-authorization)$/i;

/**
 * Secret shapes, each with a literal `marker` every match contains (case-insensitively): a string containing
 * no marker cannot match, so the patterns are skipped for it (most logged strings are ids and words).
 */
const SECRET_PATTERNS: readonly { readonly marker: string; readonly re: RegExp }[] = [
  { marker: 'eyJ', re: /eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*/g }, // JWT / JWS
  { marker: 'ya29.', re: /ya29\.[A-Za-z0-9._-]+/g }, // Google OAuth access token
  { marker: '-----BEGIN', re: /-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?(-----END [A-Z ]*PRIVATE KEY-----|$)/g },
  { marker: '&sig=', re: /type=(master|resource)&ver=1\.0&sig=[^&\s"]+/gi }, // Cosmos auth header
  { marker: 'bearer', re: /\b(Bearer)\s+[A-Za-z0-9._~+/=-]{8,}/gi },
  { marker: 'basic', re: /\b(Basic)\s+[A-Za-z0-9._~+/=-]{8,}/gi },
];

const MAYBE_SECRET = new RegExp(SECRET_PATTERNS.map((p) => p.marker.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')).join('|'), 'i');

const REDACTED = '[redacted]';

/** SENSITIVE_KEY's answer per field name, remembered (lines repeat the same few names), bounded. */
const sensitiveKeys = new Map<string, boolean>();
function isSensitiveKey(k: string): boolean {
  let sensitive = sensitiveKeys.get(k);
  if (sensitive === undefined) {
    sensitive = SENSITIVE_KEY.test(k);
    if (sensitiveKeys.size >= 4096) sensitiveKeys.clear();
    sensitiveKeys.set(k, sensitive);
  }
  return sensitive;
}

export function redactString(value: string): string {
  if (!MAYBE_SECRET.test(value)) return value;
  let out = value;
  for (const p of SECRET_PATTERNS) out = out.replace(p.re, REDACTED);
  return out;
}

/**
 * The value with every secret masked. Copy on write: a value with nothing to mask is returned as it is (most
 * fields of most lines: ids, codes, numbers), so a line costs no copies of its fields.
 */
export function redact(value: unknown, depth = 0): unknown {
  if (depth > 6) return '[depth]';
  if (typeof value === 'string') return redactString(value);
  if (value === null || typeof value !== 'object') return value;
  if (value instanceof Error) return serializeError(value, depth);
  if (Array.isArray(value)) {
    let out: unknown[] | undefined;
    for (let i = 0; i < value.length; i++) {
      const v: unknown = value[i];
      const r = redact(v, depth + 1);
      if (r !== v && !out) out = value.slice(0, i);
      out?.push(r);
    }
    return out ?? value;
  }
  const obj = value as Record<string, unknown>;
  if ((clean.get(obj)?.depth ?? -1) >= depth) return obj; // found clean at this depth or deeper: fits here too
  let out: Record<string, unknown> | undefined;
  const keys = Object.keys(obj);
  for (let i = 0; i < keys.length; i++) {
    const k = keys[i]!;
    const v = obj[k];
    const r = isSensitiveKey(k) && v !== undefined && v !== null ? REDACTED : redact(v, depth + 1);
    if (r !== v && !out) {
      out = {};
      for (let j = 0; j < i; j++) out[keys[j]!] = obj[keys[j]!];
    }
    if (out) out[k] = r;
  }
  if (!out && Object.isFrozen(obj) && Object.getPrototypeOf(obj) === Object.prototype && cleanMembers(obj, keys, depth)) {
    const known = clean.get(obj);
    if (!known || known.depth < depth) clean.set(obj, { depth, text: known?.text });
  }
  return out ?? obj;
}

/**
 * Frozen plain objects of data properties found to hold nothing to mask, whose object members are such objects too:
 * immutable all the way down, so the answer cannot change, and lines that share one (an audited caller's identity) skip walking it again.
 */
const clean = new WeakMap<object, { readonly depth: number; text?: string }>();

function cleanMembers(obj: Record<string, unknown>, keys: readonly string[], depth: number): boolean {
  for (const k of keys) {
    const d = Object.getOwnPropertyDescriptor(obj, k);
    if (!d || !('value' in d)) return false; // a getter may answer differently next time
    const v: unknown = d.value;
    if (v !== null && typeof v === 'object' && (clean.get(v)?.depth ?? -1) < depth + 1) return false;
  }
  return true;
}

function serializeError(err: Error, depth: number): Record<string, unknown> {
  const out: Record<string, unknown> = { name: err.name, message: redactString(err.message) };
  const code = (err as { code?: unknown }).code;
  if (typeof code === 'string' || typeof code === 'number') out.code = code;
  if (err.stack) out.stack = redactString(err.stack.split('\n').slice(0, 8).join('\n'));
  if (err.cause !== undefined) out.cause = redact(err.cause, depth + 1);
  return out;
}

/**
 * The production writer: JSON lines on stdout, buffered within one turn of the event loop and written with one
 * synchronous write per turn (a write per line was the largest cost of logging under load). No line is lost:
 * an `error` line flushes at once, the buffer flushes on `setImmediate`, when it passes 64 KiB, and on process
 * exit (also after an uncaught exception) with a synchronous write.
 */
export class LineWriter {
  private buf: string[] = [];
  private bytes = 0;
  private scheduled = false;
  constructor(
    private readonly write: (text: string) => void,
    private readonly writeSyncFn: (text: string) => void,
    private readonly maxBytes = 64 * 1024,
  ) {}

  line(text: string, urgent = false): void {
    this.buf.push(text);
    this.bytes += text.length;
    if (urgent || this.bytes >= this.maxBytes) return this.flush();
    if (!this.scheduled) {
      this.scheduled = true;
      setImmediate(() => this.flush());
    }
  }

  flush(): void {
    this.scheduled = false;
    if (this.buf.length === 0) return;
    const text = this.buf.join('');
    this.buf = [];
    this.bytes = 0;
    this.write(text);
  }

  /** On exit: nothing may be left in memory, and nothing asynchronous runs any more. */
  flushSync(): void {
    if (this.buf.length === 0) return;
    const text = this.buf.join('');
    this.buf = [];
    this.bytes = 0;
    this.writeSyncFn(text);
  }

  get pending(): number {
    return this.buf.length;
  }
}

function writeAllSync(fd: number, text: string): void {
  const data = Buffer.from(text);
  let off = 0;
  while (off < data.length) {
    try {
      off += writeSync(fd, data, off);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EAGAIN') return; // stdout gone: nothing left to tell
    }
  }
}

// Both paths write the batch synchronously to fd 1: when stdout is a non-blocking pipe, process.stdout.write queues
// what the pipe does not take at once, and the exit flush would then write its lines before that remainder (a line
// cut in two; seen in CI). One writer, one order: a batch per turn, written whole before the next.
const stdoutWriter = new LineWriter(
  (text) => writeAllSync(1, text),
  (text) => writeAllSync(1, text),
);

/** One exit hook per process (module registries may load this file more than once, e.g. under jest). */
const EXIT_HOOK = Symbol.for('token-broker.log.exit-flush');
function ensureExitFlush(): void {
  const g = globalThis as { [EXIT_HOOK]?: Set<LineWriter> };
  if (!g[EXIT_HOOK]) {
    const writers = new Set<LineWriter>();
    g[EXIT_HOOK] = writers;
    process.on('exit', () => {
      for (const w of writers) w.flushSync();
    });
  }
  g[EXIT_HOOK].add(stdoutWriter);
}

let exitFlushArmed = false;

function stdoutLine(text: string, urgent: boolean): void {
  if (!exitFlushArmed) {
    exitFlushArmed = true;
    ensureExitFlush();
  }
  stdoutWriter.line(text, urgent);
}

/** The production sink: JSON lines on stdout (what the Functions host collects). */
export const stdoutSink: LogSink = (record) => stdoutLine(JSON.stringify(record) + '\n', record.level === 'error');

/**
 * The members of a plain object's JSON text (`"a":1,"b":2`, '' for none): byte for byte `JSON.stringify(obj)` without
 * its braces. Built member by member so that a frozen object redaction found clean (an audited caller's identity,
 * shared by every line of that caller) is serialised once and its text reused; any other value is `JSON.stringify`'s.
 * Not a plain object (a class instance, `toJSON`): `JSON.stringify` whole.
 */
function jsonMembers(obj: object): string {
  const proto: unknown = Object.getPrototypeOf(obj);
  if ((proto !== Object.prototype && proto !== null) || 'toJSON' in obj) {
    const text = JSON.stringify(obj);
    return text.length > 2 ? text.slice(1, -1) : '';
  }
  const record = obj as Record<string, unknown>;
  let out = '';
  for (const k of Object.keys(record)) {
    const text = valueText(record[k]);
    if (text === undefined) continue;
    const member = `${keyText(k)}${text}`;
    out = out === '' ? member : `${out},${member}`;
  }
  return out;
}

/** Printable ASCII without `"` and `\`: JSON.stringify writes such a string as it is, in quotes. */
const PLAIN_STRING = /^[\x20\x21\x23-\x5b\x5d-\x7e]*$/;

/** A member value's JSON text, as JSON.stringify writes it inside an object (undefined: the member is left out). */
function valueText(v: unknown): string | undefined {
  switch (typeof v) {
    case 'string':
      return PLAIN_STRING.test(v) ? `"${v}"` : JSON.stringify(v);
    case 'boolean':
      return v ? 'true' : 'false';
    case 'object': {
      if (v === null) return 'null';
      const c = clean.get(v);
      if (!c) return JSON.stringify(v);
      return (c.text ??= JSON.stringify(v));
    }
    case 'undefined':
    case 'function':
    case 'symbol':
      return undefined;
    case 'number': // NaN and ±Infinity as null, -0 as 0
    case 'bigint': // throws, as it would
      return JSON.stringify(v);
  }
}

/** `"name":`, made once per field name (bounded: lines repeat the same few names). */
const keyTexts = new Map<string, string>();
function keyText(k: string): string {
  let t = keyTexts.get(k);
  if (t === undefined) {
    t = `${JSON.stringify(k)}:`;
    if (keyTexts.size >= 4096) keyTexts.clear();
    keyTexts.set(k, t);
  }
  return t;
}

/** The base fields' JSON members, or null when one of them would replace ts, level or msg (the record path then). */
function baseMembers(base: LogFields): string | null {
  for (const k in base) if (reserved(k)) return null;
  return jsonMembers(base);
}

/** Whether a line's fields would replace a fixed member (ts, level, msg, or a base field): the record path keeps spread order. */
function replacesMember(fields: LogFields, base: LogFields): boolean {
  for (const k in fields) if (reserved(k) || Object.hasOwn(base, k)) return true;
  return false;
}

/**
 * A member the text path cannot place as the record would: the fixed ones, `toJSON`, and keys that start with a digit
 * (JSON.stringify writes integer-like keys of an object first: they would move before `ts`).
 */
function reserved(k: string): boolean {
  const c = k.charCodeAt(0);
  return k === 'ts' || k === 'level' || k === 'msg' || k === 'toJSON' || (c >= 48 && c <= 57);
}

/** Where a logger's records go and how often it re-reads LOG_LEVEL (an app context's, shared/app/context.ts). */
export interface LogOutput {
  readonly sink: LogSink;
  /** How often LOG_LEVEL is re-read (default: as often as the other settings). */
  readonly settingsRecheckMs?: number;
}

const STDOUT: LogOutput = { sink: stdoutSink };

export interface Logger {
  readonly correlationId?: string;
  debug(msg: string, fields?: LogFields): void;
  info(msg: string, fields?: LogFields): void;
  warn(msg: string, fields?: LogFields): void;
  error(msg: string, fields?: LogFields): void;
  child(fields: LogFields): Logger;
  /** Whether a line at `level` would be written: build the fields of a line only when it is. */
  enabled(level: LogLevel): boolean;
}

const LEVELS: Record<LogLevel, number> = { debug: 10, info: 20, warn: 30, error: 40 };

/** LOG_LEVEL (through the config loader, which memoises it), re-read as often as the other settings. */
function minLevel(recheckMs: number | undefined): number {
  let name: LogLevel = 'info';
  try {
    name = loggingConfig.get(recheckMs).level;
  } catch {
    // An invalid LOG_LEVEL is reported by the health config check (it names it); logging goes on at info.
  }
  return LEVELS[name];
}

/**
 * The ISO time of the current millisecond, made once per millisecond (a line per request asks for it): the date and
 * time up to the second once per second, the milliseconds appended (what `toISOString` writes, without a `Date`).
 */
let lastMs = -1;
let lastIso = '';
let lastSecond = NaN;
let secondPrefix = '';
function isoNow(): string {
  const now = Date.now();
  if (now !== lastMs) {
    lastMs = now;
    const ms = now % 1000;
    const second = now - ms;
    if (second !== lastSecond) {
      lastSecond = second;
      const iso = new Date(second).toISOString(); // …T12:34:56.000Z
      secondPrefix = iso.slice(0, iso.length - 4);
    }
    lastIso = `${secondPrefix}${ms < 10 ? '00' : ms < 100 ? '0' : ''}${ms}Z`;
  }
  return lastIso;
}

class FieldLogger implements Logger {
  constructor(
    private readonly base: LogFields & { correlationId?: string },
    /** The base fields are fixed for the logger's life: redacted once, not per line. */
    private readonly safeBase: LogFields,
    private readonly out: LogOutput,
  ) {}
  get correlationId(): string | undefined {
    return this.base.correlationId;
  }
  /** The base fields' JSON members, made on the first line written to stdout (null: a base field replaces ts, level or msg). */
  private baseJson?: string | null;
  private write(level: LogLevel, msg: string, fields?: LogFields): void {
    if (LEVELS[level] < minLevel(this.out.settingsRecheckMs)) return;
    const ts = isoNow();
    const safeMsg = redactString(msg);
    const safeFields = fields ? (redact(fields) as LogFields) : undefined;
    const base = this.out.sink === stdoutSink ? (this.baseJson ??= baseMembers(this.safeBase)) : null;
    if (base !== null && (safeFields === undefined || !replacesMember(safeFields, this.safeBase))) {
      // The production sink: the line's text made from its parts (the base fields' once per logger), byte for byte
      // what JSON.stringify writes for the record below, without building the record (a copy of every field).
      const rest = safeFields ? jsonMembers(safeFields) : '';
      const text = `{"ts":"${ts}","level":"${level}","msg":${JSON.stringify(safeMsg)}${base && `,${base}`}${rest && `,${rest}`}}\n`;
      stdoutLine(text, level === 'error');
      return;
    }
    const record = { ts, level, msg: safeMsg, ...this.safeBase, ...safeFields } as LogRecord;
    this.out.sink(record);
  }
  debug(msg: string, fields?: LogFields): void {
    this.write('debug', msg, fields);
  }
  info(msg: string, fields?: LogFields): void {
    this.write('info', msg, fields);
  }
  warn(msg: string, fields?: LogFields): void {
    this.write('warn', msg, fields);
  }
  error(msg: string, fields?: LogFields): void {
    this.write('error', msg, fields);
  }
  child(fields: LogFields): Logger {
    return createLogger({ ...this.base, ...fields }, this.out);
  }
  enabled(level: LogLevel): boolean {
    return LEVELS[level] >= minLevel(this.out.settingsRecheckMs);
  }
}

/**
 * A logger writing to `out` (default: stdout). Request and timer code takes its logger from the app context
 * (`ctx.logger(...)`), so the context decides where lines go.
 */
export function createLogger(base: LogFields & { correlationId?: string } = {}, out: LogOutput = STDOUT): Logger {
  return new FieldLogger(base, redact(base) as LogFields, out);
}
