import { randomUUID } from 'node:crypto';
import { createLocalJWKSet, jwtVerify, errors as joseErrors, type JWTPayload, type JSONWebKeySet } from 'jose';
import type { EmuRequest, EmuResponse } from '../harness';
import { tokenShapeFor, type AppRegistration } from './apps';

/**
 * Entra's on-behalf-of grant (`POST /{tenant}/oauth2/v2.0/token`,
 * https://learn.microsoft.com/entra/identity-platform/v2-oauth2-on-behalf-of-flow) for a confidential client that
 * authenticates with a federated identity credential trusting a managed identity
 * (https://learn.microsoft.com/entra/workload-id/workload-identity-federation-config-app-trust-managed-identity): the
 * client assertion is the identity's token for `api://AzureADTokenExchange`, matched on (issuer, subject, audience)
 * against the app's FICs. No client secret or certificate is accepted. Strictest where no reference settles a detail
 * (docs/cloudsql.md, "Two identity modes"): only user tokens, `aud` of the assertion exactly the client app, consent
 * per downstream resource, every error code below as Entra words it in public traces.
 */

const JWT_BEARER_GRANT = 'urn:ietf:params:oauth:grant-type:jwt-bearer';
const CLIENT_ASSERTION_TYPE = 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer';
/** Entra's token exchange audience and its first-party client id (the `aud` of a managed identity's token for it). */
const TOKEN_EXCHANGE_AUDIENCES = ['api://AzureADTokenExchange', 'fb60f99c-7a34-4190-8149-302f77469936'];

/** A federated identity credential of an app registration. */
export interface FederatedCredential {
  readonly issuer: string;
  readonly subject: string;
  /** Entra allows one value: `api://AzureADTokenExchange`. */
  readonly audiences: readonly string[];
}

/** A confidential client that may use the on-behalf-of grant (the broker's app registration). */
export interface OboClient {
  readonly appId: string;
  /** Its App ID URIs (a v1.0 user token for it carries the URI as `aud`). */
  readonly identifierUris: readonly string[];
  /** Mutable so tests can take a FIC away (Entra: deleted; there is no disabled state). */
  federatedCredentials: FederatedCredential[];
  /** Client ids of the resources users (or an admin) consented this client to call on their behalf. */
  consentedResources: string[];
  /** The app's service principal is disabled. */
  disabled?: boolean;
}

export interface OboDeps {
  readonly tenants: readonly string[];
  readonly apps: readonly AppRegistration[];
  readonly clients: readonly OboClient[];
  readonly jwks: () => JSONWebKeySet;
  readonly mint: (m: {
    tenantId: string;
    oid: string;
    aud: string;
    version: '1.0' | '2.0';
    appId: string;
    scp: string;
    expiresIn: number;
    extra: Record<string, unknown>;
  }) => Promise<string>;
}

/** Entra's error body: `error`, `error_description` starting with the AADSTS code, `error_codes`, ids, `error_uri`. */
function entraError(status: number, error: string, code: number, text: string, suberror?: string): EmuResponse {
  const now = new Date().toISOString().replace('T', ' ').slice(0, 19) + 'Z';
  const trace = randomUUID();
  const correlation = randomUUID();
  return {
    status,
    headers: { 'cache-control': 'no-store, no-cache' },
    body: {
      error,
      error_description: `AADSTS${code}: ${text} Trace ID: ${trace} Correlation ID: ${correlation} Timestamp: ${now}`,
      error_codes: [code],
      timestamp: now,
      trace_id: trace,
      correlation_id: correlation,
      error_uri: `https://login.microsoftonline.com/error?code=${code}`,
      ...(suberror ? { suberror } : {}),
    },
  };
}

async function verify(token: string, deps: OboDeps): Promise<JWTPayload | 'expired' | 'invalid'> {
  try {
    const { payload } = await jwtVerify(token, createLocalJWKSet(deps.jwks()), { algorithms: ['RS256'], clockTolerance: 0 });
    return payload;
  } catch (e) {
    return e instanceof joseErrors.JWTExpired ? 'expired' : 'invalid';
  }
}

export async function onBehalfOf(tid: string, req: EmuRequest, deps: OboDeps): Promise<EmuResponse> {
  const f = req.form();
  const p = (n: string) => f.get(n) ?? undefined;
  if (p('grant_type') !== JWT_BEARER_GRANT)
    return entraError(400, 'unsupported_grant_type', 70003, 'The app requested an unsupported grant type.');
  if (p('requested_token_use') !== 'on_behalf_of')
    return entraError(
      400,
      'invalid_request',
      900144,
      "The request body must contain the following parameter: 'requested_token_use'.",
    );
  const clientId = (p('client_id') ?? '').toLowerCase();
  if (!clientId)
    return entraError(400, 'invalid_request', 900144, "The request body must contain the following parameter: 'client_id'.");
  if (p('client_secret') !== undefined) return entraError(401, 'invalid_client', 7000215, 'Invalid client secret provided.'); // no secret exists for this app
  const client = deps.clients.find((c) => c.appId === clientId);
  if (!client)
    return entraError(
      400,
      'unauthorized_client',
      700016,
      `Application with identifier '${clientId}' was not found in the directory '${tid}'.`,
    );
  if (client.disabled) return entraError(400, 'unauthorized_client', 7000112, `Application '${clientId}' is disabled.`);
  const assertionType = p('client_assertion_type');
  const clientAssertion = p('client_assertion');
  if (assertionType !== CLIENT_ASSERTION_TYPE || !clientAssertion)
    return entraError(
      401,
      'invalid_client',
      7000218,
      "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.",
    );
  // The client assertion: a live token of the tenant for Entra's token exchange audience, matched against a FIC.
  const ca = await verify(clientAssertion, deps);
  if (ca === 'expired') return entraError(401, 'invalid_client', 700024, 'Client assertion is not within its valid time range.');
  if (ca === 'invalid') return entraError(401, 'invalid_client', 5002727, 'Client assertion failed signature validation.');
  const caAud = typeof ca.aud === 'string' ? ca.aud : undefined;
  const byIssuer = client.federatedCredentials.filter((c) => c.issuer === ca.iss);
  if (byIssuer.length === 0)
    return entraError(
      401,
      'invalid_client',
      700211,
      `No matching federated identity record found for presented assertion issuer '${String(ca.iss)}'. Please check your federated identity credential Subject, Audience and Issuer against the presented assertion.`,
    );
  const match = byIssuer.find(
    (c) =>
      c.subject === ca.sub &&
      caAud !== undefined &&
      TOKEN_EXCHANGE_AUDIENCES.includes(caAud) &&
      c.audiences.some((a) => TOKEN_EXCHANGE_AUDIENCES.includes(a)),
  );
  if (!match)
    return entraError(
      400,
      'invalid_request',
      70021,
      `No matching federated identity record found for presented assertion. Assertion Issuer: '${String(ca.iss)}'. Assertion Subject: '${String(ca.sub)}'. Assertion Audience: '${String(caAud)}'.`,
    );
  // The user assertion: a live user token of this tenant whose audience is this client.
  const assertion = p('assertion');
  if (!assertion)
    return entraError(400, 'invalid_request', 900144, "The request body must contain the following parameter: 'assertion'.");
  const user = await verify(assertion, deps);
  if (user === 'expired') return entraError(400, 'invalid_grant', 500133, 'Assertion is not within its valid time range.');
  if (user === 'invalid') return entraError(400, 'invalid_grant', 50013, 'Assertion failed signature validation.');
  const aud = typeof user.aud === 'string' ? user.aud : '';
  if (aud.toLowerCase() !== client.appId && !client.identifierUris.includes(aud))
    return entraError(
      400,
      'invalid_grant',
      50013,
      `Assertion audience does not match the Client app presenting the assertion. The audience in the assertion was '${aud}' and the expected audience is '${client.appId}' or one of the Application Id URIs of this application.`,
    );
  if (
    user.tid !== tid ||
    typeof user.oid !== 'string' ||
    user.idtyp === 'app' ||
    (typeof user.scp !== 'string' && !user.upn && !user.preferred_username)
  )
    // OBO is for user principals only (the OBO page, "Client limitations"); an app-only token is refused.
    return entraError(400, 'invalid_grant', 50013, 'Assertion contains no user principal.');
  // The downstream resource and the consent to it.
  const scope = (p('scope') ?? '').split(/\s+/).filter(Boolean);
  const resource = scope.find((s) => s.endsWith('/.default'));
  if (!resource)
    return entraError(400, 'invalid_scope', 70011, "The provided value for the input parameter 'scope' is not valid.");
  const shape = tokenShapeFor(deps.apps, resource);
  if (!shape)
    return entraError(
      400,
      'invalid_resource',
      500011,
      `The resource principal named ${resource.replace(/\/\.default$/, '')} was not found in the tenant named ${tid}.`,
    );
  if (!client.consentedResources.includes(shape.appId))
    return entraError(
      400,
      'invalid_grant',
      65001,
      `The user or administrator has not consented to use the application with ID '${client.appId}'. Send an interactive authorization request for this user and resource.`,
      'consent_required',
    );
  const lifetime = Math.max(60, Math.min(3600, (user.exp ?? 0) - Math.floor(Date.now() / 1000) + 300));
  const carried: Record<string, unknown> = {};
  for (const c of ['upn', 'preferred_username', 'name', 'groups']) if (user[c] !== undefined) carried[c] = user[c];
  if (carried.preferred_username === undefined && typeof user.upn === 'string') carried.preferred_username = user.upn;
  const token = await deps.mint({
    tenantId: tid,
    oid: user.oid,
    aud: shape.aud,
    version: shape.version,
    appId: client.appId,
    scp: 'user_impersonation',
    expiresIn: lifetime,
    extra: { sub: `${user.oid}:${shape.appId}`, ...carried },
  });
  return {
    status: 200,
    headers: { 'cache-control': 'no-store, no-cache' },
    body: { token_type: 'Bearer', scope: resource, expires_in: lifetime, ext_expires_in: lifetime, access_token: token },
  };
}
