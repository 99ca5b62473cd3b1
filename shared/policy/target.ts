import { BrokerError } from '../errors';
import { COSMOS_ACCOUNT, COSMOS_ID, INSTANCE_ID, PG_DATABASE, PROJECT_ID, QUERY_NAME, REGION } from '../lib/identifiers';

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

/**
 * A Cosmos database or container id as a target names it: the canonical subset of Cosmos ids that needs no
 * percent-encoding in a URI path (letters, digits, `_`, `-`, `.`; not starting with `.`, so never `.` or `..`).
 */
const COSMOS_TARGET_ID = /^[A-Za-z0-9_-][A-Za-z0-9_.-]{0,254}$/;
/** A canonical partitionKey value: exactly what encodeURIComponent produces (upper-case escapes). */
const CANONICAL_QUERY_VALUE = /^(?:[A-Za-z0-9\-_.!~*'()]|%[0-9A-F]{2})+$/;
/** Control characters (C0, DEL, C1) and the Unicode line/paragraph separators. */
// eslint-disable-next-line no-control-regex
const CONTROL = /[\u0000-\u001f\u007f-\u009f\u2028\u2029]/;

const FORMS =
  'cloudsql://PROJECT/REGION/INSTANCE/DATABASE, cosmos://ACCOUNT/DATABASE/CONTAINER[?mode=read|all][&partitionKey=VALUE] or query://NAME';

function bad(msg: string): BrokerError {
  return new BrokerError('invalid_target', msg, { detail: { parameter: 'resource' } });
}

/**
 * Parse a target in its canonical form only. Nothing is resolved, decoded or stripped on the way: no `.`/`..`
 * segments, no empty segments (doubled or trailing slashes), no percent-escapes in the path, no whitespace or
 * control characters, lower-case scheme, no userinfo/port/fragment; a Cosmos query string has `mode` before
 * `partitionKey`, each at most once, the value encoded exactly as encodeURIComponent does. Anything else is
 * refused with invalid_target, so what is evaluated and audited (formatTarget) is exactly what was asked.
 */
export function parseTarget(resource: string): Target {
  let t = parsed.get(resource);
  if (t === undefined) {
    t = Object.freeze(parseCanonical(resource)); // throws for anything not canonical: nothing refused is remembered
    if (parsed.size >= PARSED_MAX) parsed.clear();
    parsed.set(resource, t);
  }
  return t;
}

/**
 * Targets already parsed, by their exact text (parsing is a function of the text alone): a client asks for the same
 * few targets on every exchange. Bounded; cleared when full.
 */
const parsed = new Map<string, Target>();
const PARSED_MAX = 1024;

function parseCanonical(resource: string): Target {
  if (resource.length > 2048) throw bad('The resource is too long.');
  // Printable ASCII only: whitespace, control characters and raw non-ASCII are never part of a canonical target.
  if (!/^[\x21-\x7e]+$/.test(resource))
    throw bad('The resource must be printable ASCII without whitespace or control characters.');
  const m = /^([a-z]+):\/\/([^?#]*)(?:\?([^#]*))?$/.exec(resource);
  if (!m) throw bad(`The resource must be one of ${FORMS} (no fragment).`);
  const scheme = m[1]!;
  const parts = m[2]!.split('/');
  const query = m[3];
  if (parts.some((p) => p.includes('%'))) throw bad('The resource path must not contain percent-escapes.');
  if (parts.some((p) => p === '' || p === '.' || p === '..'))
    throw bad('The resource path must not contain empty, "." or ".." segments (no doubled or trailing slashes).');
  if (/[@:\\]/.test(parts[0]!)) throw bad('The resource must not carry credentials or a port.');
  let t: Target;
  switch (scheme) {
    case 'cloudsql': {
      if (query !== undefined) throw bad('A cloudsql resource takes no query string.');
      const [project, region, instance, database, ...rest] = parts;
      if (!project || !region || !instance || !database || rest.length > 0) {
        throw bad('A Cloud SQL resource is cloudsql://PROJECT/REGION/INSTANCE/DATABASE.');
      }
      if (!PROJECT_ID.test(project)) throw bad('The project id is not valid.');
      if (!REGION.test(region)) throw bad('The region is not valid.');
      if (!INSTANCE_ID.test(instance)) throw bad('The instance name is not valid.');
      if (!PG_DATABASE.test(database)) throw bad('The database name is not valid.');
      t = { kind: 'cloudsql', project, region, instance, database, connectionName: `${project}:${region}:${instance}` };
      break;
    }
    case 'cosmos': {
      const [account, database, container, ...rest] = parts;
      if (!account || !database || !container || rest.length > 0) {
        throw bad('A CosmosDB resource is cosmos://ACCOUNT/DATABASE/CONTAINER.');
      }
      if (!COSMOS_ACCOUNT.test(account)) throw bad('The Cosmos account name is not valid.');
      if (
        !COSMOS_TARGET_ID.test(database) ||
        !COSMOS_TARGET_ID.test(container) ||
        !COSMOS_ID.test(database) ||
        !COSMOS_ID.test(container)
      ) {
        throw bad(
          'The Cosmos database or container id is not valid (letters, digits, "_", "-", "." only; not starting with ".").',
        );
      }
      let mode: 'read' | 'all' | undefined;
      let partitionKey: string | undefined;
      if (query !== undefined) {
        const usage = 'The Cosmos resource query is mode=read|all and/or partitionKey=VALUE, each once, mode first.';
        for (const pair of query.split('&')) {
          const eq = pair.indexOf('=');
          const k = eq < 0 ? pair : pair.slice(0, eq);
          const v = eq < 0 ? '' : pair.slice(eq + 1);
          if (k === 'mode' && mode === undefined && partitionKey === undefined && (v === 'read' || v === 'all')) {
            mode = v;
          } else if (k === 'partitionKey' && partitionKey === undefined && CANONICAL_QUERY_VALUE.test(v)) {
            let decoded: string;
            try {
              decoded = decodeURIComponent(v);
            } catch {
              throw bad('The partitionKey is not valid UTF-8 percent-encoding.');
            }
            if (decoded.length === 0 || decoded.length > 2048) throw bad('The partitionKey must be 1 to 2048 characters.');
            if (CONTROL.test(decoded)) throw bad('The partitionKey must not contain control characters.');
            partitionKey = decoded;
          } else {
            throw bad(usage);
          }
        }
      }
      t = { kind: 'cosmos', account, database, container, mode, partitionKey };
      break;
    }
    case 'query': {
      const [name, ...rest] = parts;
      if (!name || rest.length > 0 || query !== undefined || !QUERY_NAME.test(name))
        throw bad('A query resource is query://NAME.');
      t = { kind: 'query', name };
      break;
    }
    default:
      throw bad(`The resource scheme must be cloudsql, cosmos or query (lower case): ${FORMS}.`);
  }
  // The last word: the canonical spelling of what was parsed is what was sent, character for character.
  if (formatTarget(t) !== resource) throw bad(`The resource is not in canonical form; send ${formatTarget(t)}.`);
  return t;
}

export function formatTarget(t: Target): string {
  switch (t.kind) {
    case 'cloudsql':
      return `cloudsql://${t.project}/${t.region}/${t.instance}/${t.database}`;
    case 'cosmos': {
      const q: string[] = [];
      if (t.mode) q.push(`mode=${t.mode}`);
      if (t.partitionKey !== undefined) q.push(`partitionKey=${encodeURIComponent(t.partitionKey)}`);
      return `cosmos://${t.account}/${encodeURIComponent(t.database)}/${encodeURIComponent(t.container)}${q.length ? `?${q.join('&')}` : ''}`;
    }
    case 'query':
      return `query://${t.name}`;
  }
}
