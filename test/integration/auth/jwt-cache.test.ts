import { startEntra, type EntraEmulator } from '../../../local/emulators/entra';
import { TokenValidator } from '../../../shared/auth/jwt';

const TID = '72f988bf-0000-4000-8000-00000000c0de';
const AUD = ['api://orders-api'];
let entra: EntraEmulator;
let now = Date.now();
/**
 * With a JWKS cache age of 0 the key set is fetched again for every signature check, so the Entra emulator's
 * JWKS call count is an observable count of full verifications (a cache hit makes none).
 */
const validator = () =>
  new TokenValidator({
    authorityHost: entra.url,
    allowedTenants: [TID],
    clockSkewSeconds: 60,
    maxTokenBytes: 16384,
    jwksCooldownSeconds: 0,
    jwksCacheMaxAgeSeconds: 0,
    timeoutMs: 2000,
    now: () => now,
  });
const verifications = (since: number) => entra.count('jwks') - since;

beforeAll(async () => {
  entra = await startEntra({ tenants: [TID] });
});
afterAll(() => entra.close());

describe('verified-token cache', () => {
  test('a repeated token is served from the cache (no further JWKS work) until it expires', async () => {
    now = Date.now();
    const v = validator();
    const token = await entra.mint({ aud: AUD[0], expiresIn: 120 });
    const before = entra.count('jwks');
    const first = await v.validate(token, AUD);
    expect(verifications(before)).toBe(1);
    const afterFirst = entra.count('jwks');
    expect(await v.validate(token, AUD)).toBe(first); // the very principal of the first check
    expect(await v.validate(token, AUD)).toBe(first);
    expect(verifications(afterFirst)).toBe(0);

    now += 185_000; // past exp (120 s) + skew (60 s)
    await expect(v.validate(token, AUD)).rejects.toMatchObject({ code: 'token_expired' });
    expect(verifications(afterFirst)).toBe(1); // the full check ran again, and refused it
    await expect(v.validate(token, AUD)).rejects.toMatchObject({ code: 'token_expired' }); // a refusal is never cached as a grant
  });

  test('verifiedPrincipal answers only what a verification still holds: same text, same audiences, before expiry', async () => {
    now = Date.now();
    const v = validator();
    const token = await entra.mint({ aud: AUD[0], expiresIn: 120 });
    expect(v.verifiedPrincipal(token, AUD)).toBeUndefined(); // never verified: the caller must validate
    const p = await v.validate(token, AUD);
    expect(v.verifiedPrincipal(token, AUD)).toBe(p);
    expect(v.verifiedPrincipal(token, ['api://other'])).toBeUndefined();
    expect(v.verifiedPrincipal(`${token.slice(0, 40)}x${token.slice(41)}`, AUD)).toBeUndefined(); // same tail, other text
    expect(v.verifiedPrincipal(undefined, AUD)).toBeUndefined();
    now += 185_000; // past exp + skew
    expect(v.verifiedPrincipal(token, AUD)).toBeUndefined();
    await expect(v.validate(token, AUD)).rejects.toMatchObject({ code: 'token_expired' });
  });

  test('the cache is per audience set: a subject token is not accepted as a client token', async () => {
    now = Date.now();
    const v = validator();
    const token = await entra.mint({ aud: AUD[0] });
    await v.validate(token, AUD);
    const before = entra.count('jwks');
    await expect(v.validate(token, ['api://token-broker'])).rejects.toMatchObject({ code: 'token_audience_not_allowed' });
    expect(verifications(before)).toBe(1); // checked in full for the other audience set, not served from the cache
  });

  test('entries are fully re-verified after at most five minutes', async () => {
    now = Date.now();
    const v = validator();
    const token = await entra.mint({ aud: AUD[0], expiresIn: 3600 });
    const first = await v.validate(token, AUD);
    const before = entra.count('jwks');
    now += 4 * 60_000;
    expect(await v.validate(token, AUD)).toBe(first);
    expect(verifications(before)).toBe(0);
    now += 60_000 + 1000;
    const again = await v.validate(token, AUD);
    expect(verifications(before)).toBe(1);
    expect(again).not.toBe(first); // a fresh verification, same identity
    expect(again).toEqual(first);
  });

  test("a token is served from the cache only for its exact text: one sharing the cached token's tail is checked in full", async () => {
    now = Date.now();
    const v = validator();
    const token = await entra.mint({ aud: AUD[0], expiresIn: 3600 });
    const first = await v.validate(token, AUD);
    // The same signature and tail, another payload: the look-up slot is the cached token's, the text is not.
    const [header, payload, signature] = token.split('.') as [string, string, string];
    const claims = JSON.parse(Buffer.from(payload, 'base64url').toString('utf8')) as Record<string, unknown>;
    const forged = `${header}.${Buffer.from(JSON.stringify({ ...claims, oid: 'f0f0f0f0-0000-4000-8000-000000000bad' })).toString('base64url')}.${signature}`;
    expect(forged.slice(-TokenValidator.VERIFIED_KEY_CHARS)).toBe(token.slice(-TokenValidator.VERIFIED_KEY_CHARS));
    const before = entra.count('jwks');
    await expect(v.validate(forged, AUD)).rejects.toMatchObject({ code: 'token_signature_invalid' });
    expect(verifications(before)).toBe(1); // checked in full, and refused
    expect(await v.validate(token, AUD)).toBe(first); // the refused look-alike did not displace the cached token
    expect(verifications(before)).toBe(1);
  });
});
