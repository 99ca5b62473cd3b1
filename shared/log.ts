import { settingsRecheckMs } from './config/settings';

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

const SECRET_PATTERNS: RegExp[] = [
  /eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*/g, // JWT / JWS
  /ya29\.[A-Za-z0-9._-]+/g, // Google OAuth access token
  /-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?(-----END [A-Z ]*PRIVATE KEY-----|$)/g,
  /type=(master|resource)&ver=1\.0&sig=[^&\s"]+/gi, // Cosmos auth header
  /\b(Bearer|Basic)\s+[A-Za-z0-9._~+/=-]{8,}/gi,
];

export const REDACTED = '[redacted]';

export function redactString(value: string): string {
  let out = value;
  for (const re of SECRET_PATTERNS) out = out.replace(re, REDACTED);
  return out;
}

export function redact(value: unknown, depth = 0): unknown {
  if (depth > 6) return '[depth]';
  if (typeof value === 'string') return redactString(value);
  if (value === null || typeof value !== 'object') return value;
  if (value instanceof Error) return serializeError(value, depth);
  if (Array.isArray(value)) return value.map((v) => redact(v, depth + 1));
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(value as Record<string, unknown>)) {
    out[k] = SENSITIVE_KEY.test(k) && v !== undefined && v !== null ? REDACTED : redact(v, depth + 1);
  }
  return out;
}

function serializeError(err: Error, depth: number): Record<string, unknown> {
  const out: Record<string, unknown> = { name: err.name, message: redactString(err.message) };
  const code = (err as { code?: unknown }).code;
  if (typeof code === 'string' || typeof code === 'number') out.code = code;
  if (err.stack) out.stack = redactString(err.stack.split('\n').slice(0, 8).join('\n'));
  if (err.cause !== undefined) out.cause = redact(err.cause, depth + 1);
  return out;
}

let sink: LogSink = (record) => {
  process.stdout.write(JSON.stringify(record) + '\n');
};

/** Observers of every record, whatever the sink (the test suite's token-leak scan). Empty in production. */
const taps: LogSink[] = [];

/**
 * Observe every log record (after redaction, before the sink), regardless of which sink is installed.
 * Returns a function that removes the tap. A tap must not throw; if it does, the error is swallowed so
 * logging can never break a request.
 */
export function addLogTap(tap: LogSink): () => void {
  taps.push(tap);
  return () => {
    const i = taps.indexOf(tap);
    if (i >= 0) taps.splice(i, 1);
  };
}

/** Replace where log records go (tests capture them; the Functions host reads stdout). Returns the previous sink. */
export function setLogSink(next: LogSink): LogSink {
  const prev = sink;
  sink = next;
  return prev;
}

export interface Logger {
  readonly correlationId?: string;
  debug(msg: string, fields?: LogFields): void;
  info(msg: string, fields?: LogFields): void;
  warn(msg: string, fields?: LogFields): void;
  error(msg: string, fields?: LogFields): void;
  child(fields: LogFields): Logger;
}

const LEVELS: Record<LogLevel, number> = { debug: 10, info: 20, warn: 30, error: 40 };

let level = { value: LEVELS.info, at: -Infinity };

/** LOG_LEVEL, re-read as often as the other settings (at most once a second in production). */
function minLevel(): number {
  const now = Date.now();
  if (now - level.at < settingsRecheckMs()) return level.value;
  const raw = (process.env.LOG_LEVEL ?? 'info').toLowerCase();
  level = { value: raw in LEVELS ? LEVELS[raw as LogLevel] : LEVELS.info, at: now };
  return level.value;
}

export function createLogger(base: LogFields & { correlationId?: string } = {}): Logger {
  const write = (level: LogLevel, msg: string, fields?: LogFields): void => {
    if (LEVELS[level] < minLevel()) return;
    const record = {
      ts: new Date().toISOString(),
      level,
      msg: redactString(msg),
      ...(redact(base) as LogFields),
      ...(fields ? (redact(fields) as LogFields) : {}),
    } as LogRecord;
    if (taps.length > 0) {
      for (const tap of taps) {
        try {
          tap(record);
        } catch {
          // a tap never breaks logging
        }
      }
    }
    sink(record);
  };
  return {
    correlationId: base.correlationId,
    debug: (m, f) => write('debug', m, f),
    info: (m, f) => write('info', m, f),
    warn: (m, f) => write('warn', m, f),
    error: (m, f) => write('error', m, f),
    child: (fields) => createLogger({ ...base, ...fields }),
  };
}
