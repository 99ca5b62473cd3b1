import { createHmac } from 'node:crypto';
import { request } from 'node:https';
import { CosmosClient, type ErrorResponse } from '@azure/cosmos';
import { Agent } from 'node:https';
import { startCosmos, type CosmosEmulator } from '../../../local/emulators/cosmos';
import { createCa, type SandboxCa } from '../../../local/pki';

/**
 * The Cosmos emulator is as strict as the service where the broker's correctness depends on it:
 * master-key signatures and dates, resource-token scope and expiry, expiry limits, id rules.
 */

let ca: SandboxCa;
let emu: CosmosEmulator;
let agent: Agent;

beforeAll(async () => {
  ca = createCa('cosmos emulator test CA');
  emu = await startCosmos({ account: 'acct', ca, containers: [{ database: 'db', id: 'c', partitionKeyPath: '/pk' }] });
  agent = new Agent({ ca: ca.certPem });
});

afterAll(async () => {
  agent.destroy();
  await emu.close();
});

interface Raw {
  status: number;
  body: { code?: string; message?: string; _token?: string } & Record<string, unknown>;
  headers: Record<string, string | string[] | undefined>;
}

function raw(method: string, path: string, headers: Record<string, string>, body?: unknown): Promise<Raw> {
  return new Promise((resolve, reject) => {
    const req = request(
      `${emu.endpoint.replace(/\/$/, '')}${path}`,
      { method, headers: { 'content-type': 'application/json', ...headers }, agent },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          resolve({ status: res.statusCode ?? 0, headers: res.headers, body: text ? (JSON.parse(text) as Raw['body']) : {} });
        });
      },
    );
    req.on('error', reject);
    if (body !== undefined) req.write(JSON.stringify(body));
    req.end();
  });
}

/** The master-key authorization header, computed as the REST reference describes. */
function masterAuth(verb: string, resourceType: string, resourceLink: string, date: string, key = emu.masterKey): string {
  const text = `${verb.toLowerCase()}\n${resourceType.toLowerCase()}\n${resourceLink}\n${date.toLowerCase()}\n\n`;
  const sig = createHmac('sha256', Buffer.from(key, 'base64')).update(text).digest('base64');
  return encodeURIComponent(`type=master&ver=1.0&sig=${sig}`);
}

function signed(verb: string, type: string, link: string, extra: Record<string, string> = {}, date = new Date().toUTCString()) {
  return { authorization: masterAuth(verb, type, link, date), 'x-ms-date': date, 'x-ms-version': '2020-07-15', ...extra };
}

describe('master key authorization', () => {
  test('a correctly signed request is served; the resource link and type are part of the signature', async () => {
    const ok = await raw('GET', '/dbs/db/colls/c', signed('GET', 'colls', 'dbs/db/colls/c'));
    expect(ok.status).toBe(200);
    expect(ok.body.partitionKey).toEqual({ paths: ['/pk'], kind: 'Hash', version: 2 });
    const wrongLink = await raw('GET', '/dbs/db/colls/c', signed('GET', 'colls', 'dbs/db/colls/other'));
    expect(wrongLink.status).toBe(401);
    expect(wrongLink.body.code).toBe('Unauthorized');
    expect(wrongLink.headers['x-ms-activity-id']).toBeDefined();
    const wrongVerb = await raw('GET', '/dbs/db/colls/c', signed('POST', 'colls', 'dbs/db/colls/c'));
    expect(wrongVerb.status).toBe(401);
  });

  test('a wrong key, a missing header, a missing or stale x-ms-date are refused', async () => {
    const date = new Date().toUTCString();
    const other = Buffer.alloc(64, 1).toString('base64');
    expect(
      (await raw('GET', '/dbs/db', { authorization: masterAuth('GET', 'dbs', 'dbs/db', date, other), 'x-ms-date': date })).status,
    ).toBe(401);
    expect((await raw('GET', '/dbs/db', { 'x-ms-date': date })).status).toBe(401);
    expect((await raw('GET', '/dbs/db', { authorization: masterAuth('GET', 'dbs', 'dbs/db', date) })).status).toBe(401);
    const stale = new Date(Date.now() - 16 * 60 * 1000).toUTCString();
    const r = await raw('GET', '/dbs/db', signed('GET', 'dbs', 'dbs/db', {}, stale));
    expect(r.status).toBe(403);
    expect(r.body.message).toContain('not valid at the current time');
    expect((await raw('GET', '/dbs/db', { authorization: 'type=master&ver=1.0&sig=garbage', 'x-ms-date': date })).status).toBe(
      401,
    );
  });

  test('regenerating the key voids the old key and every resource token signed with it', async () => {
    await raw('POST', '/dbs/db/users', signed('POST', 'users', 'dbs/db'), { id: 'rk' });
    const perm = await raw('POST', '/dbs/db/users/rk/permissions', signed('POST', 'permissions', 'dbs/db/users/rk'), {
      id: 'p',
      permissionMode: 'Read',
      resource: 'dbs/db/colls/c',
    });
    expect(perm.status).toBe(201);
    const token = perm.body._token!;
    expect((await raw('GET', '/dbs/db/colls/c', { authorization: encodeURIComponent(token) })).status).toBe(200);
    const oldKey = emu.masterKey;
    emu.regenerateKey();
    const date = new Date().toUTCString();
    expect(
      (await raw('GET', '/dbs/db', { authorization: masterAuth('GET', 'dbs', 'dbs/db', date, oldKey), 'x-ms-date': date }))
        .status,
    ).toBe(401);
    expect((await raw('GET', '/dbs/db/colls/c', { authorization: encodeURIComponent(token) })).status).toBe(401);
  });
});

describe('users and permissions', () => {
  test('expiry seconds outside 10-18000, bad ids and bad modes are 400; a missing container is 404', async () => {
    await raw('POST', '/dbs/db/users', signed('POST', 'users', 'dbs/db'), { id: 'u' });
    const post = (body: unknown, expiry?: string) =>
      raw(
        'POST',
        '/dbs/db/users/u/permissions',
        signed('POST', 'permissions', 'dbs/db/users/u', expiry ? { 'x-ms-documentdb-expiry-seconds': expiry } : {}),
        body,
      );
    const good = { id: 'p1', permissionMode: 'All', resource: 'dbs/db/colls/c', resourcePartitionKey: ['a'] };
    expect((await post(good, '9')).status).toBe(400);
    expect((await post(good, '18001')).status).toBe(400);
    expect((await post(good, '10')).status).toBe(201);
    expect((await post(good, '600')).status).toBe(409); // exists, and this was not an upsert
    // one permission per (user, resource): another id on the same container is 409 too, whatever mode or partition
    expect((await post({ ...good, id: 'p9', permissionMode: 'Read', resourcePartitionKey: ['b'] })).status).toBe(409);
    expect((await post({ ...good, id: 'a/b' })).status).toBe(400);
    expect((await post({ ...good, id: 'p2', permissionMode: 'Write' })).status).toBe(400);
    expect((await post({ ...good, id: 'p3', resource: 'dbs/db/colls/missing' })).status).toBe(404);
    expect((await raw('POST', '/dbs/db/users', signed('POST', 'users', 'dbs/db'), { id: 'x?y' })).status).toBe(400);
    expect((await raw('POST', '/dbs/nodb/users', signed('POST', 'users', 'dbs/nodb'), { id: 'u' })).status).toBe(404);
  });

  test('a resource token cannot manage users or permissions, nor reach another container', async () => {
    await raw('POST', '/dbs/db/users', signed('POST', 'users', 'dbs/db', { 'x-ms-documentdb-is-upsert': 'True' }), { id: 'u2' });
    const perm = await raw(
      'POST',
      '/dbs/db/users/u2/permissions',
      signed('POST', 'permissions', 'dbs/db/users/u2', { 'x-ms-documentdb-is-upsert': 'True' }),
      { id: 'pall', permissionMode: 'All', resource: 'dbs/db/colls/c' },
    );
    const auth = { authorization: encodeURIComponent(perm.body._token!) };
    expect((await raw('POST', '/dbs/db/users', auth, { id: 'evil' })).status).toBe(403);
    expect((await raw('GET', '/dbs/db/users/u2/permissions/pall', auth)).status).toBe(403);
    emu.createContainer({ database: 'db', id: 'c2', partitionKeyPath: '/pk' });
    expect((await raw('GET', '/dbs/db/colls/c2', auth)).status).toBe(403);
    expect(
      (await raw('POST', '/dbs/db/colls/c2/docs', { ...auth, 'x-ms-documentdb-partitionkey': '["a"]' }, { id: 'd', pk: 'a' }))
        .status,
    ).toBe(403);
    // a tampered token (payload widened) fails its signature
    const [sig, payload] = decodeURIComponent(auth.authorization).split(';');
    const claims = JSON.parse(Buffer.from(payload!, 'base64').toString('utf8')) as Record<string, unknown>;
    const widened = Buffer.from(JSON.stringify({ ...claims, res: 'dbs/db/colls/c2' })).toString('base64');
    expect((await raw('GET', '/dbs/db/colls/c2', { authorization: encodeURIComponent(`${sig};${widened}`) })).status).toBe(401);
  });
});

describe('documents with a resource token', () => {
  async function tokenFor(mode: 'Read' | 'All', pk: string | undefined, expiry = '600'): Promise<string> {
    // one permission per (user, resource): one user per token shape
    const id = `t-${mode}-${pk ?? 'all'}-${expiry}`;
    await raw('POST', '/dbs/db/users', signed('POST', 'users', 'dbs/db', { 'x-ms-documentdb-is-upsert': 'True' }), { id });
    const perm = await raw(
      'POST',
      `/dbs/db/users/${id}/permissions`,
      signed('POST', 'permissions', `dbs/db/users/${id}`, {
        'x-ms-documentdb-is-upsert': 'True',
        'x-ms-documentdb-expiry-seconds': expiry,
      }),
      { id, permissionMode: mode, resource: 'dbs/db/colls/c', ...(pk ? { resourcePartitionKey: [pk] } : {}) },
    );
    expect(perm.status === 200 || perm.status === 201).toBe(true);
    return perm.body._token!;
  }
  const sdk = (token: string) =>
    new CosmosClient({ endpoint: emu.endpoint, resourceTokens: { 'dbs/db/colls/c': token }, agent })
      .database('db')
      .container('c');
  const code = async (p: Promise<unknown>) =>
    p.then(
      () => 200,
      (e: ErrorResponse) => e.code,
    );

  test('a partition token works in its partition only; a container token in all of them', async () => {
    await raw('POST', '/dbs/db/users', signed('POST', 'users', 'dbs/db', { 'x-ms-documentdb-is-upsert': 'True' }), { id: 'u' });
    const a = sdk(await tokenFor('All', 'a'));
    expect((await a.items.create({ id: '1', pk: 'a' })).statusCode).toBe(201);
    expect(await code(a.items.create({ id: '1', pk: 'b' }))).toBe(403);
    expect(await code(a.items.query('SELECT * FROM c').fetchAll())).toBe(403); // cross-partition
    const whole = sdk(await tokenFor('All', undefined));
    expect((await whole.items.create({ id: '2', pk: 'b' })).statusCode).toBe(201);
    expect((await whole.item('1', 'a').read()).statusCode).toBe(200);
    // the partition key of the body must match the header
    const mismatch = await raw(
      'POST',
      '/dbs/db/colls/c/docs',
      { authorization: encodeURIComponent(await tokenFor('All', 'a')), 'x-ms-documentdb-partitionkey': '["a"]' },
      { id: '3', pk: 'z' },
    );
    expect(mismatch.status).toBe(400);
  });

  test('SELECT TOP n and TOP @param (parameterized TOP); a TOP parameter that is not a non-negative integer is 400', async () => {
    const whole = sdk(await tokenFor('All', undefined));
    await whole.items.upsert({ id: 't1', pk: 't' });
    await whole.items.upsert({ id: 't2', pk: 't' });
    expect((await whole.items.query('SELECT * FROM c', { partitionKey: 't' }).fetchAll()).resources).toHaveLength(2);
    expect((await whole.items.query('SELECT TOP 1 * FROM c', { partitionKey: 't' }).fetchAll()).resources).toHaveLength(1);
    const top = (value: unknown) =>
      whole.items.query(
        { query: 'SELECT TOP @n * FROM c', parameters: [{ name: '@n', value: value as number }] },
        { partitionKey: 't' },
      );
    expect((await top(1).fetchAll()).resources).toHaveLength(1);
    expect((await top(5).fetchAll()).resources).toHaveLength(2);
    expect(await code(top(-1).fetchAll())).toBe(400);
    expect(await code(top('1').fetchAll())).toBe(400);
  });

  test('a read token reads and queries but never writes', async () => {
    const r = sdk(await tokenFor('Read', 'a'));
    expect((await r.item('1', 'a').read()).statusCode).toBe(200);
    expect((await r.items.query('SELECT * FROM c', { partitionKey: 'a' }).fetchAll()).resources).toHaveLength(1);
    expect(await code(r.items.upsert({ id: '1', pk: 'a' }))).toBe(403);
    expect(await code(r.item('1', 'a').delete())).toBe(403);
    // reads outside its partition are refused too: a point read and a query of another partition (2 exists in b)
    expect(await code(r.item('2', 'b').read())).toBe(403);
    expect(await code(r.items.query('SELECT * FROM c', { partitionKey: 'b' }).fetchAll())).toBe(403);
  });

  test('an expired token is refused; deleting its permission does not revoke it (as on the service)', async () => {
    const token = await tokenFor('All', 'a', '600');
    await raw(
      'DELETE',
      '/dbs/db/users/t-All-a-600/permissions/t-All-a-600',
      signed('DELETE', 'permissions', 'dbs/db/users/t-All-a-600/permissions/t-All-a-600'),
    );
    expect((await sdk(token).item('1', 'a').read()).statusCode).toBe(200);
    const real = emu.clock.now;
    emu.clock.now = () => real() + 600_000;
    try {
      expect(await code(sdk(token).item('1', 'a').read())).toBe(403);
    } finally {
      emu.clock.now = real;
    }
  });
});
