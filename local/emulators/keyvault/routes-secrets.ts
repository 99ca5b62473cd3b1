import { randomInt } from 'node:crypto';
import type { Route } from '../harness';
import type { Operation } from './auth';
import { CONTENT_TYPE_TOO_LONG, MAX_CONTENT_TYPE, kvError, type KeyVaultContext } from './context';

/** Secrets: set, list, list versions (paged), get (latest or by version), update properties. */
export function secretRoutes(ctx: KeyVaultContext, op: Operation): Route[] {
  const { secrets, nowS, addVersion, find, bundle, item, notFound, page } = ctx;

  const parseAttrs = (
    raw: unknown,
  ): { ok: true; enabled?: boolean; nbf?: number; exp?: number } | { ok: false; message: string } => {
    if (raw === undefined || raw === null) return { ok: true };
    if (typeof raw !== 'object') return { ok: false, message: 'Property attributes must be an object.' };
    const a = raw as Record<string, unknown>;
    const num = (k: string) => (a[k] === undefined || a[k] === null ? undefined : typeof a[k] === 'number' ? a[k] : NaN);
    const nbf = num('nbf');
    const exp = num('exp');
    if (Number.isNaN(nbf) || Number.isNaN(exp))
      return { ok: false, message: 'Property attributes.nbf/exp must be numbers (unix seconds).' };
    if (a.enabled !== undefined && typeof a.enabled !== 'boolean')
      return { ok: false, message: 'Property attributes.enabled must be a boolean.' };
    return { ok: true, enabled: a.enabled, nbf, exp };
  };
  const parseTags = (raw: unknown): Record<string, string> | undefined | false => {
    if (raw === undefined || raw === null) return undefined;
    if (typeof raw !== 'object' || Array.isArray(raw)) return false;
    const out: Record<string, string> = {};
    const entries = Object.entries(raw as Record<string, unknown>);
    if (entries.length > 15) return false;
    for (const [k, v] of entries) {
      if (typeof v !== 'string' || k.length > 512 || v.length > 256) return false;
      out[k] = v;
    }
    return out;
  };

  return [
    {
      method: 'PUT',
      path: '/secrets/:name',
      name: 'secrets.set',
      handle: op('write', (req) => {
        const body = req.json();
        if (!body || typeof body !== 'object') return kvError(400, 'BadParameter', 'The request body must be a JSON object.');
        const b = body as Record<string, unknown>;
        if (typeof b.value !== 'string') return kvError(400, 'BadParameter', 'Property value is required and must be a string.');
        if (Buffer.byteLength(b.value) > 25 * 1024) return kvError(400, 'BadParameter', 'Secret value exceeds the 25 KB limit.');
        if (b.contentType !== undefined && typeof b.contentType !== 'string')
          return kvError(400, 'BadParameter', 'Property contentType must be a string.');
        if (typeof b.contentType === 'string' && b.contentType.length > MAX_CONTENT_TYPE)
          return kvError(400, 'BadParameter', CONTENT_TYPE_TOO_LONG);
        const tags = parseTags(b.tags);
        if (tags === false) return kvError(400, 'BadParameter', 'Tags must be at most 15 string pairs.');
        const attrs = parseAttrs(b.attributes);
        if (!attrs.ok) return kvError(400, 'BadParameter', attrs.message);
        const v = addVersion(req.params.name!, b.value, {
          contentType: b.contentType,
          tags,
          enabled: attrs.enabled,
          nbf: attrs.nbf,
          exp: attrs.exp,
        });
        return { status: 200, body: bundle(v, true) };
      }),
    },
    {
      method: 'GET',
      path: '/secrets',
      name: 'secrets.list',
      handle: op('read', (req) => {
        const items = [...secrets.entries()]
          .filter(([, vs]) => vs.length > 0)
          .map(([n, vs]) => item(vs.at(-1)!, `${ctx.base}/secrets/${n}`));
        return { status: 200, body: page(req, items, '/secrets') };
      }),
    },
    {
      method: 'GET',
      path: '/secrets/:name/versions',
      name: 'secrets.versions',
      handle: op('read', (req) => {
        const name = req.params.name!;
        // A secret never created lists as 200 with no versions (not 404), and versions come in version-id order,
        // not creation order: Azure/azure-sdk-assets js/sdk/keyvault/keyvault-secrets/recordings/node/
        // secret_client__list_secrets_in_various_ways/recording_can_list_secret_versions_non_existing.json and
        // recording_can_retrieve_all_versions_of_a_secret_by_page.json. `versionOrder = 'shuffled'` (tests) lists
        // them in a random order, since the service guarantees none (Azure/azure-sdk-for-net #45792).
        const vs = [...(secrets.get(name) ?? [])];
        if (ctx.versionOrder() === 'shuffled') {
          for (let i = vs.length - 1; i > 0; i--) {
            const j = randomInt(i + 1);
            [vs[i], vs[j]] = [vs[j]!, vs[i]!];
          }
        } else vs.sort((a, b) => (a.version < b.version ? -1 : a.version > b.version ? 1 : 0));
        return {
          status: 200,
          body: page(
            req,
            vs.map((v) => item(v, `${ctx.base}/secrets/${v.name}/${v.version}`)),
            `/secrets/${name}/versions`,
          ),
        };
      }),
    },
    {
      method: 'GET',
      path: /^\/secrets\/(?<name>[^/]+)(?:\/(?<version>[^/]*))?$/,
      name: 'secrets.get',
      handle: op('read', (req) => {
        const name = req.params.name!;
        const version = req.params.version || undefined;
        const v = find(name, version);
        if (!v) return notFound(name, version);
        if (!v.enabled) return kvError(403, 'Forbidden', 'Operation get is not allowed on a disabled secret.', 'SecretDisabled');
        return { status: 200, body: bundle(v, true) };
      }),
    },
    {
      method: 'PATCH',
      path: /^\/secrets\/(?<name>[^/]+)(?:\/(?<version>[^/]*))?$/,
      name: 'secrets.update',
      handle: op('write', (req) => {
        const name = req.params.name!;
        const version = req.params.version || undefined;
        const v = find(name, version);
        if (!v) return notFound(name, version);
        const body = req.json();
        if (!body || typeof body !== 'object') return kvError(400, 'BadParameter', 'The request body must be a JSON object.');
        const b = body as Record<string, unknown>;
        const tags = parseTags(b.tags);
        if (tags === false) return kvError(400, 'BadParameter', 'Tags must be at most 15 string pairs.');
        const attrs = parseAttrs(b.attributes);
        if (!attrs.ok) return kvError(400, 'BadParameter', attrs.message);
        if (b.contentType !== undefined && b.contentType !== null) {
          if (typeof b.contentType !== 'string') return kvError(400, 'BadParameter', 'Property contentType must be a string.');
          if (b.contentType.length > MAX_CONTENT_TYPE) return kvError(400, 'BadParameter', CONTENT_TYPE_TOO_LONG);
          v.contentType = b.contentType;
        }
        if (tags !== undefined) v.tags = tags;
        if (attrs.enabled !== undefined) v.enabled = attrs.enabled;
        if (attrs.nbf !== undefined) v.nbf = attrs.nbf;
        if (attrs.exp !== undefined) v.exp = attrs.exp;
        v.updated = nowS();
        return { status: 200, body: bundle(v, false) };
      }),
    },
  ];
}
