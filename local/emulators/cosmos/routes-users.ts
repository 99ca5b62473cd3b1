import { randomUUID } from 'node:crypto';
import type { EmuRequest, EmuResponse } from '../harness';
import type { Auth } from './auth';
import { ID_RULE, MAX_EXPIRY, MIN_EXPIRY, rid, type CosmosContext, type Database, type PermissionRecord } from './context';

/**
 * Users and permissions (create/upsert/read/delete). A permission's `_token` is a new resource token on every
 * read or write, signed with the master key that authorized the request; one permission per (user, resource).
 */
export function userRoutes(ctx: CosmosContext) {
  const { err, forbidden, notFound, badRequest, ok, coll, isUpsert, sys, issueResourceToken } = ctx;

  return (req: EmuRequest, s: readonly string[], auth: Auth, d: Database, now: number): EmuResponse => {
    if (s[2] === 'users') {
      if (auth.kind !== 'master') return forbidden();
      if (s.length === 3) {
        if (req.method !== 'POST') return err(405, 'MethodNotAllowed', 'Method not allowed');
        const b = req.json() as { id?: unknown } | undefined;
        if (typeof b?.id !== 'string' || !ID_RULE.test(b.id) || b.id.endsWith(' '))
          return badRequest(
            'The input name is invalid. Ensure to provide a unique non-empty string less than 255 characters for the id.',
          );
        const existing = d.users.get(b.id);
        if (existing && !isUpsert(req)) return err(409, 'Conflict', 'Entity with the specified id already exists in the system.');
        const u = existing ?? { rid: rid(), permissions: new Map() };
        d.users.set(b.id, u);
        return ok(existing ? 200 : 201, {
          ...sys(b.id, u.rid, `dbs/${d.rid}/users/${u.rid}/`, now),
          _permissions: 'permissions/',
        });
      }
      const userId = s[3]!;
      const u = d.users.get(userId);
      if (s.length === 4) {
        if (!u) return notFound();
        if (req.method === 'GET')
          return ok(200, { ...sys(userId, u.rid, `dbs/${d.rid}/users/${u.rid}/`, now), _permissions: 'permissions/' });
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
        const b = req.json() as
          { id?: unknown; permissionMode?: unknown; resource?: unknown; resourcePartitionKey?: unknown } | undefined;
        if (typeof b?.id !== 'string' || !ID_RULE.test(b.id)) return badRequest('The input name is invalid.');
        // The service takes the mode case-insensitively (the SDK sends "read"/"all").
        const mode = typeof b.permissionMode === 'string' ? b.permissionMode.toLowerCase() : '';
        if (mode !== 'read' && mode !== 'all') return badRequest('permissionMode must be Read or All.');
        if (typeof b.resource !== 'string') return badRequest('resource is required.');
        const rs = b.resource.split('/').filter(Boolean);
        if (!(rs.length === 4 && rs[0] === 'dbs' && rs[2] === 'colls'))
          return badRequest('The permission resource must be a container link (dbs/{db}/colls/{coll}).');
        if (!coll(rs[1]!, rs[3]!)) return notFound();
        const pk = b.resourcePartitionKey;
        if (pk !== undefined && (!Array.isArray(pk) || pk.length !== 1))
          return badRequest('resourcePartitionKey must be an array with one value.');
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
    return notFound();
  };
}
