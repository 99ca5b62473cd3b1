import { timingSafeEqual } from 'node:crypto';
import type { EmuRequest, EmuResponse } from '../harness';
import { ALLOWED_SKEW_MS, type Classified, type CosmosContext, type ResourceTokenPayload } from './context';
import { CosmosRbac, requiredAction } from './rbac';

/**
 * Who is calling: a master key (either of the two), a resource token, or an Entra ID token (data-plane RBAC, see
 * ./rbac.ts); and what a resource token or an Entra principal may do with this request.
 */

export type Auth =
  | { kind: 'master'; key: 'primary' | 'secondary' }
  | { kind: 'resource'; token: ResourceTokenPayload }
  | { kind: 'aad'; oid: string };

export function createAuth(ctx: CosmosContext) {
  const { opts, clock, keys, err, unauthorized, forbidden, sign, isQueryRequest, parsePk, isUpsert } = ctx;
  const rbac = new CosmosRbac(opts.account, opts.entra, () => clock.now());
  const localAuthDisabled = () => unauthorized('Local Authorization is disabled. Use an AAD token to authorize all requests.');

  const authenticate = async (req: EmuRequest, c: Classified): Promise<Auth | EmuResponse> => {
    const raw = req.header('authorization');
    if (!raw) return unauthorized('Required Header authorization is missing. Ensure a valid Authorization token is passed.');
    let decoded: string;
    try {
      decoded = decodeURIComponent(raw);
    } catch {
      return unauthorized(
        "The input authorization token can't serve the request. The wrong key is being used or the expected payload is not built as per the protocol.",
      );
    }
    const m = /^type=(master|resource|aad)&ver=1\.0&sig=(.+)$/.exec(decoded);
    if (!m)
      return unauthorized(
        "The input authorization token can't serve the request. The wrong key is being used or the expected payload is not built as per the protocol.",
      );
    if (m[1] === 'aad') {
      const v = await rbac.verify(m[2]!);
      if (!v.ok) return err(401, 'Unauthorized', v.message);
      return { kind: 'aad', oid: v.principal.oid };
    }
    if (opts.disableLocalAuth) return localAuthDisabled();
    if (m[1] === 'master') {
      const date = req.header('x-ms-date') ?? req.header('date');
      if (!date)
        return unauthorized("The input authorization token can't serve the request. Required header x-ms-date is missing.");
      const t = Date.parse(date);
      if (Number.isNaN(t))
        return unauthorized(
          "Date header doesn't conform to the required format. Please ensure that the time is provided in GMT and conforms to RFC 1123 date-time specifications.",
        );
      // The date is the token's start and start + 15 min its expiry: a date in the future is refused as well as one
      // older than 15 minutes (clients 7-8 min ahead were refused: Azure/azure-cosmos-dotnet-v2 #512, #506,
      // microsoft/vscode-cosmosdb #842, #1425). How far ahead the service tolerates is unknown: none here (stricter).
      const now = clock.now();
      if (t > now || now - t > ALLOWED_SKEW_MS) {
        return err(
          403,
          'Forbidden',
          `The authorization token is not valid at the current time. Please create another token and retry (token start time: ${new Date(t).toUTCString()}, token expiry time: ${new Date(t + ALLOWED_SKEW_MS).toUTCString()}, current server time: ${new Date(now).toUTCString()}).`,
        );
      }
      const text = `${req.method.toLowerCase()}\n${c.resourceType.toLowerCase()}\n${c.resourceLink}\n${date.toLowerCase()}\n\n`;
      let given: Buffer;
      try {
        given = Buffer.from(m[2]!, 'base64');
      } catch {
        given = Buffer.alloc(0);
      }
      const matches = (k: 'primary' | 'secondary') => {
        const expected = sign(keys[k], text);
        return given.length === expected.length && timingSafeEqual(given, expected);
      };
      const key = matches('primary') ? 'primary' : matches('secondary') ? 'secondary' : undefined;
      if (!key) {
        return unauthorized(
          `The input authorization token can't serve the request. The wrong key is being used or the expected payload is not built as per the protocol. Server used the following payload to sign: '${text.replace(/\n/g, '\\n')}'`,
        );
      }
      return { kind: 'master', key };
    }
    const [sig, payload] = m[2]!.split(';');
    if (!sig || !payload)
      return unauthorized(
        "The input authorization token can't serve the request. The wrong key is being used or the expected payload is not built as per the protocol.",
      );
    let token: ResourceTokenPayload;
    try {
      token = JSON.parse(Buffer.from(payload, 'base64').toString('utf8')) as ResourceTokenPayload;
    } catch {
      return unauthorized("The input authorization token can't serve the request.");
    }
    if (token.key !== 'primary' && token.key !== 'secondary')
      return unauthorized("The input authorization token can't serve the request.");
    const expected = sign(keys[token.key], payload);
    const given = Buffer.from(sig, 'base64');
    if (given.length !== expected.length || !timingSafeEqual(given, expected)) {
      return unauthorized(
        "The input authorization token can't serve the request. The wrong key is being used or the expected payload is not built as per the protocol.",
      );
    }
    if (clock.now() >= token.exp * 1000) {
      return err(
        403,
        'Forbidden',
        `The authorization token is not valid at the current time. Please create another token and retry (token expiry time: ${new Date(token.exp * 1000).toUTCString()}, current server time: ${new Date(clock.now()).toUTCString()}).`,
      );
    }
    return { kind: 'resource', token };
  };

  /** What a resource token may do: the account read, its container's metadata, and documents in its partition. */
  const authorizeResource = (req: EmuRequest, c: Classified, t: ResourceTokenPayload): EmuResponse | undefined => {
    if (c.segments.length === 0) return req.method === 'GET' ? undefined : forbidden();
    const path = c.segments.join('/');
    const within = path === t.res || path.startsWith(`${t.res}/`);
    if (!within) return forbidden();
    const rest = path.slice(t.res.length).split('/').filter(Boolean);
    if (rest.length === 0 || rest[0] === 'pkranges') return req.method === 'GET' ? undefined : forbidden();
    if (rest[0] !== 'docs') return forbidden();
    const isQuery = req.method === 'POST' && rest.length === 1 && isQueryRequest(req);
    const isRead = req.method === 'GET' || isQuery;
    if (!isRead && t.mode !== 'All') return forbidden();
    const isPlan = (req.header('x-ms-cosmos-is-query-plan-request') ?? '').toLowerCase() === 'true';
    if (t.pk && !isPlan) {
      const header = req.header('x-ms-documentdb-partitionkey');
      if (!header) return forbidden(); // cross-partition: the token names one partition
      if (JSON.stringify(parsePk(header)) !== JSON.stringify(t.pk)) return forbidden();
    }
    return undefined;
  };

  /** undefined when the Entra principal's role assignments allow the request, else the 403 (substatus 5300). */
  const authorizeAad = (req: EmuRequest, c: Classified, oid: string): EmuResponse | undefined => {
    const changeFeed = (req.header('a-im') ?? '').toLowerCase() === 'incremental feed';
    const need = requiredAction(req.method, c.segments, isQueryRequest(req), isUpsert(req), changeFeed);
    const denied = rbac.authorize({ oid }, need, `${req.method} ${req.path}`);
    return denied ? err(403, 'Forbidden', denied, { 'x-ms-substatus': '5300' }) : undefined;
  };

  return { rbac, authenticate, authorizeResource, authorizeAad };
}
