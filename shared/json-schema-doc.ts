import type { z } from 'zod';

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
export function parseJsonDocument<S extends z.ZodTypeAny>(text: string, schema: S): { data: z.output<S> } | { problems: string[] } {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (e) {
    return { problems: [`not valid JSON: ${(e as Error).message}`] };
  }
  const r = schema.safeParse(raw);
  return r.success ? { data: r.data as z.output<S> } : { problems: r.error.issues.map((i: z.ZodIssue) => `${issuePath(i.path)}: ${i.message}`) };
}
