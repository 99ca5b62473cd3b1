import { randomBytes, randomUUID } from 'node:crypto';
import { SignJWT } from 'jose';
import { startEmulator, type Emulator, type EmuRequest, type EmuResponse } from '../harness';
import { recordIssuedToken } from '../issued-tokens';
import { SANDBOX } from '../../ids';
import { newSigningKey, type SigningKey } from './keys';
import { tokenShapeFor, type AppRegistration } from './apps';
import { onBehalfOf, type OboClient } from './obo';

export { type SigningKey } from './keys';
export { tokenShapeFor, type AppRegistration } from './apps';
export { type OboClient, type FederatedCredential } from './obo';

/**
 * Entra ID (Azure AD) emulator: per-tenant OIDC discovery (v1 and v2) and JWKS, and a signer that
 * mints access tokens shaped like Entra's (v1: iss sts.windows.net + appid; v2: iss
 * login.microsoftonline.com/{tid}/v2.0 + azp), RS256 with a kid from the published key set.
 * Unknown tenants get Entra's AADSTS90002 error. Keys can be rolled over at run time.
 */

export interface MintOptions {
  tenantId?: string;
  oid?: string;
  /** The resource the token is requested for (an App ID URI or client id of a registered app): sets `aud` and the version as Entra does. */
  resource?: string;
  aud?: string;
  roles?: readonly string[];
  scp?: string;
  groups?: readonly string[];
  appId?: string;
  version?: '1.0' | '2.0';
  /** Seconds from now (default 3600); negative for an expired token. */
  expiresIn?: number;
  /** Seconds from now for nbf (default -60 … i.e. one minute ago). */
  notBefore?: number;
  /** Claims to leave out (e.g. `oid`, `tid`). */
  omit?: readonly string[];
  /** Leave `kid` (and `x5t`) out of the JWT header (tests of verifiers that require it). */
  omitKid?: boolean;
  /** Extra or overriding claims. */
  extra?: Record<string, unknown>;
  /** Sign with this key instead of the current one (e.g. a key not in the JWKS). */
  key?: SigningKey;
  /** Override the issuer. */
  iss?: string;
}

export interface EntraEmulator extends Emulator {
  readonly tenants: readonly string[];
  readonly defaultTenant: string;
  /** Current signing key (the last added). */
  readonly currentKey: SigningKey;
  readonly keys: readonly SigningKey[];
  mint(opts?: MintOptions): Promise<string>;
  /** A key pair that is not published (for unknown-kid tests). */
  strayKey(): SigningKey;
  /** Add a new signing key and make it current; `retireOld` removes the previous keys from the JWKS. */
  rollKeys(retireOld?: boolean): SigningKey;
  /** The tenant's app registrations (resources with an App ID URI). */
  readonly apps: readonly AppRegistration[];
  /** Confidential clients allowed the on-behalf-of grant (mutable: tests take FICs or consent away). */
  readonly oboClients: OboClient[];
}

export interface EntraOptions {
  tenants?: readonly string[];
  port?: number;
  host?: string;
  /** Serve POST /_emulator/mint (the sandbox's dev-token helper). Off by default. */
  allowMintEndpoint?: boolean;
  /** App registrations of the tenant (resources), for `mint({ resource })` and the managed identity emulator. */
  apps?: readonly AppRegistration[];
  /** Confidential clients of the on-behalf-of grant (FIC-authenticated), served on /{tenant}/oauth2/v2.0/token. */
  oboClients?: readonly OboClient[];
}

const DISCOVERY_HEADERS = { 'cache-control': 'max-age=86400, private', 'access-control-allow-origin': '*' };
const CLAIMS_SUPPORTED = [
  'sub',
  'iss',
  'cloud_instance_name',
  'cloud_instance_host_name',
  'cloud_graph_host_name',
  'msgraph_host',
  'aud',
  'exp',
  'iat',
  'auth_time',
  'acr',
  'nonce',
  'preferred_username',
  'name',
  'tid',
  'ver',
  'at_hash',
  'c_hash',
  'email',
];

const SANDBOX_TENANT = SANDBOX.tenantId;

export async function startEntra(opts: EntraOptions = {}): Promise<EntraEmulator> {
  const tenants = (opts.tenants ?? [SANDBOX_TENANT]).map((t) => t.toLowerCase());
  const keys: SigningKey[] = [newSigningKey()];
  const apps = [...(opts.apps ?? [])];
  const oboClients = (opts.oboClients ?? []).map((c) => ({ ...c, appId: c.appId.toLowerCase() }));
  let base = '';

  const unknownTenant = (tid: string): EmuResponse => ({
    status: 400,
    body: {
      error: 'invalid_tenant',
      error_description: `AADSTS90002: Tenant '${tid}' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud.`,
      error_codes: [90002],
      timestamp: new Date().toISOString().replace('T', ' ').slice(0, 19) + 'Z',
      trace_id: randomUUID(),
      correlation_id: randomUUID(),
    },
  });
  const withTenant = (fn: (tid: string, req: EmuRequest) => EmuResponse | Promise<EmuResponse>) => (req: EmuRequest) => {
    const tid = (req.params.tenant ?? '').toLowerCase();
    return tenants.includes(tid) ? fn(tid, req) : unknownTenant(tid);
  };
  const jwks = (): EmuResponse => ({
    status: 200,
    headers: { 'cache-control': 'max-age=86400, private' },
    // As Entra serves them: `x5c`, `cloud_instance_name` and `issuer` as a literal template with `{tenantid}`
    // (agentgateway/agentgateway issue #477); a verifier checking it must substitute `tid`.
    body: {
      keys: keys.map((k) => ({
        ...k.publicJwk,
        cloud_instance_name: 'microsoftonline.com',
        issuer: 'https://login.microsoftonline.com/{tenantid}/v2.0',
      })),
    },
  });

  const mint = async (m: MintOptions = {}): Promise<string> => {
    const tid = (m.tenantId ?? tenants[0]!).toLowerCase();
    let shape: ReturnType<typeof tokenShapeFor>;
    if (m.resource !== undefined) {
      shape = tokenShapeFor(apps, m.resource);
      if (!shape) throw new Error(`AADSTS500011: The resource principal named ${m.resource} was not found in the tenant.`);
    }
    const version = m.version ?? shape?.version ?? '2.0';
    const now = Math.floor(Date.now() / 1000);
    const key = m.key ?? keys[keys.length - 1]!;
    const claims: Record<string, unknown> = {
      aud: m.aud ?? shape?.aud ?? 'api://token-broker',
      iss: m.iss ?? (version === '1.0' ? `https://sts.windows.net/${tid}/` : `https://login.microsoftonline.com/${tid}/v2.0`),
      iat: now - 60,
      nbf: now + (m.notBefore ?? -60),
      exp: now + (m.expiresIn ?? 3600),
      tid,
      oid: m.oid ?? randomUUID(),
      sub: randomBytes(16).toString('base64url'),
      ver: version,
      uti: randomBytes(16).toString('base64url'),
      ...(version === '1.0' ? { appid: m.appId ?? randomUUID(), appidacr: '2' } : { azp: m.appId ?? randomUUID(), azpacr: '2' }),
    };
    if (m.roles) claims.roles = [...m.roles];
    if (m.scp) claims.scp = m.scp;
    if (m.groups) claims.groups = [...m.groups];
    Object.assign(claims, m.extra ?? {});
    for (const c of m.omit ?? []) delete claims[c];
    const jwt = await new SignJWT(claims)
      .setProtectedHeader({ alg: 'RS256', typ: 'JWT', ...(m.omitKid ? {} : { kid: key.kid, x5t: key.kid }) })
      .sign(key.privateKey);
    recordIssuedToken(jwt); // token-leak scan (test/setup-leak-scan.ts)
    return jwt;
  };

  const emu = await startEmulator({
    name: 'entra',
    host: opts.host,
    port: opts.port,
    errorBody: (status, message) => ({
      error: status === 404 ? 'not_found' : status === 429 ? 'temporarily_unavailable' : 'server_error',
      error_description: message,
    }),
    routes: [
      {
        method: 'GET',
        path: '/:tenant/v2.0/.well-known/openid-configuration',
        name: 'oidc.v2',
        // The fields and Cache-Control of Entra's v2.0 document (Azure/azure-sdk-for-js arm-cosmosdb recordings).
        handle: withTenant((tid) => ({
          status: 200,
          headers: DISCOVERY_HEADERS,
          body: {
            token_endpoint: `${base}/${tid}/oauth2/v2.0/token`,
            token_endpoint_auth_methods_supported: ['client_secret_post', 'private_key_jwt', 'client_secret_basic'],
            jwks_uri: `${base}/${tid}/discovery/v2.0/keys`,
            response_modes_supported: ['query', 'fragment', 'form_post'],
            subject_types_supported: ['pairwise'],
            id_token_signing_alg_values_supported: ['RS256'],
            response_types_supported: ['code', 'id_token', 'code id_token', 'id_token token'],
            scopes_supported: ['openid', 'profile', 'email', 'offline_access'],
            issuer: `https://login.microsoftonline.com/${tid}/v2.0`,
            request_uri_parameter_supported: false,
            userinfo_endpoint: 'https://graph.microsoft.com/oidc/userinfo',
            authorization_endpoint: `${base}/${tid}/oauth2/v2.0/authorize`,
            device_authorization_endpoint: `${base}/${tid}/oauth2/v2.0/devicecode`,
            http_logout_supported: true,
            frontchannel_logout_supported: true,
            end_session_endpoint: `${base}/${tid}/oauth2/v2.0/logout`,
            claims_supported: CLAIMS_SUPPORTED,
            kerberos_endpoint: `${base}/${tid}/kerberos`,
            tenant_region_scope: 'EU',
            cloud_instance_name: 'microsoftonline.com',
            cloud_graph_host_name: 'graph.windows.net',
            msgraph_host: 'graph.microsoft.com',
            rbac_url: 'https://pas.windows.net',
          },
        })),
      },
      {
        method: 'GET',
        path: '/:tenant/.well-known/openid-configuration',
        name: 'oidc.v1',
        handle: withTenant((tid) => ({
          status: 200,
          headers: DISCOVERY_HEADERS,
          body: {
            issuer: `https://sts.windows.net/${tid}/`,
            authorization_endpoint: `${base}/${tid}/oauth2/authorize`,
            token_endpoint: `${base}/${tid}/oauth2/token`,
            jwks_uri: `${base}/${tid}/discovery/keys`,
            id_token_signing_alg_values_supported: ['RS256'],
          },
        })),
      },
      { method: 'GET', path: '/:tenant/discovery/v2.0/keys', name: 'jwks', handle: withTenant(() => jwks()) },
      {
        method: 'POST',
        path: '/:tenant/oauth2/v2.0/token',
        name: 'token',
        handle: withTenant((tid, req) =>
          onBehalfOf(tid, req, {
            tenants,
            apps,
            clients: oboClients,
            jwks: () => ({ keys: keys.map((k) => k.publicJwk) }),
            mint,
          }),
        ),
      },
      { method: 'GET', path: '/:tenant/discovery/keys', name: 'jwks.v1', handle: withTenant(() => jwks()) },
      {
        method: 'POST',
        path: '/_emulator/mint',
        name: 'mint',
        handle: async (req) => {
          if (!opts.allowMintEndpoint) return { status: 404, body: { error: 'not_found' } };
          const body = req.json();
          if (!body || typeof body !== 'object') return { status: 400, body: { error: 'invalid_request' } };
          let token: string;
          try {
            token = await mint(body);
          } catch (e) {
            return { status: 400, body: { error: 'invalid_resource', error_description: (e as Error).message } };
          }
          return { status: 200, body: { access_token: token } };
        },
      },
    ],
  });
  base = emu.url;

  return Object.assign(emu, {
    tenants,
    defaultTenant: tenants[0]!,
    get currentKey() {
      return keys[keys.length - 1]!;
    },
    keys,
    apps,
    oboClients,
    mint,
    strayKey: newSigningKey,
    rollKeys(retireOld = false) {
      const k = newSigningKey();
      if (retireOld) keys.splice(0, keys.length);
      keys.push(k);
      return k;
    },
  });
}
