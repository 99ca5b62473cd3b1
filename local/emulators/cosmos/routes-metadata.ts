import { randomUUID } from 'node:crypto';
import type { EmuRequest, EmuResponse } from '../harness';
import type { Auth } from './auth';
import { ID_RULE, type CosmosContext, type Database } from './context';

/** The database account (`GET /`, endpoint discovery), databases, containers and partition key ranges. */
export function metadataRoutes(ctx: CosmosContext) {
  const { opts, dbs, err, forbidden, notFound, badRequest, ok, createContainer, sys } = ctx;

  const accountBody = () => ({
    _self: '',
    id: opts.account,
    _rid: `${opts.account}.documents.azure.com`,
    media: '//media/',
    addresses: '//addresses/',
    _dbs: '//dbs/',
    writableLocations: [{ name: 'Sandbox', databaseAccountEndpoint: ctx.endpoint }],
    readableLocations: [{ name: 'Sandbox', databaseAccountEndpoint: ctx.endpoint }],
    enableMultipleWriteLocations: false,
    userReplicationPolicy: { asyncReplication: false, minReplicaSetSize: 1, maxReplicasetSize: 4 },
    userConsistencyPolicy: { defaultConsistencyLevel: 'Session' },
    systemReplicationPolicy: { minReplicaSetSize: 1, maxReplicasetSize: 4 },
    readPolicy: { primaryReadCoefficient: 1, secondaryReadCoefficient: 1 },
    queryEngineConfiguration: '{"maxSqlQueryInputLength":262144,"maxJoinsPerSqlQuery":5}',
  });

  /** `/` and `/dbs`. */
  const top = (req: EmuRequest, s: readonly string[], auth: Auth): EmuResponse => {
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
    return notFound();
  };

  /** `/dbs/{db}`. */
  const database = (req: EmuRequest, s: readonly string[], d: Database): EmuResponse => {
    if (req.method !== 'GET') return err(405, 'MethodNotAllowed', 'Method not allowed');
    return ok(200, { ...sys(s[1]!, d.rid, `dbs/${d.rid}/`, d.ts), _colls: 'colls/', _users: 'users/' });
  };

  /** `/dbs/{db}/colls[/{coll}[/pkranges]]`. */
  const collections = (req: EmuRequest, s: readonly string[], auth: Auth, d: Database): EmuResponse => {
    if (s.length === 3) {
      if (auth.kind !== 'master') return forbidden();
      if (req.method !== 'POST') return err(405, 'MethodNotAllowed', 'Method not allowed');
      const b = req.json() as { id?: unknown; partitionKey?: { paths?: unknown } } | undefined;
      const paths = b?.partitionKey?.paths;
      if (typeof b?.id !== 'string' || !ID_RULE.test(b.id)) return badRequest('The id of the container is invalid.');
      if (!Array.isArray(paths) || paths.length !== 1 || typeof paths[0] !== 'string')
        return badRequest('A partition key definition with one path is required.');
      if (d.containers.has(b.id)) return err(409, 'Conflict', 'Entity with the specified id already exists in the system.');
      createContainer({ database: s[1]!, id: b.id, partitionKeyPath: paths[0] });
    }
    const collId = s.length === 3 ? (req.json() as { id: string }).id : s[3]!;
    const co = d.containers.get(collId);
    if (!co) return notFound();
    const collBody = () => ({
      ...sys(collId, co.rid, `dbs/${d.rid}/colls/${co.rid}/`, co.ts),
      partitionKey: { paths: [co.pkPath], kind: 'Hash', version: 2 },
      indexingPolicy: {
        indexingMode: 'consistent',
        automatic: true,
        includedPaths: [{ path: '/*' }],
        excludedPaths: [{ path: '/"_etag"/?' }],
      },
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
        {
          _rid: co.rid,
          PartitionKeyRanges: [
            {
              id: '0',
              _rid: co.rid,
              minInclusive: '',
              maxExclusive: 'FF',
              ridPrefix: 0,
              throughputFraction: 1,
              status: 'online',
              parents: [],
            },
          ],
          _count: 1,
        },
        { etag },
      );
    }
    return notFound();
  };

  return { top, database, collections };
}
