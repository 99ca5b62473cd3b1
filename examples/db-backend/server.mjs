// A backend without Google credentials: it connects to Cloud SQL with plain `pg` over TLS, the broker's
// token as the password, using only the broker's /api/token answer for a cloudsql:// resource, which APIM
// forwards per request in `X-Db-Token` (base64url of the answer's JSON). APIM also forwards the caller's
// object id (from the caller's validated token) in `X-Caller-Oid`; the backend sets it transaction-locally
// so PostgreSQL's row-level security returns only the caller's rows.
//
//   PORT=8080 node examples/db-backend/server.mjs        (npm run example:db-backend)
//
// Only reachable from APIM in production: it trusts X-Caller-Oid because APIM sets it and strips any copy.
import { Buffer } from 'node:buffer';
import { createServer } from 'node:http';
import process from 'node:process';
import pg from 'pg';

const OID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

function answerOf(header) {
  if (!header || header.length > 16384) return undefined;
  try {
    const a = JSON.parse(Buffer.from(header, 'base64url').toString('utf8'));
    const ok =
      typeof a.access_token === 'string' &&
      typeof a.database_user === 'string' &&
      typeof a.database === 'string' &&
      typeof a.server_ca_cert === 'string' &&
      typeof a.server_cert_common_name === 'string' &&
      Array.isArray(a.ip_addresses) &&
      a.ip_addresses.length > 0;
    return ok ? a : undefined;
  } catch {
    return undefined;
  }
}

function send(res, status, body) {
  res.writeHead(status, { 'content-type': 'application/json', 'cache-control': 'no-store' });
  res.end(JSON.stringify(body));
}

async function tickets(answer, callerOid) {
  const primary = answer.ip_addresses.find((i) => i.type === 'PRIMARY') ?? answer.ip_addresses[0];
  const client = new pg.Client({
    // The instance's IP address (PRIMARY: public). `dns_name`, when the answer has one, names the instance for DNS-based
    // connections (private service connect, DNS names); it need not resolve where this backend runs.
    host: primary.ip_address,
    port: answer.port ?? 5432,
    user: answer.database_user,
    password: answer.access_token,
    database: answer.database,
    connectionTimeoutMillis: 5000,
    query_timeout: 5000,
    // verify-ca plus the instance's CN: Cloud SQL server certificates name PROJECT:INSTANCE, not the host.
    ssl: {
      ca: answer.server_ca_cert,
      checkServerIdentity: (_host, cert) =>
        cert.subject?.CN === answer.server_cert_common_name
          ? undefined
          : new Error('the server certificate is not the instance’s'),
    },
  });
  client.on('error', () => undefined);
  await client.connect();
  try {
    await client.query('BEGIN READ ONLY');
    await client.query("SELECT set_config('broker.caller_oid', $1, true)", [callerOid]);
    const r = await client.query('SELECT id, subject, status FROM support_tickets ORDER BY id');
    await client.query('COMMIT');
    return r.rows;
  } finally {
    await client.end().catch(() => undefined);
  }
}

const server = createServer((req, res) => {
  if (req.method !== 'GET' || req.url !== '/tickets') return send(res, 404, { error: 'not_found' });
  const answer = answerOf(req.headers['x-db-token']);
  const callerOid = String(req.headers['x-caller-oid'] ?? '').toLowerCase();
  if (!answer) return send(res, 400, { error: 'X-Db-Token must be the base64url JSON of the broker’s Cloud SQL answer' });
  if (!OID.test(callerOid)) return send(res, 400, { error: 'X-Caller-Oid must be the caller’s object id' });
  tickets(answer, callerOid).then(
    (rows) => send(res, 200, { rows }),
    (e) => {
      const code = typeof e?.code === 'string' ? e.code : '';
      // never echo the database's text (or the token)
      if (code === '28P01' || code === '28000')
        return send(res, 401, { error: 'the database refused the login (token expired or not for this user): fetch a new one' });
      return send(res, 503, { error: 'the database is unavailable' });
    },
  );
});

server.listen(Number(process.env.PORT ?? 8080), process.env.HOST ?? '127.0.0.1', () => {
  const a = server.address();
  process.stdout.write(`db-backend listening on http://${a.address}:${a.port}/tickets\n`);
});
process.on('SIGTERM', () => server.close(() => process.exit(0)));
process.on('SIGINT', () => server.close(() => process.exit(0)));
