import { rememberSubjectToken } from './subject-token';
import type { HttpRequest } from '@azure/functions';
import { BrokerError } from '../errors';
import { coreConfig, type CoreConfig } from '../config/core';
import { TokenValidator } from './jwt';
import type { Principal } from './principal';

let cached: { key: CoreConfig; validator: TokenValidator } | undefined;

/** The validator for the current configuration (one per config, so its JWKS cache survives requests). */
export function validatorFor(cfg: CoreConfig): TokenValidator {
  if (cached?.key !== cfg) {
    cached = {
      key: cfg,
      validator: new TokenValidator({
        authorityHost: cfg.authorityHost,
        allowedTenants: cfg.allowedTenants,
        clockSkewSeconds: cfg.clockSkewSeconds,
        maxTokenBytes: cfg.maxTokenBytes,
        jwksCooldownSeconds: cfg.jwksCooldownSeconds,
        jwksCacheMaxAgeSeconds: cfg.jwksCacheMaxAgeSeconds,
        timeoutMs: cfg.upstreamTimeoutMs,
      }),
    };
  }
  return cached.validator;
}

/** Loads core config, mapping a ConfigError to a 503 that names the settings (never a 500). */
export function loadCore(settingsRecheckMs?: number): CoreConfig {
  return coreConfig.load(settingsRecheckMs);
}

export function bearerOf(req: HttpRequest): string | undefined {
  const h = req.headers.get('authorization');
  if (!h) return undefined;
  const m = /^Bearer\s+(\S+)\s*$/i.exec(h);
  if (!m) throw new BrokerError('token_malformed', 'The Authorization header must be "Bearer <token>".', { party: 'client' });
  return m[1];
}

/**
 * The client (RFC 8693): the gateway's own identity in `Authorization: Bearer`. Valid token with the
 * broker's audience, and an object id on the allowlist.
 */
export async function authenticateClient(req: HttpRequest, cfg: CoreConfig = loadCore()): Promise<Principal> {
  let client: Principal;
  try {
    client = await validatorFor(cfg).validate(bearerOf(req), cfg.clientAudiences);
  } catch (e) {
    throw e instanceof BrokerError ? e.withParty('client') : e;
  }
  return allowedClient(client, cfg);
}

/**
 * `authenticateClient` without a promise when the gateway's token was already verified (what a cache hit finds):
 * the same client with the same allowlist check; undefined when the token must be verified (then
 * `authenticateClient`). Throws what `authenticateClient` rejects with for a malformed header or a client not allowed.
 */
export function knownClient(req: HttpRequest, cfg: CoreConfig): Principal | undefined {
  let client: Principal | undefined;
  try {
    client = validatorFor(cfg).verifiedPrincipal(bearerOf(req), cfg.clientAudiences);
  } catch (e) {
    throw e instanceof BrokerError ? e.withParty('client') : e;
  }
  return client && allowedClient(client, cfg);
}

function allowedClient(client: Principal, cfg: CoreConfig): Principal {
  if (!cfg.allowedClients.some((oid) => oid.toLowerCase() === client.objectId)) {
    throw new BrokerError('client_not_allowed', 'This client identity may not call the broker.', { party: 'client' });
  }
  return client;
}

/** The subject (RFC 8693): the end caller's token, which decides what is granted. */
export async function validateSubject(token: string | undefined, cfg: CoreConfig = loadCore()): Promise<Principal> {
  try {
    return rememberSubjectToken(await validatorFor(cfg).validate(token, cfg.subjectAudiences), token!);
  } catch (e) {
    throw e instanceof BrokerError ? e.withParty('subject') : e;
  }
}

/** `validateSubject` without a promise when the token was already verified; undefined when it must be (then that). */
export function knownSubject(token: string | undefined, cfg: CoreConfig): Principal | undefined {
  const subject = validatorFor(cfg).verifiedPrincipal(token, cfg.subjectAudiences);
  return subject && rememberSubjectToken(subject, token!);
}

/** What the MCP endpoint accepts as a caller's token (its own resource, never the gateway's or an API's). */
export interface McpAudience {
  /** Accepted `aud` values (the MCP resource app's client id; its App ID URI). */
  readonly audiences: readonly string[];
  /** The client applications (`azp`) allowed: the agent hosts an operator approved. */
  readonly allowedClientApps: readonly string[];
}

/**
 * An MCP caller (the user, or an agent identity, acting through an approved client application): a valid Entra
 * **v2.0** access token for the MCP resource (the one validator, its JWKS cache and verified-token cache), from an
 * allowed tenant, issued to an allowed client app. A v1.0 token, any other audience: 401; a client app that is
 * not approved: 403 `client_not_allowed`.
 */
export async function validateMcpCaller(
  token: string | undefined,
  aud: McpAudience,
  cfg: CoreConfig = loadCore(),
): Promise<Principal> {
  // Kept beside the Principal for the caller identity mode's on-behalf-of exchange (its assertion is this token).
  const p = rememberSubjectToken(await validatorFor(cfg).validate(token, aud.audiences), token!);
  if (p.version !== '2.0')
    throw new BrokerError('token_issuer_not_allowed', 'Only v2.0 access tokens for the MCP resource are accepted.');
  const azp = p.appId?.toLowerCase();
  if (azp === undefined || !aud.allowedClientApps.some((a) => a.toLowerCase() === azp))
    throw new BrokerError('client_not_allowed', 'This client application may not call the MCP endpoint.', { party: 'client' });
  return p;
}
