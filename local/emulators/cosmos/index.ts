import { randomBytes } from 'node:crypto';
import { startEmulator, type Emulator, type EmuRequest, type EmuResponse, type Route } from '../harness';
import { recordIssuedToken } from '../issued-tokens';
import { createAuth } from './auth';
import { createCosmosContext, rid, type CosmosContainerSpec, type CosmosEmulatorOptions, type PermissionRecord } from './context';
import type { RoleAssignment, RoleDefinition } from './rbac';
import { documentRoutes } from './routes-documents';
import { metadataRoutes } from './routes-metadata';
import { userRoutes } from './routes-users';

export type { CosmosContainerSpec, CosmosEmulatorOptions, PermissionRecord } from './context';

/**
 * CosmosDB (SQL API) gateway emulator over HTTPS, built from the REST reference
 * (https://learn.microsoft.com/rest/api/cosmos-db/): the database account (endpoint discovery,
 * `GET /`), databases, containers, users, permissions and documents (create/upsert/read/replace/delete,
 * queries scoped to one partition), partition key ranges.
 *
 * Authorization is strict, as the service is:
 * - master key: `type=master&ver=1.0&sig=` HMAC-SHA256 (base64-decoded key) over
 *   `verb\nresourceType\nresourceLink\nx-ms-date\n\n` (lower-cased except the link); a missing or malformed
 *   `x-ms-date` is 401, one in the future or older than 15 minutes (the date is the token's start, +15 min its
 *   expiry) is 403;
 * - resource token (`type=resource&ver=1.0&sig=…`, issued as a permission's `_token` with
 *   `x-ms-documentdb-expiry-seconds`, 10–18000, default 3600): only the permission's container, only its
 *   `resourcePartitionKey`, read-only for `Read`, refused once expired. Tokens are signed with the master
 *   key: regenerating the key invalidates them; deleting the permission does not (as on the service).
 * - Entra ID token (`type=aad&ver=1.0&sig=<JWT>`, data-plane RBAC): see ./rbac.ts; 401 for a bad token,
 *   403 substatus 5300 naming the missing action and scope.
 * - `disableLocalAuth`: master keys and resource tokens are refused with 401 (only Entra ID tokens work).
 * Errors are shaped like the service's: `{ code, message }` with `x-ms-activity-id`.
 *
 * This file wires the account together; the behaviour lives beside it: context.ts (state, keys, error shape),
 * auth.ts (master / resource / Entra tokens), rbac.ts (data-plane RBAC), routes-metadata.ts (account, databases,
 * containers, pkranges), routes-users.ts (users, permissions), routes-documents.ts (documents, queries), and
 * management.ts (the ARM slice for key rotation, a separate emulator).
 */

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
export async function startCosmos(opts: CosmosEmulatorOptions): Promise<CosmosEmulator> {
  const ctx = createCosmosContext(opts);
  const { clock, keys, dbs, tls, classify, notFound, createContainer, coll, pkValueOf, docKey, sys } = ctx;
  const { rbac, authenticate, authorizeResource, authorizeAad } = createAuth(ctx);
  const meta = metadataRoutes(ctx);
  const users = userRoutes(ctx);
  const documents = documentRoutes(ctx);

  /** Authenticate and authorize, then hand the request to its route module. */
  const handle = async (req: EmuRequest): Promise<EmuResponse> => {
    const c = classify(req.path);
    const auth = await authenticate(req, c);
    if ('status' in auth) return auth;
    const denied =
      auth.kind === 'resource'
        ? authorizeResource(req, c, auth.token)
        : auth.kind === 'aad'
          ? authorizeAad(req, c, auth.oid)
          : undefined;
    if (denied) return denied;
    const s = c.segments;
    const now = Math.floor(clock.now() / 1000);
    if (s.length <= 1 || s[0] !== 'dbs') return meta.top(req, s, auth);
    // A document request under a database or container that does not exist: 404 substatus 1003, OWNER_RESOURCE_NOT_FOUND
    // (https://learn.microsoft.com/python/api/azure-cosmos/azure.cosmos.http_constants.substatuscodes), not an item's 404.
    const ownerMissing = () =>
      s[4] === 'docs' ? ctx.err(404, 'NotFound', 'Owner resource does not exist', { 'x-ms-substatus': '1003' }) : notFound();
    const d = ctx.db(s[1]!);
    if (!d) return ownerMissing();
    if (s.length === 2) return meta.database(req, s, d);
    if (s[2] === 'users') return users(req, s, auth, d, now);
    if (s[2] !== 'colls') return notFound();
    if (s.length <= 4 || s[4] !== 'docs') return meta.collections(req, s, auth, d);
    const co = d.containers.get(s[3]!);
    if (!co) return ownerMissing();
    return documents(req, s, d, co, now);
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
    errorBody: (status, message) => ({
      code: status === 429 ? 'TooManyRequests' : status >= 500 ? 'ServiceUnavailable' : 'BadRequest',
      message,
    }),
  });
  const endpoint = `https://127.0.0.1:${emu.port}/`;
  ctx.endpoint = endpoint;

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
      return [...(dbs.get(database)?.users.get(user)?.permissions.values() ?? [])].map(
        ({ id, permissionMode, resource, resourcePartitionKey }) => ({
          id,
          permissionMode,
          resource,
          ...(resourcePartitionKey ? { resourcePartitionKey } : {}),
        }),
      );
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
      co.docs.set(docKey(pk, doc.id), {
        ...doc,
        ...sys(doc.id, rid(), `dbs/${database}/colls/${container}/docs/${rid()}/`, Math.floor(clock.now() / 1000)),
      });
    },
    defineRole: (def: RoleDefinition) => rbac.defineRole(def),
    assignRole: (a: RoleAssignment) => rbac.assignRole(a),
    removeRoleAssignments: (principalId: string) => rbac.removeAssignments(principalId),
  });
  Object.defineProperty(out, 'masterKey', { get: () => keys.primary, enumerable: true });
  Object.defineProperty(out, 'secondaryKey', { get: () => keys.secondary, enumerable: true });
  return out;
}
