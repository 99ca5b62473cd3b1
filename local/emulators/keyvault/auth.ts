import { createLocalJWKSet, jwtVerify, type JWTPayload } from 'jose';
import type { EmuRequest, EmuResponse } from '../harness';
import type { EntraEmulator } from '../entra';
import { API_VERSION, KEY_VAULT_RESOURCE, SECRET_NAME, kvError, type KeyVaultContext } from './context';

/** Bearer tokens verified as Entra JWTs (signature, tenant issuer, audience, oid), api-version, and the two RBAC roles. */
export function createAuth(ctx: KeyVaultContext, entra: EntraEmulator) {
  const { tenantId, access } = ctx;

  const challenge = `Bearer authorization="https://login.microsoftonline.com/${tenantId}", resource="${KEY_VAULT_RESOURCE}"`;
  const unauthorized = (message: string): EmuResponse =>
    kvError(401, 'Unauthorized', message, undefined, { 'www-authenticate': challenge });

  const verify = async (req: EmuRequest): Promise<{ oid: string } | EmuResponse> => {
    const auth = req.header('authorization');
    if (!auth || !/^Bearer\s+\S+$/i.test(auth)) return unauthorized('AKV10000: Request is missing a Bearer or PoP token.');
    const token = auth.replace(/^Bearer\s+/i, '');
    let payload: JWTPayload;
    try {
      const jwks = createLocalJWKSet({ keys: entra.keys.map((k) => k.publicJwk) });
      ({ payload } = await jwtVerify(token, jwks, { algorithms: ['RS256'], clockTolerance: 300 }));
    } catch {
      return unauthorized('AKV10032: Invalid issuer or signature.');
    }
    const tid = typeof payload.tid === 'string' ? payload.tid.toLowerCase() : '';
    const issuers = [`https://sts.windows.net/${tid}/`, `https://login.microsoftonline.com/${tid}/v2.0`];
    if (tid !== tenantId || !issuers.includes(String(payload.iss)))
      return unauthorized(`AKV10032: Invalid issuer. Expected one of https://sts.windows.net/${tenantId}/.`);
    const aud = Array.isArray(payload.aud) ? payload.aud : [payload.aud];
    if (!aud.some((a) => a === KEY_VAULT_RESOURCE || a === `${KEY_VAULT_RESOURCE}/`)) {
      return unauthorized(`AKV10022: Invalid audience. Expected ${KEY_VAULT_RESOURCE}.`);
    }
    const oid = typeof payload.oid === 'string' ? payload.oid : undefined;
    if (!oid) return unauthorized('AKV10022: Token has no oid claim.');
    return { oid };
  };

  /** Auth + api-version + RBAC, then the operation. */
  const op =
    (need: 'read' | 'write', fn: (req: EmuRequest) => EmuResponse | Promise<EmuResponse>) =>
    async (req: EmuRequest): Promise<EmuResponse> => {
      const who = await verify(req);
      if ('status' in who) return who;
      const apiVersion = req.url.searchParams.get('api-version');
      if (!apiVersion) return kvError(400, 'BadParameter', 'The request URI must contain an api-version parameter.');
      if (!API_VERSION.test(apiVersion))
        return kvError(
          400,
          'BadParameter',
          `The specified version (${apiVersion}) is not recognized. Consider using the latest supported version (7.6).`,
        );
      const role = access.get(who.oid);
      if (!role || (need === 'write' && role !== 'officer')) {
        return kvError(
          403,
          'Forbidden',
          `Caller is not authorized to perform action on resource.\r\nIf role assignments, deny assignments or role definitions were changed recently, please observe propagation time.\r\nCaller: appid=;oid=${who.oid}\r\nAction: 'Microsoft.KeyVault/vaults/secrets/${need === 'write' ? 'setSecret' : 'getSecret'}/action'`,
          'ForbiddenByRbac',
        );
      }
      const name = req.params.name;
      if (name !== undefined && !SECRET_NAME.test(name)) {
        return kvError(
          400,
          'BadParameter',
          'The request URI contains an invalid name: secret names may contain only 0-9, a-z, A-Z, and -.',
        );
      }
      return fn(req);
    };

  return { op };
}

export type Operation = ReturnType<typeof createAuth>['op'];
