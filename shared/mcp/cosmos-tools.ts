import type { Principal } from '../auth/principal';
import { BrokerError } from '../errors';
import { claimValue, evaluate, type CosmosDecisionGrant } from '../policy/evaluate';
import type { CosmosGrant, CosmosMcpSpec, Policy } from '../policy/schema';
import type { ToolDefinition } from './tools';

/**
 * The Cosmos read tools (issue 24 §3): for each CosmosDB container the policy grants the caller, two read-only tools
 * on the caller's own partition — `cosmos_read_<db>_<container>` (point read by id) and `cosmos_query_<db>_<container>`
 * (a bounded, parameterized query: optional equality filters on the fields the grant declares, `maxItems`). The
 * partition is bound from the validated identity as the token exchange binds it (the grant's `partitionKey`, else the
 * grant's `mcp.partitionKey`), never from arguments; a grant that binds none has no tools. This module is the tool
 * model (names, schemas, listing, arguments); the call path is ./cosmos-read.ts.
 */

const COSMOS_READ_PREFIX = 'cosmos_read_';
const COSMOS_QUERY_PREFIX = 'cosmos_query_';

/** MCP tool names (2025-11-25 server/tools.mdx §Tool Names): 1-128 characters of A-Z a-z 0-9 _ - . */
const TOOL_NAME = /^[A-Za-z0-9_.-]{1,128}$/;

/** Argument names an agent might use to choose a partition: refused by name (the broker binds the partition). */
const PARTITION_ARGUMENTS = new Set(['partitionKey', 'partition_key', 'partitionkey', 'pk', 'partition']);

const READ_ONLY = { readOnlyHint: true, destructiveHint: false, idempotentHint: true, openWorldHint: false } as const;

/** One granted container. */
export interface CosmosContainerRef {
  readonly account: string;
  readonly database: string;
  readonly container: string;
}

export type CosmosToolKind = 'read' | 'query';

/** The structured result of a Cosmos tool (also its `outputSchema`). */
const COSMOS_OUTPUT_SCHEMA = {
  type: 'object',
  properties: {
    container: { type: 'string', description: 'ACCOUNT/DATABASE/CONTAINER' },
    items: { type: 'array', items: { type: 'object' } },
    count: { type: 'integer' },
    truncated: { type: 'boolean' },
    notice: {
      type: 'object',
      description: 'Present when the result was cut short: which limit, and how many items were returned',
      properties: { limit: { type: 'string' }, value: { type: 'integer' }, rowsReturned: { type: 'integer' } },
    },
  },
  required: ['container', 'items', 'count', 'truncated'],
} as const;

/** The two tool names of a container, or undefined when its ids do not make valid MCP tool names. */
export function cosmosToolNames(
  c: Pick<CosmosContainerRef, 'database' | 'container'>,
): Record<CosmosToolKind, string> | undefined {
  const suffix = `${c.database}_${c.container}`;
  const names = { read: COSMOS_READ_PREFIX + suffix, query: COSMOS_QUERY_PREFIX + suffix };
  return TOOL_NAME.test(names.read) && TOOL_NAME.test(names.query) ? names : undefined;
}

/** Whether a tool name is in the Cosmos tools' namespace (a catalogued query name never has `_`). */
export function isCosmosToolName(name: string): boolean {
  return name.startsWith(COSMOS_READ_PREFIX) || name.startsWith(COSMOS_QUERY_PREFIX);
}

interface ToolIndex {
  /** Every container some rule grants, with its tool names (in policy order, each once). */
  readonly containers: readonly (CosmosContainerRef & { readonly names: Record<CosmosToolKind, string> })[];
  /** Tool name → container and kind; a name two containers would share is absent (neither container has tools). */
  readonly byName: ReadonlyMap<string, { readonly ref: CosmosContainerRef; readonly kind: CosmosToolKind }>;
}

const indexes = new WeakMap<Policy, ToolIndex>();

/** The tool names of a policy version (built once per policy document: a change replaces the object). */
function indexOf(policy: Policy): ToolIndex {
  let ix = indexes.get(policy);
  if (ix) return ix;
  const seen = new Map<string, CosmosContainerRef & { names: Record<CosmosToolKind, string> }>();
  const claims = new Map<string, string[]>(); // tool name → container keys claiming it
  for (const rule of policy.rules)
    for (const g of rule.grants.cosmos) {
      const key = JSON.stringify([g.account, g.database, g.container]);
      if (seen.has(key)) continue;
      const names = cosmosToolNames(g);
      if (!names) continue;
      seen.set(key, { account: g.account, database: g.database, container: g.container, names });
      for (const n of Object.values(names)) claims.set(n, [...(claims.get(n) ?? []), key]);
    }
  const containers = [...seen.values()].filter((c) => Object.values(c.names).every((n) => claims.get(n)!.length === 1));
  const byName = new Map<string, { ref: CosmosContainerRef; kind: CosmosToolKind }>();
  for (const c of containers) {
    const ref = { account: c.account, database: c.database, container: c.container };
    byName.set(c.names.read, { ref, kind: 'read' });
    byName.set(c.names.query, { ref, kind: 'query' });
  }
  ix = { containers, byName };
  indexes.set(policy, ix);
  return ix;
}

/** The container and kind a tool name stands for in this policy, or undefined (an unknown tool). */
export function cosmosToolOf(policy: Policy, name: string): { ref: CosmosContainerRef; kind: CosmosToolKind } | undefined {
  return indexOf(policy).byName.get(name);
}

/** The cosmos grant of rule `ruleId` that matched `ref` (the first for that container, as evaluation takes it). */
export function grantSpecOf(policy: Policy, ruleId: string, ref: CosmosContainerRef): CosmosGrant | undefined {
  return policy.rules
    .find((r) => r.id === ruleId)
    ?.grants.cosmos.find((g) => g.account === ref.account && g.database === ref.database && g.container === ref.container);
}

/** The caller's partition for MCP reads: the grant's own, else the grant's `mcp.partitionKey` bound from the caller. */
export function boundPartition(grant: CosmosDecisionGrant, spec: CosmosGrant | undefined, p: Principal): string | undefined {
  if (grant.partitionKey !== undefined) return grant.partitionKey;
  const pk = spec?.mcp?.partitionKey;
  if (!pk) return undefined;
  return pk.type === 'fixed' ? pk.value : claimValue(p, pk.claim);
}

/** The effective item limit of a grant: its `mcp.maxItems`, capped by MCP_COSMOS_MAX_ITEMS. */
function itemLimit(spec: CosmosMcpSpec | undefined, cap: number): number {
  return Math.min(spec?.maxItems ?? cap, cap);
}

/** The tool definitions of one granted container. */
export function cosmosToolDefinitions(
  ref: CosmosContainerRef,
  spec: CosmosMcpSpec | undefined,
  cap: number,
): [ToolDefinition, ToolDefinition] | undefined {
  const names = cosmosToolNames(ref);
  if (!names) return undefined;
  const where = `the CosmosDB container ${ref.account}/${ref.database}/${ref.container}`;
  const own =
    "Only the caller's own partition is read: the broker binds the partition key from the caller's identity (do not send one).";
  const fields = spec?.fields ?? [];
  const limit = itemLimit(spec, cap);
  const read: ToolDefinition = {
    name: names.read,
    title: `Read an item of ${ref.database}/${ref.container}`,
    description: `Point read of one item by id in ${where}. ${own} An id of another partition is not found.`,
    inputSchema: {
      type: 'object',
      properties: {
        id: { type: 'string', minLength: 1, maxLength: 255, pattern: '^[^/\\\\?#]+$', description: 'The item id' },
      },
      required: ['id'],
      additionalProperties: false,
    },
    outputSchema: COSMOS_OUTPUT_SCHEMA,
    annotations: { title: `Read an item of ${ref.database}/${ref.container}`, ...READ_ONLY },
  };
  const query: ToolDefinition = {
    name: names.query,
    title: `Query ${ref.database}/${ref.container}`,
    description:
      `Items of ${where}, at most ${limit} per call` +
      (fields.length ? `, optionally filtered by equality on ${fields.join(', ')}` : '') +
      `. ${own}`,
    inputSchema: {
      type: 'object',
      properties: {
        ...(fields.length
          ? {
              where: {
                type: 'object',
                description: 'Equality filters (all must match)',
                properties: Object.fromEntries(fields.map((f) => [f, { type: ['string', 'number', 'boolean'] }])),
                additionalProperties: false,
              },
            }
          : {}),
        maxItems: { type: 'integer', minimum: 1, maximum: limit, description: `At most this many items (default ${limit})` },
      },
      additionalProperties: false,
    },
    outputSchema: COSMOS_OUTPUT_SCHEMA,
    annotations: { title: `Query ${ref.database}/${ref.container}`, ...READ_ONLY },
  };
  return [read, query];
}

/** A grant of `ref` to `p` that MCP tools may read through (exposed, a partition bound), or undefined. */
function toolGrant(
  policy: Policy,
  p: Principal,
  ref: CosmosContainerRef,
): { grant: CosmosDecisionGrant; ruleId: string; spec: CosmosGrant | undefined; partition: string } | undefined {
  const d = evaluate(policy, p, { kind: 'cosmos', ...ref });
  if (d.decision !== 'grant' || d.grant.kind !== 'cosmos') return undefined;
  const spec = grantSpecOf(policy, d.ruleId, ref);
  if (spec?.mcp?.expose === false) return undefined;
  const partition = boundPartition(d.grant, spec, p);
  return partition === undefined ? undefined : { grant: d.grant, ruleId: d.ruleId, spec, partition };
}

/** What `tools/list` shows of Cosmos: the two tools of every container the live policy grants this caller now. */
export function listCosmosTools(policy: Policy, p: Principal, cap: number): ToolDefinition[] {
  const out: ToolDefinition[] = [];
  for (const c of indexOf(policy).containers) {
    const g = toolGrant(policy, p, c);
    if (!g) continue;
    const defs = cosmosToolDefinitions(c, g.spec?.mcp, cap);
    if (defs) out.push(...defs);
  }
  return out;
}

/**
 * What `explain_access` says of Cosmos: each container the policy grants this caller, with the rule and its tools, or
 * why it has none (no partition bound for the caller, not exposed, a name it would share). Containers not granted to
 * the caller are not named.
 */
export function explainCosmos(policy: Policy, p: Principal): Record<string, unknown>[] {
  const out: Record<string, unknown>[] = [];
  const seen = new Set<string>();
  for (const rule of policy.rules)
    for (const g of rule.grants.cosmos) {
      const ref = { account: g.account, database: g.database, container: g.container };
      const key = JSON.stringify([ref.account, ref.database, ref.container]);
      if (seen.has(key)) continue;
      seen.add(key);
      const d = evaluate(policy, p, { kind: 'cosmos', ...ref });
      if (d.decision !== 'grant') continue;
      const container = `${ref.account}/${ref.database}/${ref.container}`;
      const names = cosmosToolNames(ref);
      const spec = grantSpecOf(policy, d.ruleId, ref);
      const why =
        !names || cosmosToolOf(policy, names.read) === undefined
          ? 'The container ids make no unique MCP tool name.'
          : spec?.mcp?.expose === false
            ? 'The grant is not exposed to MCP (mcp.expose false).'
            : d.grant.kind === 'cosmos' && boundPartition(d.grant, spec, p) === undefined
              ? 'The grant binds no partition for the caller (partitionKey or mcp.partitionKey).'
              : undefined;
      out.push(
        why === undefined
          ? { container, decision: 'grant', ruleId: d.ruleId, tools: [names!.read, names!.query] }
          : { container, decision: 'deny', ruleId: d.ruleId, reason: 'not_granted', detail: why },
      );
    }
  return out;
}

function invalid(parameter: string, message: string): BrokerError {
  return new BrokerError('invalid_parameter', message, { detail: { parameter } });
}

/** Cosmos ids: 1-255 characters, none of / \ ? # (REST reference, Create a Document), no control characters. */
// eslint-disable-next-line no-control-regex
const ITEM_ID = /^[^/\\?#\u0000-\u001f\u007f-\u009f]{1,255}$/;

export type CosmosFilterValue = string | number | boolean;

/** The validated arguments of a call. */
export type CosmosToolArgs =
  | { readonly kind: 'read'; readonly id: string }
  | { readonly kind: 'query'; readonly where: readonly { field: string; value: CosmosFilterValue }[]; readonly maxItems: number };

/**
 * The arguments of a Cosmos tool, checked against its schema (own members only, each refusal naming the argument): a
 * partition key is refused by name, an unknown argument too; `maxItems` above the limit is refused, not lowered.
 */
export function parseCosmosArgs(
  kind: CosmosToolKind,
  raw: unknown,
  spec: CosmosMcpSpec | undefined,
  cap: number,
): CosmosToolArgs {
  const args = (raw ?? {}) as Record<string, unknown>;
  if (typeof args !== 'object' || Array.isArray(args)) throw invalid('arguments', 'arguments must be an object.');
  const allowed = kind === 'read' ? ['id'] : ['where', 'maxItems'];
  for (const k of Object.keys(args)) {
    if (PARTITION_ARGUMENTS.has(k))
      throw invalid(k, `Parameter "${k}" is not accepted: the broker binds the partition key from the caller's identity.`);
    if (!allowed.includes(k) || (k === 'where' && !spec?.fields?.length))
      throw invalid(k.slice(0, 64), `Unknown parameter "${k.slice(0, 64)}".`);
  }
  if (kind === 'read') {
    const id = args.id;
    if (id === undefined) throw invalid('id', 'Parameter "id" is required.');
    if (typeof id !== 'string' || !ITEM_ID.test(id))
      throw invalid('id', 'Parameter "id" must be a Cosmos item id: 1-255 characters, none of / \\ ? # or control characters.');
    return { kind, id };
  }
  const limit = itemLimit(spec, cap);
  let maxItems = limit;
  if (args.maxItems !== undefined) {
    const m = args.maxItems;
    if (typeof m !== 'number' || !Number.isInteger(m) || m < 1 || m > limit)
      throw invalid('maxItems', `Parameter "maxItems" must be a whole number from 1 to ${limit}.`);
    maxItems = m;
  }
  const where: { field: string; value: CosmosFilterValue }[] = [];
  if (args.where !== undefined) {
    const w = args.where;
    if (w === null || typeof w !== 'object' || Array.isArray(w)) throw invalid('where', 'Parameter "where" must be an object.');
    for (const [field, value] of Object.entries(w as Record<string, unknown>)) {
      const name = `where.${field.slice(0, 64)}`;
      if (!(spec?.fields ?? []).includes(field)) throw invalid(name, `Unknown filter field "${field.slice(0, 64)}".`);
      const ok =
        (typeof value === 'string' && value.length <= 1024) ||
        (typeof value === 'number' && Number.isFinite(value)) ||
        typeof value === 'boolean';
      if (!ok) throw invalid(name, `Filter "${name}" must be a string (at most 1024 characters), a number or a boolean.`);
      where.push({ field, value });
    }
  }
  return { kind, where, maxItems };
}

/**
 * The query of a query tool: TOP and every filter value are parameters; field names come from the grant's declared
 * `fields` (COSMOS_FIELD: plain names), never from the agent. The partition is the request's partition key.
 */
export function buildCosmosQuery(args: Extract<CosmosToolArgs, { kind: 'query' }>): {
  query: string;
  parameters: { name: string; value: CosmosFilterValue }[];
} {
  const parameters: { name: string; value: CosmosFilterValue }[] = [{ name: '@top', value: args.maxItems + 1 }];
  const conds = args.where.map((w, i) => {
    parameters.push({ name: `@p${i}`, value: w.value });
    return `c.${w.field} = @p${i}`;
  });
  return { query: `SELECT TOP @top * FROM c${conds.length ? ` WHERE ${conds.join(' AND ')}` : ''}`, parameters };
}
