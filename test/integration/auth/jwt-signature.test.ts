import { pbkdf2, sign } from 'node:crypto';
import { startEntra, type EntraEmulator } from '../../../local/emulators/entra';
import { TokenValidator } from '../../../shared/auth/jwt';

const TID = '72f988bf-0000-4000-8000-00000000c0de';
const AUD = ['api://orders-api'];
let entra: EntraEmulator;

const validator = () =>
  new TokenValidator({
    authorityHost: entra.url,
    allowedTenants: [TID],
    clockSkewSeconds: 60,
    maxTokenBytes: 16384,
    jwksCooldownSeconds: 30,
    jwksCacheMaxAgeSeconds: 600,
    timeoutMs: 2000,
  });

/** A token signed with the tenant's current key, with the given header (the payload of a minted token). */
async function signedWith(header: Record<string, unknown>): Promise<string> {
  const payload = (await entra.mint({ aud: AUD[0] })).split('.')[1]!;
  const h = Buffer.from(JSON.stringify({ alg: 'RS256', typ: 'JWT', kid: entra.currentKey.kid, ...header })).toString('base64url');
  const sig = sign('sha256', Buffer.from(`${h}.${payload}`), entra.currentKey.privateKey).toString('base64url');
  return `${h}.${payload}.${sig}`;
}

beforeAll(async () => {
  entra = await startEntra({ tenants: [TID] });
});
afterAll(() => entra.close());

describe('RS256 signature check', () => {
  test('runs on the calling thread: a new token is verified while the libuv thread pool is busy', async () => {
    const v = validator();
    await v.validate(await entra.mint({ aud: AUD[0] }), AUD); // the tenant's key set fetched and cached
    const token = await entra.mint({ aud: AUD[0] });
    const order: string[] = [];
    // More slow jobs than the pool has threads: a check queued on the pool (crypto.verify's callback form, as jose's
    // jwtVerify does it) would finish after at least one of them.
    const jobs = 2 * Number(process.env.UV_THREADPOOL_SIZE ?? 4);
    const busy = Array.from(
      { length: jobs },
      () => new Promise<void>((resolve) => pbkdf2('x', 'salt', 100_000, 64, 'sha512', () => (order.push('pool'), resolve()))),
    );
    const principal = await v.validate(token, AUD);
    order.push('validated');
    await Promise.all(busy);
    expect(principal.tenantId).toBe(TID);
    expect(order[0]).toBe('validated');
  });

  test('a correctly signed token with a header extension (crit, b64) is refused', async () => {
    const v = validator();
    // The same construction without an extension is accepted: the refusal below is the header's, not the signing's.
    await expect(v.validate(await signedWith({}), AUD)).resolves.toMatchObject({ tenantId: TID });
    await expect(v.validate(await signedWith({ crit: ['b64'], b64: true }), AUD)).rejects.toMatchObject({
      code: 'token_malformed',
    });
    await expect(v.validate(await signedWith({ b64: true }), AUD)).rejects.toMatchObject({ code: 'token_malformed' });
    await expect(v.validate(await signedWith({ crit: ['exp'] }), AUD)).rejects.toMatchObject({ code: 'token_malformed' });
  });

  test('a token signed by the published key but altered after signing is refused', async () => {
    const v = validator();
    const [h, p, s] = (await signedWith({})).split('.') as [string, string, string];
    const claims = JSON.parse(Buffer.from(p, 'base64url').toString()) as Record<string, unknown>;
    const altered = Buffer.from(JSON.stringify({ ...claims, roles: ['Broker.Admin'] })).toString('base64url');
    await expect(v.validate(`${h}.${altered}.${s}`, AUD)).rejects.toMatchObject({ code: 'token_signature_invalid' });
  });
});
