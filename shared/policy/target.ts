import { BrokerError } from '../errors';
import { COSMOS_ACCOUNT, COSMOS_ID, PG_DATABASE, QUERY_NAME } from './schema';

/**
 * Targets, named by the `resource` parameter:
 * - `cloudsql://PROJECT/REGION/INSTANCE/DATABASE`
 * - `cosmos://ACCOUNT/DATABASE/CONTAINER[?mode=read|all][&partitionKey=VALUE]` (query narrows, never widens)
 * - `query://NAME` (policy explain only)
 */
export type Target =
  | {
      readonly kind: 'cloudsql';
      readonly project: string;
      readonly region: string;
      readonly instance: string;
      readonly database: string;
      /** PROJECT:REGION:INSTANCE */
      readonly connectionName: string;
    }
  | {
      readonly kind: 'cosmos';
      readonly account: string;
      readonly database: string;
      readonly container: string;
      readonly mode?: 'read' | 'all';
      readonly partitionKey?: string;
    }
  | { readonly kind: 'query'; readonly name: string };

const PROJECT = /^[a-z][a-z0-9-]{4,29}$/;
const REGION = /^[a-z]+-[a-z]+[0-9]+$/;
const INSTANCE = /^[a-z][a-z0-9-]{0,97}$/;

function bad(msg: string): BrokerError {
  return new BrokerError('invalid_target', msg, { detail: { parameter: 'resource' } });
}

function segments(u: URL): string[] {
  const path = u.pathname.replace(/^\/+/, '');
  if (path === '') return [u.hostname];
  return [u.hostname, ...path.split('/').map((s) => decodeURIComponent(s))];
}

export function parseTarget(resource: string): Target {
  if (resource.length > 2048) throw bad('The resource is too long.');
  let u: URL;
  try {
    u = new URL(resource);
  } catch {
    throw bad('The resource must be a URI such as cloudsql://PROJECT/REGION/INSTANCE/DATABASE or cosmos://ACCOUNT/DATABASE/CONTAINER.');
  }
  if (u.username || u.password || u.port || u.hash) throw bad('The resource must not carry credentials, a port or a fragment.');
  let parts: string[];
  try {
    parts = segments(u);
  } catch {
    throw bad('The resource path is not valid percent-encoding.');
  }
  switch (u.protocol) {
    case 'cloudsql:': {
      if (u.search) throw bad('A cloudsql resource takes no query string.');
      const [project, region, instance, database, ...rest] = parts;
      if (!project || !region || !instance || !database || rest.length > 0) {
        throw bad('A Cloud SQL resource is cloudsql://PROJECT/REGION/INSTANCE/DATABASE.');
      }
      if (!PROJECT.test(project)) throw bad('The project id is not valid.');
      if (!REGION.test(region)) throw bad('The region is not valid.');
      if (!INSTANCE.test(instance)) throw bad('The instance name is not valid.');
      if (!PG_DATABASE.test(database)) throw bad('The database name is not valid.');
      return { kind: 'cloudsql', project, region, instance, database, connectionName: `${project}:${region}:${instance}` };
    }
    case 'cosmos:': {
      const [account, database, container, ...rest] = parts;
      if (!account || !database || !container || rest.length > 0) {
        throw bad('A CosmosDB resource is cosmos://ACCOUNT/DATABASE/CONTAINER.');
      }
      if (!COSMOS_ACCOUNT.test(account)) throw bad('The Cosmos account name is not valid.');
      if (!COSMOS_ID.test(database) || !COSMOS_ID.test(container)) throw bad('The Cosmos database or container id is not valid.');
      let mode: 'read' | 'all' | undefined;
      let partitionKey: string | undefined;
      for (const [k, v] of u.searchParams) {
        if (k === 'mode' && mode === undefined && (v === 'read' || v === 'all')) mode = v;
        else if (k === 'partitionKey' && partitionKey === undefined && v.length > 0 && v.length <= 2048) partitionKey = v;
        else throw bad(`The Cosmos resource query parameter "${k}" is not valid (mode=read|all, partitionKey=VALUE, each once).`);
      }
      return { kind: 'cosmos', account, database, container, mode, partitionKey };
    }
    case 'query:': {
      const [name, ...rest] = parts;
      if (!name || rest.length > 0 || u.search || !QUERY_NAME.test(name)) throw bad('A query resource is query://NAME.');
      return { kind: 'query', name };
    }
    default:
      throw bad('The resource scheme must be cloudsql, cosmos or query.');
  }
}

export function formatTarget(t: Target): string {
  switch (t.kind) {
    case 'cloudsql':
      return `cloudsql://${t.project}/${t.region}/${t.instance}/${t.database}`;
    case 'cosmos': {
      const q = new URLSearchParams();
      if (t.mode) q.set('mode', t.mode);
      if (t.partitionKey !== undefined) q.set('partitionKey', t.partitionKey);
      const qs = q.toString();
      return `cosmos://${t.account}/${encodeURIComponent(t.database)}/${encodeURIComponent(t.container)}${qs ? `?${qs}` : ''}`;
    }
    case 'query':
      return `query://${t.name}`;
  }
}
