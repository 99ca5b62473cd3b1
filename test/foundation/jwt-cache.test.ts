import { startEntra, type EntraEmulator } from '../../local/emulators/entra';
import { TokenValidator } from '../../shared/auth/jwt';

const TID = '72f988bf-0000-4000-8000-00000000c0de';
const AUD = ['api://orders-api'];
let entra: EntraEmulator;
let now = Date.now();
const validator = () =>
  new TokenValidator({
    authorityHost: entra.url,
    allowedTenants: [TID],
    clockSkewSeconds: 60,
    maxTokenBytes: 16384,
    jwksCooldownSeconds: 0,
    jwksCacheMaxAgeSeconds: 3600,
    timeoutMs: 2000,
    now: () => now,
  });

beforeAll(async () => {
  entra = await startEntra({ tenants: [TID] });
});
afterAll(() => entra.close());

describe('verified-token cache', () => {
  test('a repeated token is served from the cache (no further JWKS work) until it expires', async () => {
    now = Date.now();
    const v = validator();
    const token = await entra.mint({ aud: AUD[0], expiresIn: 120 });
    const first = await v.validate(token, AUD);
    const jwksCalls = entra.count('jwks');
    const spy = jest.spyOn(v as unknown as { verify: () => Promise<unknown> }, 'verify');
    expect(await v.validate(token, AUD)).toBe(first);
    expect(spy).not.toHaveBeenCalled();
    expect(entra.count('jwks')).toBe(jwksCalls);

    now += 185_000; // past exp (120 s) + skew (60 s)
    await expect(v.validate(token, AUD)).rejects.toMatchObject({ code: 'token_expired' });
    expect(spy).toHaveBeenCalledTimes(1);
  });

  test('the cache is per audience set: a subject token is not accepted as a client token', async () => {
    now = Date.now();
    const v = validator();
    const token = await entra.mint({ aud: AUD[0] });
    await v.validate(token, AUD);
    await expect(v.validate(token, ['api://token-broker'])).rejects.toMatchObject({ code: 'token_audience_not_allowed' });
  });

  test('entries are fully re-verified after at most five minutes', async () => {
    now = Date.now();
    const v = validator();
    const token = await entra.mint({ aud: AUD[0], expiresIn: 3600 });
    await v.validate(token, AUD);
    const spy = jest.spyOn(v as unknown as { verify: () => Promise<unknown> }, 'verify');
    now += 4 * 60_000;
    await v.validate(token, AUD);
    expect(spy).not.toHaveBeenCalled();
    now += 60_000 + 1000;
    await v.validate(token, AUD);
    expect(spy).toHaveBeenCalledTimes(1);
  });
});
