import { randomUUID } from 'node:crypto';
import type { EmuRequest, EmuResponse } from '../harness';
import { ID_RULE, rid, type Container, type CosmosContext, type Database } from './context';

/** Documents: create/upsert/read/replace/delete, read feed, and queries (a small SQL subset) within a partition. */
export function documentRoutes(ctx: CosmosContext) {
  const { err, notFound, badRequest, ok, isQueryRequest, parsePk, pkValueOf, isUpsert, sys, docKey } = ctx;

  /**
   * A tiny SQL subset: SELECT [TOP n|@p] * FROM c [WHERE c.a = @p [AND c.b = 'x']...]. TOP takes a literal or a
   * parameter (https://learn.microsoft.com/azure/cosmos-db/nosql/query/parameterized-queries: "SELECT TOP @pageSize *");
   * a TOP parameter that is not a non-negative integer is refused (stricter than the reference, which is silent).
   */
  const runQuery = (docs: Record<string, unknown>[], body: unknown): Record<string, unknown>[] | string => {
    const q = body as { query?: unknown; parameters?: { name: string; value: unknown }[] };
    if (typeof q?.query !== 'string') return 'The query body must be {"query": "...", "parameters": [...]}';
    const m = /^\s*SELECT\s+(?:TOP\s+(\d+|@\w+)\s+)?\*\s+FROM\s+(\w+)(?:\s+WHERE\s+(.+?))?\s*$/i.exec(q.query);
    if (!m) return `Syntax error, the sandbox supports SELECT [TOP n] * FROM c [WHERE c.field = @param AND ...] only.`;
    let top: number | undefined;
    if (m[1] !== undefined) {
      const raw = m[1].startsWith('@') ? (q.parameters ?? []).find((x) => x.name === m[1])?.value : Number(m[1]);
      if (typeof raw !== 'number' || !Number.isSafeInteger(raw) || raw < 0)
        return `The TOP value must be a non-negative integer (${m[1]}).`;
      top = raw;
    }
    const alias = m[2]!;
    const conds: { field: string[]; value: unknown }[] = [];
    if (m[3]) {
      for (const part of m[3].split(/\s+AND\s+/i)) {
        const cm = new RegExp(`^${alias}((?:\\.\\w+)+)\\s*=\\s*(@\\w+|'[^']*'|-?\\d+(?:\\.\\d+)?|true|false|null)$`, 'i').exec(
          part.trim(),
        );
        if (!cm) return `Syntax error near '${part.trim().slice(0, 40)}'.`;
        const raw = cm[2]!;
        let value: unknown;
        if (raw.startsWith('@')) {
          const p = (q.parameters ?? []).find((x) => x.name === raw);
          if (!p) return `Parameter ${raw} is not defined.`;
          value = p.value;
        } else if (raw.startsWith("'")) value = raw.slice(1, -1);
        else value = JSON.parse(raw.toLowerCase()) as unknown;
        conds.push({ field: cm[1]!.split('.').filter(Boolean), value });
      }
    }
    const hits = docs.filter((d) =>
      conds.every((c) => JSON.stringify(pkValueOf(d, '/' + c.field.join('/'))) === JSON.stringify(c.value)),
    );
    return top === undefined ? hits : hits.slice(0, top);
  };

  return (req: EmuRequest, s: readonly string[], d: Database, co: Container, now: number): EmuResponse => {
    const pkHeader = req.header('x-ms-documentdb-partitionkey');
    const pk = pkHeader === undefined ? undefined : parsePk(pkHeader);
    if (pkHeader !== undefined && (!Array.isArray(pk) || pk.length !== 1))
      return badRequest('The partition key supplied in x-ms-documentdb-partitionkey header is malformed.');
    const pkValue = Array.isArray(pk) ? (pk[0] as unknown) : undefined;

    if (s.length === 5) {
      if (req.method === 'GET') {
        const all = [...co.docs.values()].filter(
          (doc) => pkHeader === undefined || JSON.stringify(pkValueOf(doc, co.pkPath)) === JSON.stringify(pkValue),
        );
        return ok(200, { _rid: co.rid, Documents: all, _count: all.length }, { 'x-ms-item-count': String(all.length) });
      }
      if (req.method !== 'POST') return err(405, 'MethodNotAllowed', 'Method not allowed');
      if (isQueryRequest(req)) {
        if (pkHeader === undefined && (req.header('x-ms-documentdb-query-enablecrosspartition') ?? '').toLowerCase() !== 'true') {
          return badRequest(
            'Cross partition query is required but disabled. Please set x-ms-documentdb-query-enablecrosspartition to true, specify x-ms-documentdb-partitionkey, or revise your query to avoid this exception.',
          );
        }
        if ((req.header('x-ms-cosmos-is-query-plan-request') ?? '').toLowerCase() === 'true') {
          return ok(200, {
            partitionedQueryExecutionInfoVersion: 2,
            queryInfo: {
              distinctType: 'None',
              top: null,
              offset: null,
              limit: null,
              orderBy: [],
              orderByExpressions: [],
              groupByExpressions: [],
              groupByAliases: [],
              aggregates: [],
              groupByAliasToAggregateType: {},
              rewrittenQuery: '',
              hasSelectValue: false,
              hasNonStreamingOrderBy: false,
            },
            queryRanges: [{ min: '', max: 'FF', isMinInclusive: true, isMaxInclusive: false }],
          });
        }
        const scope = [...co.docs.values()].filter(
          (doc) => pkHeader === undefined || JSON.stringify(pkValueOf(doc, co.pkPath)) === JSON.stringify(pkValue),
        );
        const r = runQuery(scope, req.json());
        if (typeof r === 'string') return badRequest(r);
        return ok(200, { _rid: co.rid, Documents: r, _count: r.length }, { 'x-ms-item-count': String(r.length) });
      }
      const doc = req.json() as Record<string, unknown> | undefined;
      if (!doc || typeof doc !== 'object' || Array.isArray(doc)) return badRequest('The request body must be a JSON document.');
      if (typeof doc.id !== 'string' || !ID_RULE.test(doc.id))
        return badRequest(
          'The input name is invalid. Ensure to provide a unique non-empty string less than 255 characters for the id.',
        );
      const docPk = pkValueOf(doc, co.pkPath);
      if (pkHeader === undefined) return badRequest('PartitionKey value must be supplied for this operation.');
      if (JSON.stringify(docPk) !== JSON.stringify(pkValue))
        return badRequest("PartitionKey extracted from document doesn't match the one specified in the header.");
      const key = docKey(pkValue, doc.id);
      const exists = co.docs.has(key);
      if (exists && !isUpsert(req)) return err(409, 'Conflict', 'Entity with the specified id already exists in the system.');
      const stored = {
        ...doc,
        ...sys(doc.id, rid(), `dbs/${d.rid}/colls/${co.rid}/docs/${rid()}/`, now),
        _attachments: 'attachments/',
      };
      co.docs.set(key, stored);
      return ok(exists ? 200 : 201, stored);
    }
    if (s.length !== 6) return notFound();
    if (pkHeader === undefined) return badRequest('PartitionKey value must be supplied for this operation.');
    const key = docKey(pkValue, s[5]!);
    const existing = co.docs.get(key);
    if (req.method === 'GET') return existing ? ok(200, existing) : notFound();
    if (req.method === 'DELETE') {
      if (!existing) return notFound();
      co.docs.delete(key);
      return { status: 204, headers: { 'x-ms-activity-id': randomUUID() } };
    }
    if (req.method === 'PUT') {
      if (!existing) return notFound();
      const doc = req.json() as Record<string, unknown> | undefined;
      if (!doc || doc.id !== s[5]) return badRequest('The id in the body must match the document link.');
      if (JSON.stringify(pkValueOf(doc, co.pkPath)) !== JSON.stringify(pkValue))
        return badRequest("PartitionKey extracted from document doesn't match the one specified in the header.");
      const stored = { ...doc, ...sys(s[5]!, String(existing._rid), String(existing._self), now), _attachments: 'attachments/' };
      co.docs.set(key, stored);
      return ok(200, stored);
    }
    return err(405, 'MethodNotAllowed', 'Method not allowed');
  };
}
