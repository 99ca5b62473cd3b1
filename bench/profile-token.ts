import { HttpRequest, InvocationContext } from '@azure/functions';
import { handler } from '../functions/token';
import { SANDBOX } from '../local/ids';
import { startSandbox } from '../local/sandbox';

/**
 * In-process profile of the token cache-hit path (no HTTP), production defaults (LOG_LEVEL=info, log lines on
 * stdout; redirect it to a file): `node --cpu-prof dist/bench/profile-token.js [cloudsql|cosmos] > /tmp/log`.
 * Prints microseconds per call on stderr; the .cpuprofile shows where they go.
 */
async function main(): Promise<void> {
  const sb = await startSandbox({ env: { LOG_LEVEL: 'info' } });
  sb.applyEnv();
  const gateway = await sb.entra.mint({
    oid: SANDBOX.gatewayObjectId,
    appId: SANDBOX.gatewayAppId,
    aud: SANDBOX.clientAudience,
    version: '1.0',
    expiresIn: 7200,
  });
  const caller = await sb.entra.mint({
    oid: SANDBOX.readerObjectId,
    aud: SANDBOX.subjectAudience,
    roles: ['Orders.Read'],
    expiresIn: 7200,
  });
  const target =
    process.argv[2] === 'cosmos'
      ? `cosmos://${SANDBOX.cosmos.account}/${SANDBOX.cosmos.database}/${SANDBOX.cosmos.container}`
      : `cloudsql://${SANDBOX.google.project}/${SANDBOX.google.region}/${SANDBOX.google.instance}/${SANDBOX.google.database}`;
  const body = new URLSearchParams({
    grant_type: 'urn:ietf:params:oauth:grant-type:token-exchange',
    subject_token: caller,
    subject_token_type: 'urn:ietf:params:oauth:token-type:access_token',
    resource: target,
  }).toString();
  const call = async () => {
    const req = new HttpRequest({
      method: 'POST',
      url: 'http://127.0.0.1/api/token',
      headers: { authorization: `Bearer ${gateway}`, 'content-type': 'application/x-www-form-urlencoded' },
      body: { string: body },
    });
    const res = await handler(req, new InvocationContext({ invocationId: 'x', functionName: 'token' }));
    if ((res as { status?: number }).status !== 200) throw new Error(`status ${(res as { status?: number }).status}`);
  };
  for (let i = 0; i < 500; i++) await call();
  const n = Number(process.env.N ?? 20000);
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < n; i++) await call();
  const us = Number(process.hrtime.bigint() - t0) / 1000 / n;
  process.stderr.write(`${target}: ${us.toFixed(1)} µs per in-process call\n`);
  await sb.stop();
}

void main();
