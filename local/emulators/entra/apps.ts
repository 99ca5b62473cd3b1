/** The tenant's app registrations and the token shape Entra gives a resource. */

/**
 * An app registration of the tenant (a resource tokens are requested for). Entra decides the token version by the
 * resource's `accessTokenAcceptedVersion` (null or 1: v1.0, 2: v2.0), and the `aud` by the version: v2.0 tokens always
 * carry the resource's client id, v1.0 tokens the identifier the client asked for (App ID URI or client id).
 * https://learn.microsoft.com/en-us/entra/identity-platform/access-tokens#token-formats,
 * https://learn.microsoft.com/en-us/entra/identity-platform/access-token-claims-reference (`aud`).
 */
export interface AppRegistration {
  readonly appId: string;
  readonly identifierUris: readonly string[];
  /** `accessTokenAcceptedVersion` of the manifest (default null, i.e. v1.0). */
  readonly accessTokenAcceptedVersion?: 1 | 2 | null;
}

/** What a token requested for `resource` looks like: its version and `aud`, or undefined for an unknown resource. */
export function tokenShapeFor(
  apps: readonly AppRegistration[],
  resource: string,
): { version: '1.0' | '2.0'; aud: string; appId: string } | undefined {
  const r = resource.replace(/\/\.default$/, '');
  const app = apps.find((a) => a.appId === r.toLowerCase() || a.identifierUris.includes(r));
  if (!app) return undefined;
  return app.accessTokenAcceptedVersion === 2
    ? { version: '2.0', aud: app.appId, appId: app.appId }
    : { version: '1.0', aud: r, appId: app.appId };
}
