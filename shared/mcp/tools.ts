import type { CallToolResult } from '@modelcontextprotocol/sdk/types.js';
import type { Principal } from '../auth/principal';
import { evaluate } from '../policy/evaluate';
import type { Policy } from '../policy/schema';
import type { Catalog, CatalogQuery, ValueParamSpec } from '../query/catalog';

/**
 * Tools come from the catalog and the policy: each catalogued query the caller is granted right now is one tool
 * (`tools/list` evaluates the live policy on every request; `tools/call` re-checks the grant on the query path).
 * Identity-bound parameters are never in a tool's input schema: the broker binds them from the validated token.
 */

/** The MCP Tool shape (schema/2025-11-25 `Tool`), as listed. Schemas have no `$schema`: JSON Schema 2020-12 by default. */
export interface ToolDefinition {
  readonly name: string;
  readonly title?: string;
  readonly description: string;
  readonly inputSchema: Record<string, unknown>;
  readonly outputSchema?: Record<string, unknown>;
  readonly annotations: Record<string, unknown>;
}

/** The built-in tool that says what this caller may reach and why. */
export const EXPLAIN_TOOL = 'explain_access';

const READ_ONLY = { readOnlyHint: true, destructiveHint: false, idempotentHint: true, openWorldHint: false } as const;

/** The structured result of a query tool (also its `outputSchema`). */
const QUERY_OUTPUT_SCHEMA = {
  type: 'object',
  properties: {
    query: { type: 'string' },
    columns: {
      type: 'array',
      items: { type: 'object', properties: { name: { type: 'string' }, type: { type: 'string' } }, required: ['name', 'type'] },
    },
    rows: { type: 'array', items: { type: 'array' } },
    rowCount: { type: 'integer' },
    truncated: { type: 'boolean' },
    notice: {
      type: 'object',
      description: 'Present when the result was cut short: which limit, and how many rows were returned',
      properties: { limit: { type: 'string' }, value: { type: 'integer' }, rowsReturned: { type: 'integer' } },
    },
    masked: { type: 'array', items: { type: 'string' }, description: 'Columns masked by the broker' },
  },
  required: ['query', 'columns', 'rows', 'rowCount', 'truncated'],
} as const;

function paramSchema(p: ValueParamSpec): Record<string, unknown> {
  const d = p.description !== undefined ? { description: p.description } : {};
  switch (p.type) {
    case 'string':
      return {
        type: 'string',
        minLength: p.minLength,
        maxLength: p.maxLength,
        ...(p.pattern !== undefined ? { pattern: p.pattern } : {}),
        ...(p.enum ? { enum: p.enum } : {}),
        ...d,
      };
    case 'integer':
      return { type: 'integer', minimum: p.min, maximum: p.max, ...d };
    case 'number':
      return {
        type: 'number',
        ...(p.min !== undefined ? { minimum: p.min } : {}),
        ...(p.max !== undefined ? { maximum: p.max } : {}),
        ...d,
      };
    case 'boolean':
      return { type: 'boolean', ...d };
    case 'date':
      return { type: 'string', format: 'date', ...d };
    case 'timestamp':
      return { type: 'string', format: 'date-time', ...d };
    case 'uuid':
      return { type: 'string', format: 'uuid', ...d };
  }
}

/** The tool of a catalogued query: input schema from its value parameters only. */
export function toolOf(q: CatalogQuery): ToolDefinition {
  const values = q.parameters.filter((p): p is ValueParamSpec => p.type !== 'caller');
  const bound = q.parameters.length - values.length;
  return {
    name: q.name,
    ...(q.mcp?.title !== undefined ? { title: q.mcp.title } : {}),
    description:
      (q.description ?? `Catalogued read-only query ${q.name}.`) +
      (bound > 0 ? ' Rows are limited to the caller: identity parameters are bound by the broker from the token.' : ''),
    inputSchema: {
      type: 'object',
      properties: Object.fromEntries(values.map((p) => [p.name, paramSchema(p)])),
      required: values.filter((p) => p.required).map((p) => p.name),
      additionalProperties: false,
    },
    outputSchema: QUERY_OUTPUT_SCHEMA,
    annotations: { title: q.mcp?.title ?? q.name, ...READ_ONLY },
  };
}

const EXPLAIN_TOOL_DEFINITION: ToolDefinition = {
  name: EXPLAIN_TOOL,
  title: 'Explain my access',
  description:
    'Which catalogued queries this caller may run through this broker, and for each one the policy rule that grants it or why none does; with no argument, also the CosmosDB containers granted to the caller and their read tools.',
  inputSchema: {
    type: 'object',
    properties: { query: { type: 'string', description: 'One catalogued query to explain (default: all)', maxLength: 64 } },
    additionalProperties: false,
  },
  annotations: { title: 'Explain my access', ...READ_ONLY },
};

/**
 * The JSON text of tool definitions that live as long as their catalog (and of explain_access): serialized once,
 * when the catalog's tools are built, not in every `tools/list` answer (100 tools with their schemas are ~120 KB).
 */
const definitionJson = new WeakMap<object, string>([[EXPLAIN_TOOL_DEFINITION, JSON.stringify(EXPLAIN_TOOL_DEFINITION)]]);

/** A listing's JSON array: the memoized text of each long-lived definition, the others serialized now. */
export function toolsJson(tools: readonly object[]): string {
  return `[${tools.map((t) => definitionJson.get(t) ?? JSON.stringify(t)).join(',')}]`;
}

/** The scope a catalogued query's tool needs (its own, else the endpoint's). */
export function toolScope(q: CatalogQuery | undefined, requiredScope: string): string {
  return q?.mcp?.scope ?? requiredScope;
}

/** Whether the caller holds `scope`: a delegated scope (`scp`) or, for app-only agent tokens, an app role. */
export function hasScope(p: Pick<Principal, 'scopes' | 'roles'>, scope: string): boolean {
  return p.scopes.includes(scope) || p.roles.includes(scope);
}

/**
 * Whether the policy grants the caller a query and a database identity for it (what tools/call will check).
 * `identities` memoizes the second decision per instance and database within one listing (it names no query).
 */
export function granted(policy: Policy, p: Principal, q: CatalogQuery, identities?: Map<string, boolean>): boolean {
  if (evaluate(policy, p, { kind: 'query', name: q.name }).decision !== 'grant') return false;
  if (!identities) return identityGranted(policy, p, q);
  const key = `${q.instance}/${q.database}`;
  let ok = identities.get(key);
  if (ok === undefined) identities.set(key, (ok = identityGranted(policy, p, q)));
  return ok;
}

function identityGranted(policy: Policy, p: Principal, q: CatalogQuery): boolean {
  const [project, region, instance] = q.instance.split(':') as [string, string, string];
  const id = evaluate(policy, p, {
    kind: 'cloudsql',
    project,
    region,
    instance,
    database: q.database,
    connectionName: q.instance,
  });
  return id.decision === 'grant';
}

/**
 * Tool definitions of a catalog, built once per catalog document (the catalog is re-read only when its file
 * changes): listing is then one policy evaluation per query.
 */
export class ToolCatalog {
  private built: { catalog: Catalog; tools: Map<string, { query: CatalogQuery; tool: ToolDefinition }> } | undefined;

  entries(catalog: Catalog): Map<string, { query: CatalogQuery; tool: ToolDefinition }> {
    if (this.built?.catalog !== catalog) {
      const tools = new Map<string, { query: CatalogQuery; tool: ToolDefinition }>();
      for (const q of catalog.queries) {
        if (q.mcp?.expose === false) continue;
        const tool = toolOf(q);
        definitionJson.set(tool, JSON.stringify(tool));
        tools.set(q.name, { query: q, tool });
      }
      this.built = { catalog, tools };
    }
    return this.built.tools;
  }

  /** What `tools/list` shows this caller: granted by the policy now, and within the token's scopes; explain_access always. */
  list(catalog: Catalog, policy: Policy, p: Principal, requiredScope: string): ToolDefinition[] {
    const out: ToolDefinition[] = [];
    const identities = new Map<string, boolean>();
    for (const { query, tool } of this.entries(catalog).values()) {
      if (hasScope(p, toolScope(query, requiredScope)) && granted(policy, p, query, identities)) out.push(tool);
    }
    out.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0)); // deterministic order (2026-07-28)
    out.push(EXPLAIN_TOOL_DEFINITION);
    return out;
  }
}

/**
 * The answer of a data tool (a catalogued query, a Cosmos read): the result as structured content, plus its JSON in a
 * text block after `notice`, which marks what follows as data from the database, not instructions.
 */
export function dataToolResult(notice: string, result: object): CallToolResult {
  const structuredContent = { ...result } as Record<string, unknown>;
  return {
    structuredContent,
    content: [
      { type: 'text', text: notice },
      { type: 'text', text: JSON.stringify(structuredContent) },
    ],
  };
}
