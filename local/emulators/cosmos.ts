import { createHmac, randomBytes, randomUUID, timingSafeEqual } from 'node:crypto';
import type { SandboxCa } from '../pki';
import { startEmulator, type Emulator, type EmuRequest, type EmuResponse, type Route } from './harness';
import { recordIssuedToken } from './issued-tokens';
import type { EntraEmulator } from './entra';
import { CosmosRbac, requiredAction, type RoleAssignment, type RoleDefinition } from './cosmos/rbac';

/**
 * CosmosDB (SQL API) gateway emulator over HTTPS, built from the REST reference
 * (https://learn.microsoft.com/rest/api/cosmos-db/): the database account (endpoint discovery,
 * `GET /`), databases, containers, users, permissions and documents (create/upsert/read/replace/delete,
 * queries scoped to one partition), partition key ranges.
 *
 * Authorization is strict, as the service is:
 * - master key: `type=master&ver=1.0&sig=` HMAC-SHA256 (base64-decoded key) over
 *   `verb\nresourceType\nresourceLink\nx-ms-date\n\n` (lower-cased except the link); a missing or stale
 *   `x-ms-date` (more than 15 minutes off) is refused;
 * - resource token (`type=resource&ver=1.0&sig=…`, issued as a permission's `_token` with
 *   `x-ms-documentdb-expiry-seconds`, 10–18000, default 3600): only the permission's container, only its
 *   `resourcePartitionKey`, read-only for `Read`, refused once expired. Tokens are signed with the master
 *   key: regenerating the key invalidates them; deleting the permission does not (as on the service).
 * - Entra ID token (`type=aad&ver=1.0&sig=<JWT>`, data-plane RBAC): see ./cosmos/rbac.ts; 401 for a bad token,
 *   403 substatus 5300 naming the missing action and scope.
 * - `disableLocalAuth`: master keys and resource tokens are refused with 401 (only Entra ID tokens work).
 * Errors are shaped like the service's: `{ code, message }` with `x-ms-activity-id`.
 */

export interface CosmosContainerSpec {
  readonly database: string;
  readonly id: string;
  /** Partition key path, e.g. `/pk`. */
  readonly partitionKeyPath: string;
}

export interface CosmosEmulatorOptions {
  readonly account: string;
  readonly ca: SandboxCa;
  readonly port?: number;
  readonly host?: string;
  /** Base64 master key (default: random 64 bytes). */
  readonly masterKey?: string;
  readonly containers?: readonly CosmosContainerSpec[];
  /** Emulator name (call records, faults); default `cosmos`. */
  readonly name?: string;
  /** Accept Entra ID tokens (data-plane RBAC) signed by this issuer. */
  readonly entra?: EntraEmulator;
  /** Refuse master keys and resource tokens (an account with `disableLocalAuth: true`). */
  readonly disableLocalAuth?: boolean;
}

export interface CosmosEmulator extends Emulator {
  /** `https://127.0.0.1:PORT/` */
  readonly endpoint: string;
  readonly account: string;
  /** The current primary master key (base64). */
  readonly masterKey: string;
  /** The current secondary master key (base64). Both keys authorize every request (the dual-key scheme). */
  readonly secondaryKey: string;
  /**
   * Regenerate a key (default primary); the old value and every resource token signed with it stop working.
   * Resource tokens are signed with the key that authorized the permission request.
   */
  regenerateKey(kind?: 'primary' | 'secondary'): string;
  /** The emulator's clock (tests move it to expire tokens). */
  readonly clock: { now: () => number };
  createContainer(spec: CosmosContainerSpec): void;
  /** Permissions currently stored, for assertions. */
  permissions(database: string, user: string): readonly PermissionRecord[];
  users(database: string): readonly string[];
  /** Documents of a container (all partitions), for assertions. */
  documents(database: string, container: string): readonly Record<string, unknown>[];
  /** Put a document directly (seeding an account that refuses keys). */
  putDocument(database: string, container: string, doc: Record<string, unknown>): void;
  /** Data-plane RBAC: custom role definitions and role assignments (what `sqlRoleDefinitions`/`sqlRoleAssignments` hold). */
  defineRole(def: RoleDefinition): void;
  assignRole(a: RoleAssignment): void;
  removeRoleAssignments(principalId: string): void;
}

export interface PermissionRecord {
  readonly id: string;
  readonly permissionMode: 'Read' | 'All';
  readonly resource: string;
  readonly resourcePartitionKey?: readonly unknown[];
}

interface Container {
  readonly rid: string;
  readonly pkPath: string;
  readonly docs: Map<string, Record<string, unknown>>;
  readonly ts: number;
}

interface User {
  readonly rid: string;
  readonly permissions: Map<string, PermissionRecord & { rid: string; ts: number }>;
}

interface Database {
  readonly rid: string;
  readonly containers: Map<string, Container>;
  readonly users: Map<string, User>;
  readonly ts: number;
}

interface ResourceTokenPayload {
  /** Which master key signed it. */
  readonly key: 'primary' | 'secondary';
  readonly res: string;
  readonly pk: readonly unknown[] | null;
  readonly mode: 'Read' | 'All';
  readonly user: string;
  readonly perm: string;
  readonly exp: number;
}

const ALLOWED_SKEW_MS = 15 * 60 * 1000;
const ID_RULE = /^[^/\\?#]{1,255}$/;
/** Create a Permission: max override 18,000 s; the SDK reference gives the 10 s floor. */
const MIN_EXPIRY = 10;
const MAX_EXPIRY = 18000;

function rid(): string {
  return randomBytes(6).toString('base64');
}

export async function startCosmos(opts: CosmosEmulatorOptions): Promise<CosmosEmulator> {
  const clock = { now: Date.now };
  const keys = { primary: opts.masterKey ?? randomBytes(64).toString('base64'), secondary: randomBytes(64).toString('base64') };
  recordIssuedToken(keys.primary);
  recordIssuedToken(keys.secondary);
  const dbs = new Map<string, Database>();
  const tls = opts.ca.issueServer({ commonName: 'localhost', dnsNames: ['localhost'], ips: ['127.0.0.1'] });
  let endpoint = '';

  const err = (status: number, code: string, message: string, extra: Record<string, string> = {}): EmuResponse => {
    const activityId = randomUUID();
    return {
      status,
      headers: { 'x-ms-activity-id': activityId, ...extra },
      body: { code, message: `Message: {"Errors":[${JSON.stringify(message)}]}\r\nActivityId: ${activityId}, Microsoft.Azure.Documents.Common/2.14.0` },
    };
  };
  const unauthorized = (m: string) => err(401, 'Unauthorized', m);
  const forbidden = () =>
    err(403, 'Forbidden', 'Insufficient permissions provided in the authorization header for the corresponding request. Please retry with another authorization header.');
  const notFound = () => err(404, 'NotFound', 'Resource Not Found. Learn more: https://aka.ms/cosmosdb-tsg-not-found');
  const badRequest = (m: string) => err(400, 'BadRequest', m);
  const ok = (status: number, body: object, headers: Record<string, string> = {}): EmuResponse => ({
    status,
    headers: { 'x-ms-activity-id': randomUUID(), 'x-ms-request-charge': '1', 'x-ms-session-token': '0:1#1', etag: `"${randomUUID()}"`, ...headers },
    body,
  });

  const sign = (key: string, text: string) => createHmac('sha256', Buffer.from(key, 'base64')).update(text, 'utf8').digest();

  const issueResourceToken = (p: ResourceTokenPayload): string => {
    const payload = Buffer.from(JSON.stringify(p)).toString('base64');
    const sig = sign(keys[p.key], payload).toString('base64');
    const token = `type=resource&ver=1.0&sig=${sig};${payload}`;
    recordIssuedToken(token);
    return token;
  };

  // ---- request classification (resource type and link, as the service signs them) ----
  interface Classified {
    readonly segments: readonly string[];
    readonly resourceType: string;
    readonly resourceLink: string;
  }
  const classify = (path: string): Classified => {
    const segments = path.split('/').filter((s) => s.length > 0).map((s) => decodeURIComponent(s));
    if (segments.length === 0) return { segments, resourceType: '', resourceLink: '' };
    if (segments.length % 2 === 1) {
      return { segments, resourceType: segments[segments.length - 1]!, resourceLink: segments.slice(0, -1).join('/') };
    }
    return { segments, resourceType: segments[segments.length - 2]!, resourceLink: segments.join('/') };
  };

  type Auth = { kind: 'master'; key: 'primary' | 'secondary' } | { kind: 'resource'; token: ResourceTokenPayload } | { kind: 'aad'; oid: string };
  const rbac = new CosmosRbac(opts.account, opts.entra, () => clock.now());
  const localAuthDisabled = () => unauthorized('Local Authorization is disabled. Use an AAD token to authorize all requests.');

  const authenticate = async (req: EmuRequest, c: Classified): Promise<Auth | EmuResponse> => {
    const raw = req.header('authorization');
    if (!raw) return unauthorized('Required Header authorization is missing. Ensure a valid Authorization token is passed.');
    let decoded: string;
    try {
      decoded = decodeURIComponent(raw);
    } catch {
      return unauthorized('The input authorization token can\'t serve the request. The wrong key is being used or the expected payload is not built as per the protocol.');
    }
    const m = /^type=(master|resource|aad)&ver=1\.0&sig=(.+)$/.exec(decoded);
    if (!m) return unauthorized('The input authorization token can\'t serve the request. The wrong key is being used or the expected payload is not built as per the protocol.');
    if (m[1] === 'aad') {
      const v = await rbac.verify(m[2]!);
      if (!v.ok) return err(401, 'Unauthorized', v.message);
      return { kind: 'aad', oid: v.principal.oid };
    }
    if (opts.disableLocalAuth) return localAuthDisabled();
    if (m[1] === 'master') {
      const date = req.header('x-ms-date') ?? req.header('date');
      if (!date) return unauthorized('The input authorization token can\'t serve the request. Required header x-ms-date is missing.');
      const t = Date.parse(date);
      if (Number.isNaN(t) || Math.abs(clock.now() - t) > ALLOWED_SKEW_MS) {
        return err(
          403,
          'Forbidden',
          `The authorization token is not valid at the current time. Please create another token and retry (token start time: ${date}, current server time: ${new Date(clock.now()).toUTCString()}).`,
        );
      }
      const text = `${req.method.toLowerCase()}\n${c.resourceType.toLowerCase()}\n${c.resourceLink}\n${date.toLowerCase()}\n\n`;
      let given: Buffer;
      try {
        given = Buffer.from(m[2]!, 'base64');
      } catch {
        given = Buffer.alloc(0);
      }
      const matches = (k: 'primary' | 'secondary') => {
        const expected = sign(keys[k], text);
        return given.length === expected.length && timingSafeEqual(given, expected);
      };
      const key = matches('primary') ? 'primary' : matches('secondary') ? 'secondary' : undefined;
      if (!key) {
        return unauthorized(
          `The input authorization token can't serve the request. The wrong key is being used or the expected payload is not built as per the protocol. Server used the following payload to sign: '${text.replace(/\n/g, '\\n')}'`,
        );
      }
      return { kind: 'master', key };
    }
    const [sig, payload] = m[2]!.split(';');
    if (!sig || !payload) return unauthorized('The input authorization token can\'t serve the request. The wrong key is being used or the expected payload is not built as per the protocol.');
    let token: ResourceTokenPayload;
    try {
      token = JSON.parse(Buffer.from(payload, 'base64').toString('utf8')) as ResourceTokenPayload;
    } catch {
      return unauthorized('The input authorization token can\'t serve the request.');
    }
    if (token.key !== 'primary' && token.key !== 'secondary') return unauthorized('The input authorization token can\'t serve the request.');
    const expected = sign(keys[token.key], payload);
    const given = Buffer.from(sig, 'base64');
    if (given.length !== expected.length || !timingSafeEqual(given, expected)) {
      return unauthorized('The input authorization token can\'t serve the request. The wrong key is being used or the expected payload is not built as per the protocol.');
    }
    if (clock.now() >= token.exp * 1000) {
      return err(
        403,
        'Forbidden',
        `The authorization token is not valid at the current time. Please create another token and retry (token expiry time: ${new Date(token.exp * 1000).toUTCString()}, current server time: ${new Date(clock.now()).toUTCString()}).`,
      );
    }
    return { kind: 'resource', token };
  };

  /** What a resource token may do: the account read, its container's metadata, and documents in its partition. */
  const authorizeResource = (req: EmuRequest, c: Classified, t: ResourceTokenPayload): EmuResponse | undefined => {
    if (c.segments.length === 0) return req.method === 'GET' ? undefined : forbidden();
    const path = c.segments.join('/');
    const within = path === t.res || path.startsWith(`${t.res}/`);
    if (!within) return forbidden();
    const rest = path.slice(t.res.length).split('/').filter(Boolean);
    if (rest.length === 0 || rest[0] === 'pkranges') return req.method === 'GET' ? undefined : forbidden();
    if (rest[0] !== 'docs') return forbidden();
    const isQuery = req.method === 'POST' && rest.length === 1 && isQueryRequest(req);
    const isRead = req.method === 'GET' || isQuery;
    if (!isRead && t.mode !== 'All') return forbidden();
    const isPlan = (req.header('x-ms-cosmos-is-query-plan-request') ?? '').toLowerCase() === 'true';
    if (t.pk && !isPlan) {
      const header = req.header('x-ms-documentdb-partitionkey');
      if (!header) return forbidden(); // cross-partition: the token names one partition
      if (JSON.stringify(parsePk(header)) !== JSON.stringify(t.pk)) return forbidden();
    }
    return undefined;
  };

  const isQueryRequest = (req: EmuRequest) =>
    (req.header('x-ms-documentdb-isquery') ?? '').toLowerCase() === 'true' || (req.header('content-type') ?? '').startsWith('application/query+json');

  const parsePk = (header: string): unknown => {
    try {
      return JSON.parse(header) as unknown;
    } catch {
      return undefined;
    }
  };

  const pkValueOf = (doc: Record<string, unknown>, pkPath: string): unknown => {
    let cur: unknown = doc;
    for (const part of pkPath.split('/').filter(Boolean)) {
      if (cur === null || typeof cur !== 'object') return undefined;
      cur = (cur as Record<string, unknown>)[part];
    }
    return cur;
  };

  const db = (id: string) => dbs.get(id);
  const coll = (dbId: string, id: string) => dbs.get(dbId)?.containers.get(id);

  const createContainer = (spec: CosmosContainerSpec) => {
    let d = dbs.get(spec.database);
    if (!d) {
      d = { rid: rid(), containers: new Map(), users: new Map(), ts: Math.floor(clock.now() / 1000) };
      dbs.set(spec.database, d);
    }
    if (!d.containers.has(spec.id)) d.containers.set(spec.id, { rid: rid(), pkPath: spec.partitionKeyPath, docs: new Map(), ts: Math.floor(clock.now() / 1000) });
  };
  for (const c of opts.containers ?? []) createContainer(c);

  const isUpsert = (req: EmuRequest) => (req.header('x-ms-documentdb-is-upsert') ?? '').toLowerCase() === 'true';
  const sys = (id: string, r: string, self: string, ts: number) => ({ id, _rid: r, _self: self, _etag: `"${r}"`, _ts: ts });

  const accountBody = () => ({
    _self: '',
    id: opts.account,
    _rid: `${opts.account}.documents.azure.com`,
    media: '//media/',
    addresses: '//addresses/',
    _dbs: '//dbs/',
    writableLocations: [{ name: 'Sandbox', databaseAccountEndpoint: endpoint }],
    readableLocations: [{ name: 'Sandbox', databaseAccountEndpoint: endpoint }],
    enableMultipleWriteLocations: false,
    userReplicationPolicy: { asyncReplication: false, minReplicaSetSize: 1, maxReplicasetSize: 4 },
    userConsistencyPolicy: { defaultConsistencyLevel: 'Session' },
    systemReplicationPolicy: { minReplicaSetSize: 1, maxReplicasetSize: 4 },
    readPolicy: { primaryReadCoefficient: 1, secondaryReadCoefficient: 1 },
    queryEngineConfiguration: '{"maxSqlQueryInputLength":262144,"maxJoinsPerSqlQuery":5}',
  });

  /** A tiny SQL subset: SELECT * FROM c [WHERE c.a = @p [AND c.b = 'x']...]. */
  const runQuery = (docs: Record<string, unknown>[], body: unknown): Record<string, unknown>[] | string => {
    const q = body as { query?: unknown; parameters?: { name: string; value: unknown }[] };
    if (typeof q?.query !== 'string') return 'The query body must be {"query": "...", "parameters": [...]}';
    const m = /^\s*SELECT\s+\*\s+FROM\s+(\w+)(?:\s+WHERE\s+(.+?))?\s*$/i.exec(q.query);
    if (!m) return `Syntax error, the sandbox supports SELECT * FROM c [WHERE c.field = @param AND ...] only.`;
    const alias = m[1]!;
    const conds: { field: string[]; value: unknown }[] = [];
    if (m[2]) {
      for (const part of m[2].split(/\s+AND\s+/i)) {
        const cm = new RegExp(`^${alias}((?:\\.\\w+)+)\\s*=\\s*(@\\w+|'[^']*'|-?\\d+(?:\\.\\d+)?|true|false|null)$`, 'i').exec(part.trim());
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
    return docs.filter((d) => conds.every((c) => JSON.stringify(pkValueOf(d, '/' + c.field.join('/'))) === JSON.stringify(c.value)));
  };

  const docKey = (pk: unknown, id: string) => `${JSON.stringify(pk)}\u0000${id}`;

  // ---- handlers ----
  const handle = async (req: EmuRequest): Promise<EmuResponse> => {
    const c = classify(req.path);
    const auth = await authenticate(req, c);
    if ('status' in auth) return auth;
    if (auth.kind === 'resource') {
      const denied = authorizeResource(req, c, auth.token);
      if (denied) return denied;
    }
    if (auth.kind === 'aad') {
      const changeFeed = (req.header('a-im') ?? '').toLowerCase() === 'incremental feed';
      const need = requiredAction(req.method, c.segments, isQueryRequest(req), isUpsert(req), changeFeed);
      const denied = rbac.authorize({ oid: auth.oid }, need, `${req.method} ${req.path}`);
      if (denied) return err(403, 'Forbidden', denied, { 'x-ms-substatus': '5300' });
    }
    const s = c.segments;
    const now = Math.floor(clock.now() / 1000);

    // GET / : database account
    if (s.length === 0) return req.method === 'GET' ? ok(200, accountBody()) : err(405, 'MethodNotAllowed', 'Method not allowed');
    if (s[0] !== 'dbs') return notFound();

    // /dbs
    if (s.length === 1) {
      if (auth.kind !== 'master') return forbidden();
      if (req.method === 'POST') {
        const b = req.json() as { id?: unknown } | undefined;
        if (typeof b?.id !== 'string' || !ID_RULE.test(b.id)) return badRequest('The id of the database is invalid.');
        if (dbs.has(b.id)) return err(409, 'Conflict', 'Entity with the specified id already exists in the system.');
        createContainer({ database: b.id, id: '\u0000', partitionKeyPath: '/id' });
        dbs.get(b.id)!.containers.delete('\u0000');
        const d = dbs.get(b.id)!;
        return ok(201, { ...sys(b.id, d.rid, `dbs/${d.rid}/`, d.ts), _colls: 'colls/', _users: 'users/' });
      }
      return err(405, 'MethodNotAllowed', 'Method not allowed');
    }
    const d = db(s[1]!);
    if (!d) return notFound();
    if (s.length === 2) {
      if (req.method !== 'GET') return err(405, 'MethodNotAllowed', 'Method not allowed');
      return ok(200, { ...sys(s[1]!, d.rid, `dbs/${d.rid}/`, d.ts), _colls: 'colls/', _users: 'users/' });
    }

    // /dbs/{db}/users[/{user}[/permissions[/{perm}]]]
    if (s[2] === 'users') {
      if (auth.kind !== 'master') return forbidden();
      if (s.length === 3) {
        if (req.method !== 'POST') return err(405, 'MethodNotAllowed', 'Method not allowed');
        const b = req.json() as { id?: unknown } | undefined;
        if (typeof b?.id !== 'string' || !ID_RULE.test(b.id) || b.id.endsWith(' ')) return badRequest('The input name is invalid. Ensure to provide a unique non-empty string less than 255 characters for the id.');
        const existing = d.users.get(b.id);
        if (existing && !isUpsert(req)) return err(409, 'Conflict', 'Entity with the specified id already exists in the system.');
        const u = existing ?? { rid: rid(), permissions: new Map() };
        d.users.set(b.id, u);
        return ok(existing ? 200 : 201, { ...sys(b.id, u.rid, `dbs/${d.rid}/users/${u.rid}/`, now), _permissions: 'permissions/' });
      }
      const userId = s[3]!;
      const u = d.users.get(userId);
      if (s.length === 4) {
        if (!u) return notFound();
        if (req.method === 'GET') return ok(200, { ...sys(userId, u.rid, `dbs/${d.rid}/users/${u.rid}/`, now), _permissions: 'permissions/' });
        if (req.method === 'DELETE') {
          d.users.delete(userId);
          return { status: 204, headers: { 'x-ms-activity-id': randomUUID() } };
        }
        return err(405, 'MethodNotAllowed', 'Method not allowed');
      }
      if (s[4] !== 'permissions' || !u) return notFound();
      const expiryRaw = req.header('x-ms-documentdb-expiry-seconds');
      const expiry = expiryRaw === undefined ? 3600 : Number(expiryRaw);
      if (!Number.isInteger(expiry) || expiry < MIN_EXPIRY || expiry > MAX_EXPIRY) {
        return badRequest(`The value of x-ms-documentdb-expiry-seconds must be between ${MIN_EXPIRY} and ${MAX_EXPIRY}.`);
      }
      const withToken = (p: PermissionRecord & { rid: string; ts: number }) => ({
        ...sys(p.id, p.rid, `dbs/${d.rid}/users/${u.rid}/permissions/${p.rid}/`, p.ts),
        permissionMode: p.permissionMode,
        resource: p.resource,
        ...(p.resourcePartitionKey ? { resourcePartitionKey: p.resourcePartitionKey } : {}),
        _token: issueResourceToken({
          key: auth.kind === 'master' ? auth.key : 'primary',
          res: p.resource,
          pk: p.resourcePartitionKey ?? null,
          mode: p.permissionMode,
          user: userId,
          perm: p.id,
          exp: now + expiry,
        }),
      });
      if (s.length === 5) {
        if (req.method !== 'POST') return err(405, 'MethodNotAllowed', 'Method not allowed');
        const b = req.json() as { id?: unknown; permissionMode?: unknown; resource?: unknown; resourcePartitionKey?: unknown } | undefined;
        if (typeof b?.id !== 'string' || !ID_RULE.test(b.id)) return badRequest('The input name is invalid.');
        // The service takes the mode case-insensitively (the SDK sends "read"/"all").
        const mode = typeof b.permissionMode === 'string' ? b.permissionMode.toLowerCase() : '';
        if (mode !== 'read' && mode !== 'all') return badRequest('permissionMode must be Read or All.');
        if (typeof b.resource !== 'string') return badRequest('resource is required.');
        const rs = b.resource.split('/').filter(Boolean);
        if (!(rs.length === 4 && rs[0] === 'dbs' && rs[2] === 'colls')) return badRequest('The permission resource must be a container link (dbs/{db}/colls/{coll}).');
        if (!coll(rs[1]!, rs[3]!)) return notFound();
        const pk = b.resourcePartitionKey;
        if (pk !== undefined && (!Array.isArray(pk) || pk.length !== 1)) return badRequest('resourcePartitionKey must be an array with one value.');
        const existing = u.permissions.get(b.id);
        if (existing && !isUpsert(req)) return err(409, 'Conflict', 'Entity with the specified id already exists in the system.');
        // One permission per (user, resource): another permission of this user on the same container is 409,
        // whatever its mode or partition (REST reference, Permissions).
        const resourceLink = rs.join('/');
        for (const other of u.permissions.values()) {
          if (other.id !== b.id && other.resource === resourceLink) {
            return err(409, 'Conflict', 'Entity with the specified id already exists in the system.');
          }
        }
        const p: PermissionRecord & { rid: string; ts: number } = {
          id: b.id,
          permissionMode: mode === 'all' ? 'All' : 'Read',
          resource: rs.join('/'),
          ...(pk ? { resourcePartitionKey: pk as unknown[] } : {}),
          rid: existing?.rid ?? rid(),
          ts: now,
        };
        u.permissions.set(b.id, p);
        return ok(existing ? 200 : 201, withToken(p));
      }
      const p = u.permissions.get(s[5]!);
      if (!p) return notFound();
      if (req.method === 'GET') return ok(200, withToken(p));
      if (req.method === 'DELETE') {
        u.permissions.delete(s[5]!);
        return { status: 204, headers: { 'x-ms-activity-id': randomUUID() } };
      }
      return err(405, 'MethodNotAllowed', 'Method not allowed');
    }

    // /dbs/{db}/colls[/{coll}[/docs[/{id}] | /pkranges]]
    if (s[2] !== 'colls') return notFound();
    if (s.length === 3) {
      if (auth.kind !== 'master') return forbidden();
      if (req.method !== 'POST') return err(405, 'MethodNotAllowed', 'Method not allowed');
      const b = req.json() as { id?: unknown; partitionKey?: { paths?: unknown } } | undefined;
      const paths = b?.partitionKey?.paths;
      if (typeof b?.id !== 'string' || !ID_RULE.test(b.id)) return badRequest('The id of the container is invalid.');
      if (!Array.isArray(paths) || paths.length !== 1 || typeof paths[0] !== 'string') return badRequest('A partition key definition with one path is required.');
      if (d.containers.has(b.id)) return err(409, 'Conflict', 'Entity with the specified id already exists in the system.');
      createContainer({ database: s[1]!, id: b.id, partitionKeyPath: paths[0] });
    }
    const collId = s.length === 3 ? ((req.json() as { id: string }).id) : s[3]!;
    const co = d.containers.get(collId);
    if (!co) return notFound();
    const collBody = () => ({
      ...sys(collId, co.rid, `dbs/${d.rid}/colls/${co.rid}/`, co.ts),
      partitionKey: { paths: [co.pkPath], kind: 'Hash', version: 2 },
      indexingPolicy: { indexingMode: 'consistent', automatic: true, includedPaths: [{ path: '/*' }], excludedPaths: [{ path: '/"_etag"/?' }] },
      _docs: 'docs/',
    });
    if (s.length === 3) return ok(201, collBody());
    if (s.length === 4) {
      if (req.method === 'GET') return ok(200, collBody());
      return err(405, 'MethodNotAllowed', 'Method not allowed');
    }
    if (s[4] === 'pkranges') {
      const etag = `"${co.rid}-pkranges"`;
      if (req.header('if-none-match') === etag) return { status: 304, headers: { etag, 'x-ms-activity-id': randomUUID() } };
      return ok(
        200,
        { _rid: co.rid, PartitionKeyRanges: [{ id: '0', _rid: co.rid, minInclusive: '', maxExclusive: 'FF', ridPrefix: 0, throughputFraction: 1, status: 'online', parents: [] }], _count: 1 },
        { etag },
      );
    }
    if (s[4] !== 'docs') return notFound();

    const pkHeader = req.header('x-ms-documentdb-partitionkey');
    const pk = pkHeader === undefined ? undefined : parsePk(pkHeader);
    if (pkHeader !== undefined && (!Array.isArray(pk) || pk.length !== 1)) return badRequest('The partition key supplied in x-ms-documentdb-partitionkey header is malformed.');
    const pkValue = Array.isArray(pk) ? (pk[0] as unknown) : undefined;

    if (s.length === 5) {
      if (req.method === 'GET') {
        const all = [...co.docs.values()].filter((doc) => pkHeader === undefined || JSON.stringify(pkValueOf(doc, co.pkPath)) === JSON.stringify(pkValue));
        return ok(200, { _rid: co.rid, Documents: all, _count: all.length }, { 'x-ms-item-count': String(all.length) });
      }
      if (req.method !== 'POST') return err(405, 'MethodNotAllowed', 'Method not allowed');
      if (isQueryRequest(req)) {
        if (pkHeader === undefined && (req.header('x-ms-documentdb-query-enablecrosspartition') ?? '').toLowerCase() !== 'true') {
          return badRequest('Cross partition query is required but disabled. Please set x-ms-documentdb-query-enablecrosspartition to true, specify x-ms-documentdb-partitionkey, or revise your query to avoid this exception.');
        }
        if ((req.header('x-ms-cosmos-is-query-plan-request') ?? '').toLowerCase() === 'true') {
          return ok(200, {
            partitionedQueryExecutionInfoVersion: 2,
            queryInfo: { distinctType: 'None', top: null, offset: null, limit: null, orderBy: [], orderByExpressions: [], groupByExpressions: [], groupByAliases: [], aggregates: [], groupByAliasToAggregateType: {}, rewrittenQuery: '', hasSelectValue: false, hasNonStreamingOrderBy: false },
            queryRanges: [{ min: '', max: 'FF', isMinInclusive: true, isMaxInclusive: false }],
          });
        }
        const scope = [...co.docs.values()].filter((doc) => pkHeader === undefined || JSON.stringify(pkValueOf(doc, co.pkPath)) === JSON.stringify(pkValue));
        const r = runQuery(scope, req.json());
        if (typeof r === 'string') return badRequest(r);
        return ok(200, { _rid: co.rid, Documents: r, _count: r.length }, { 'x-ms-item-count': String(r.length) });
      }
      const doc = req.json() as Record<string, unknown> | undefined;
      if (!doc || typeof doc !== 'object' || Array.isArray(doc)) return badRequest('The request body must be a JSON document.');
      if (typeof doc.id !== 'string' || !ID_RULE.test(doc.id)) return badRequest('The input name is invalid. Ensure to provide a unique non-empty string less than 255 characters for the id.');
      const docPk = pkValueOf(doc, co.pkPath);
      if (pkHeader === undefined) return badRequest('PartitionKey value must be supplied for this operation.');
      if (JSON.stringify(docPk) !== JSON.stringify(pkValue)) return badRequest("PartitionKey extracted from document doesn't match the one specified in the header.");
      const key = docKey(pkValue, doc.id);
      const exists = co.docs.has(key);
      if (exists && !isUpsert(req)) return err(409, 'Conflict', 'Entity with the specified id already exists in the system.');
      const stored = { ...doc, ...sys(doc.id, rid(), `dbs/${d.rid}/colls/${co.rid}/docs/${rid()}/`, now), _attachments: 'attachments/' };
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
      if (JSON.stringify(pkValueOf(doc, co.pkPath)) !== JSON.stringify(pkValue)) return badRequest("PartitionKey extracted from document doesn't match the one specified in the header.");
      const stored = { ...doc, ...sys(s[5]!, String(existing._rid), String(existing._self), now), _attachments: 'attachments/' };
      co.docs.set(key, stored);
      return ok(200, stored);
    }
    return err(405, 'MethodNotAllowed', 'Method not allowed');
  };

  const routes: Route[] = [
    { method: 'GET', path: '/', name: 'cosmos.account', handle },
    { method: '*', path: /^\/dbs\/[^/]+\/users\/[^/]+\/permissions(\/[^/]+)?$/, name: 'cosmos.permission', handle },
    { method: '*', path: /^\/dbs\/[^/]+\/users(\/[^/]+)?$/, name: 'cosmos.user', handle },
    { method: '*', path: /^\/dbs\/[^/]+\/colls\/[^/]+\/docs(\/[^/]+)?$/, name: 'cosmos.document', handle },
    { method: '*', path: /^\/dbs(\/[^/]+(\/colls(\/[^/]+(\/pkranges)?)?)?)?\/?$/, name: 'cosmos.metadata', handle },
  ];

  const emu = await startEmulator({
    name: opts.name ?? 'cosmos',
    routes,
    host: opts.host,
    port: opts.port,
    tls: { key: tls.keyPem, cert: tls.certPem },
    throttleHeaders: (ms) => ({ 'x-ms-retry-after-ms': String(ms), 'x-ms-substatus': '3200' }),
    errorBody: (status, message) => ({ code: status === 429 ? 'TooManyRequests' : status >= 500 ? 'ServiceUnavailable' : 'BadRequest', message }),
  });
  endpoint = `https://127.0.0.1:${emu.port}/`;

  const out = Object.assign(emu, {
    endpoint,
    account: opts.account,
    masterKey: keys.primary,
    secondaryKey: keys.secondary,
    regenerateKey(kind: 'primary' | 'secondary' = 'primary') {
      keys[kind] = randomBytes(64).toString('base64');
      recordIssuedToken(keys[kind]);
      return keys[kind];
    },
    clock,
    createContainer,
    permissions(database: string, user: string) {
      return [...(dbs.get(database)?.users.get(user)?.permissions.values() ?? [])].map(({ id, permissionMode, resource, resourcePartitionKey }) => ({
        id,
        permissionMode,
        resource,
        ...(resourcePartitionKey ? { resourcePartitionKey } : {}),
      }));
    },
    users(database: string) {
      return [...(dbs.get(database)?.users.keys() ?? [])];
    },
    documents(database: string, container: string) {
      return [...(dbs.get(database)?.containers.get(container)?.docs.values() ?? [])];
    },
    putDocument(database: string, container: string, doc: Record<string, unknown>) {
      const co = coll(database, container);
      if (!co || typeof doc.id !== 'string') throw new Error(`no container ${database}/${container}, or the document has no id`);
      const pk = pkValueOf(doc, co.pkPath);
      co.docs.set(docKey(pk, doc.id), { ...doc, ...sys(doc.id, rid(), `dbs/${database}/colls/${container}/docs/${rid()}/`, Math.floor(clock.now() / 1000)) });
    },
    defineRole: (def: RoleDefinition) => rbac.defineRole(def),
    assignRole: (a: RoleAssignment) => rbac.assignRole(a),
    removeRoleAssignments: (principalId: string) => rbac.removeAssignments(principalId),
  });
  Object.defineProperty(out, 'masterKey', { get: () => keys.primary, enumerable: true });
  Object.defineProperty(out, 'secondaryKey', { get: () => keys.secondary, enumerable: true });
  return out;
}
