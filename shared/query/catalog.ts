import { z } from 'zod';
import { parseDocument, watchedDocument } from '../config/json-document';
import { hasSqlComment } from './sql-comment';
import { INSTANCE_CONNECTION_NAME, PG_DATABASE, QUERY_NAME } from '../lib/identifiers';

/**
 * The query catalog: the only SQL the query function runs. Each query names its Cloud SQL instance and
 * database, its SQL with $1..$n placeholders, a typed parameter list (parameter i is $i), a row limit and
 * a statement timeout. Schema-checked at load; every problem is reported with its path.
 */

const NAME = /^[A-Za-z_][A-Za-z0-9_]{0,62}$/;

const common = {
  name: z.string().regex(NAME, 'must be an identifier (letters, digits, _)'),
  required: z.boolean().default(true),
  description: z.string().max(500).optional(),
};

/**
 * Where an identity-bound parameter takes its value: the validated caller (`caller.oid`, `caller.tid`,
 * `caller.appId`) or a named string claim of the caller's token (`claim` + `claim: NAME`). Never the body.
 */
const CALLER_SOURCES = [
  'caller.oid',
  'caller.tid',
  'caller.appId',
  'claim',
  // A caller authenticated by a client certificate (docs/client-certificates.md): its SHA-256 thumbprint, its subject DN.
  'caller.certThumbprint',
  'caller.certSubject',
] as const;
export type CallerSource = (typeof CALLER_SOURCES)[number];

const identityParamSchema = z
  .object({
    name: common.name,
    description: common.description,
    type: z.literal('caller'),
    from: z.enum(CALLER_SOURCES, { errorMap: () => ({ message: `must be one of ${CALLER_SOURCES.join(', ')}` }) }),
    claim: z
      .string()
      .regex(/^[A-Za-z_][A-Za-z0-9_.-]{0,63}$/, 'must be a claim name')
      .refine((c) => !['aud', 'iss', 'exp', 'nbf', 'iat'].includes(c), 'must name an identity claim, not a validity claim')
      .optional(),
    /** A caller without the value (e.g. a token without the claim) is refused (403) unless false: then NULL is bound. */
    required: z.boolean().default(true),
  })
  .strict();

const valueParamSchemas = [
  z
    .object({
      ...common,
      type: z.literal('string'),
      minLength: z.number().int().min(0).max(10000).default(0),
      maxLength: z.number().int().min(1).max(10000).default(256),
      pattern: z
        .string()
        .max(500)
        .refine((p) => {
          try {
            new RegExp(p, 'u');
            return true;
          } catch {
            return false;
          }
        }, 'must be a valid regular expression')
        .optional(),
      enum: z.array(z.string().max(256)).min(1).optional(),
    })
    .strict(),
  z
    .object({
      ...common,
      type: z.literal('integer'),
      min: z.number().int().min(-9007199254740991).default(-2147483648),
      max: z.number().int().max(9007199254740991).default(2147483647),
    })
    .strict(),
  z
    .object({ ...common, type: z.literal('number'), min: z.number().finite().optional(), max: z.number().finite().optional() })
    .strict(),
  z.object({ ...common, type: z.literal('boolean') }).strict(),
  z
    .object({
      ...common,
      type: z.literal('date'),
      min: z
        .string()
        .regex(/^\d{4}-\d{2}-\d{2}$/)
        .optional(),
      max: z
        .string()
        .regex(/^\d{4}-\d{2}-\d{2}$/)
        .optional(),
    })
    .strict(),
  z.object({ ...common, type: z.literal('timestamp') }).strict(),
  z.object({ ...common, type: z.literal('uuid') }).strict(),
] as const;

/** A parameter with `from` is identity-bound (its `type` is implied: `caller`); any other is a typed body parameter. */
const paramSchema = z.preprocess(
  (v) =>
    v !== null && typeof v === 'object' && !Array.isArray(v) && 'from' in v && !('type' in v) ? { ...v, type: 'caller' } : v,
  z.discriminatedUnion('type', [identityParamSchema, ...valueParamSchemas]),
);

const querySchema = z
  .object({
    name: z.string().regex(QUERY_NAME, 'must be a query name (lowercase letters, digits, -)'),
    description: z.string().max(1000).optional(),
    instance: z.string().regex(INSTANCE_CONNECTION_NAME, 'must be an instance connection name PROJECT:REGION:INSTANCE'),
    database: z.string().regex(PG_DATABASE, 'must be a PostgreSQL database name'),
    sql: z
      .string()
      .min(1)
      .max(20000)
      .refine((s) => !/;\s*\S/.test(s), 'must be a single statement')
      .refine(
        (s) => !hasSqlComment(s),
        'must not contain SQL comments (-- or /*): the broker appends its own sqlcommenter tag; use description',
      ),
    parameters: z.array(paramSchema).max(32).default([]),
    rowLimit: z.number().int().min(1).max(100000).default(1000),
    timeoutMs: z.number().int().min(10).max(60000).default(5000),
    /** Most bytes of the rows' JSON in an answer (result-controls.ts): a longer result is cut, with a notice. */
    maxBytes: z
      .number()
      .int()
      .min(64)
      .max(16 * 1024 * 1024)
      .optional(),
    /** Column masks applied before the answer leaves the broker (result-controls.ts); a policy rule may exempt its callers. */
    masks: z
      .record(
        z.string().regex(/^[A-Za-z_][A-Za-z0-9_]{0,62}$/, 'must be a column name'),
        z.discriminatedUnion('type', [
          z.object({ type: z.literal('redact') }).strict(),
          z.object({ type: z.literal('partial'), keepLast: z.number().int().min(0).max(64).default(4) }).strict(),
          z.object({ type: z.literal('hash') }).strict(),
        ]),
      )
      .optional(),
    /** How the query appears as an MCP tool (shared/mcp/tools.ts). */
    mcp: z
      .object({
        /** Offer the query as a tool at all (default true; the policy still decides who sees it). */
        expose: z.boolean().default(true),
        title: z.string().max(100).optional(),
        /** The scope (`scp`, or an app role for app-only tokens) the tool needs besides MCP_REQUIRED_SCOPE. */
        scope: z
          .string()
          .regex(/^[A-Za-z0-9._:-]{1,120}$/, 'must be a scope name (letters, digits, . _ : -)')
          .optional(),
      })
      .strict()
      .optional(),
  })
  .strict()
  .superRefine((q, ctx) => {
    const used = new Set([...q.sql.matchAll(/\$(\d+)/g)].map((m) => Number(m[1])));
    for (const n of used) {
      if (n < 1 || n > q.parameters.length)
        ctx.addIssue({
          code: z.ZodIssueCode.custom,
          path: ['sql'],
          message: `uses $${n} but only ${q.parameters.length} parameters are declared`,
        });
    }
    q.parameters.forEach((p, i) => {
      if (!used.has(i + 1))
        ctx.addIssue({
          code: z.ZodIssueCode.custom,
          path: ['parameters', i],
          message: `parameter "${p.name}" ($${i + 1}) is not used by the SQL`,
        });
      if (q.parameters.findIndex((o) => o.name === p.name) !== i)
        ctx.addIssue({
          code: z.ZodIssueCode.custom,
          path: ['parameters', i, 'name'],
          message: `duplicate parameter "${p.name}"`,
        });
      if ((p.type === 'integer' || p.type === 'number') && p.min !== undefined && p.max !== undefined && p.min > p.max) {
        ctx.addIssue({ code: z.ZodIssueCode.custom, path: ['parameters', i, 'min'], message: 'min exceeds max' });
      }
      if (p.type === 'caller' && p.from === 'claim' && p.claim === undefined) {
        ctx.addIssue({
          code: z.ZodIssueCode.custom,
          path: ['parameters', i, 'claim'],
          message: 'is required when from is "claim"',
        });
      }
      if (p.type === 'caller' && p.from !== 'claim' && p.claim !== undefined) {
        ctx.addIssue({
          code: z.ZodIssueCode.custom,
          path: ['parameters', i, 'claim'],
          message: 'is only allowed when from is "claim"',
        });
      }
      if (p.type === 'string' && p.minLength > p.maxLength)
        ctx.addIssue({
          code: z.ZodIssueCode.custom,
          path: ['parameters', i, 'minLength'],
          message: 'minLength exceeds maxLength',
        });
    });
  });

const catalogSchema = z
  .object({ $schema: z.string().optional(), version: z.literal(1), queries: z.array(querySchema) })
  .strict()
  .superRefine((c, ctx) => {
    const seen = new Set<string>();
    c.queries.forEach((q, i) => {
      if (seen.has(q.name))
        ctx.addIssue({ code: z.ZodIssueCode.custom, path: ['queries', i, 'name'], message: `duplicate query "${q.name}"` });
      seen.add(q.name);
    });
  });

export type Catalog = z.output<typeof catalogSchema>;
export type CatalogQuery = Catalog['queries'][number];
export type ParamSpec = CatalogQuery['parameters'][number];
export type CallerParamSpec = Extract<ParamSpec, { type: 'caller' }>;
export type ValueParamSpec = Exclude<ParamSpec, { type: 'caller' }>;

export function parseCatalog(text: string, source = 'catalog'): Catalog {
  return parseDocument(text, catalogSchema, 'query catalog', source);
}

/** The catalog at `path`, re-read when the file changes (checked at most every 5 s); bad file → 503 naming the problems. */
export const loadCatalogFile: (path: string, now?: number) => Catalog = watchedDocument({
  what: 'query catalog',
  setting: 'QUERY_CATALOG_PATH',
  parse: parseCatalog,
});
