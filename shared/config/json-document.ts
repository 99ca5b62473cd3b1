import { readFileSync, statSync } from 'node:fs';
import type { z } from 'zod';
import { ConfigError } from '../errors';
import { BrokerError } from '../errors';

/** `rules[1].grants.cloudsql[0].instance`: a zod issue path as a reader would write it. */
export function issuePath(path: readonly (string | number)[]): string {
  let out = '';
  for (const p of path) out += typeof p === 'number' ? `[${p}]` : out ? `.${p}` : p;
  return out || '(root)';
}

/**
 * Parse a JSON document and check it against a schema. Returns the data, or every problem, each naming
 * the path of the bad entry (the policy and the query catalog report errors this way).
 */
function parseJsonDocument<S extends z.ZodTypeAny>(text: string, schema: S): { data: z.output<S> } | { problems: string[] } {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (e) {
    return { problems: [`not valid JSON: ${(e as Error).message}`] };
  }
  const r = schema.safeParse(raw);
  return r.success
    ? { data: r.data as z.output<S> }
    : { problems: r.error.issues.map((i: z.ZodIssue) => `${issuePath(i.path)}: ${i.message}`) };
}

/**
 * A loader for a configuration document on disk: parsed once, re-read when the file's mtime changes (checked
 * at most every `checkIntervalMs`). A missing file or a parse failure is `config_invalid` (503 naming the
 * setting or the problems), never a 500. `parse` throws an Error whose message is safe to show.
 */
/**
 * A JSON document checked against its schema, or a ConfigError (the one configuration error: 503 config_invalid
 * where it is served, 400 where an operator writes it) naming `what`, the source and the path of every bad entry.
 */
export function parseDocument<S extends z.ZodTypeAny>(text: string, schema: S, what: string, source: string): z.output<S> {
  const r = parseJsonDocument(text, schema);
  if ('problems' in r) throw new ConfigError(`${what} ${source}`, r.problems);
  return r.data;
}

export function watchedDocument<T>(opts: {
  what: string;
  setting: string;
  parse: (text: string, source: string) => T;
  /** Errors whose message lists the document's problems (others get a generic message). */
  checkIntervalMs?: number;
}): (path: string, now?: number) => T {
  const interval = opts.checkIntervalMs ?? 5000;
  let cache: { path: string; mtimeMs: number; checkedAt: number; value: T } | undefined;
  return (path, now = Date.now()) => {
    if (cache && cache.path === path && now - cache.checkedAt < interval) return cache.value;
    let mtimeMs: number;
    try {
      mtimeMs = statSync(path).mtimeMs;
    } catch (e) {
      throw new BrokerError('config_invalid', `The ${opts.what} ${opts.setting}=${path} cannot be read.`, { cause: e });
    }
    if (cache && cache.path === path && cache.mtimeMs === mtimeMs) {
      cache.checkedAt = now;
      return cache.value;
    }
    try {
      const value = opts.parse(readFileSync(path, 'utf8'), path);
      cache = { path, mtimeMs, checkedAt: now, value };
      return value;
    } catch (e) {
      throw new BrokerError('config_invalid', e instanceof ConfigError ? e.message : `The ${opts.what} ${path} cannot be read.`, {
        cause: e,
      });
    }
  };
}
