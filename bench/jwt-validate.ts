import { startEntra } from '../local/emulators/entra';
import { SANDBOX } from '../local/ids';
import { TokenValidator } from '../shared/auth/jwt';

/** JWT validation alone, on one core: validations per second of one valid token with a warm JWKS. */
async function main(): Promise<void> {
  const entra = await startEntra({ tenants: [SANDBOX.tenantId] });
  const v = new TokenValidator({
    authorityHost: entra.url,
    allowedTenants: [SANDBOX.tenantId],
    clockSkewSeconds: 60,
    maxTokenBytes: 16384,
    jwksCooldownSeconds: 30,
    jwksCacheMaxAgeSeconds: 3600,
    timeoutMs: 5000,
  });
  const token = await entra.mint({ aud: SANDBOX.subjectAudience, roles: ['Orders.Read'] });
  await v.validate(token, [SANDBOX.subjectAudience]);
  const seconds = Number(process.env.BENCH_JWT_SECONDS ?? 3);
  const end = process.hrtime.bigint() + BigInt(seconds * 1e9);
  let n = 0;
  const start = process.hrtime.bigint();
  while (process.hrtime.bigint() < end) {
    for (let i = 0; i < 100; i++) await v.validate(token, [SANDBOX.subjectAudience]);
    n += 100;
  }
  const elapsed = Number(process.hrtime.bigint() - start) / 1e9;
  await entra.close();
  process.stdout.write(JSON.stringify({ perSecond: n / elapsed, n, seconds: elapsed }) + '\n');
}

void main();
