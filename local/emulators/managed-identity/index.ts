import { randomUUID } from 'node:crypto';
import { startEmulator, type Emulator } from '../harness';
import { tokenShapeFor, type EntraEmulator } from '../entra';

/**
 * The App Service / Functions managed-identity endpoint (`IDENTITY_ENDPOINT` + `IDENTITY_HEADER`,
 * api-version 2019-08-01), as `ManagedIdentityCredential` calls it. Tokens are real JWTs signed by the Entra emulator
 * for the Function's own identity, `sub` = `oid` = the identity's principal id, shaped as Entra shapes them for the
 * resource asked for (docs/emulators.md, "Managed identity and Google STS"):
 * - an app registration of the tenant (e.g. the one Google's Azure guide has the identity ask for): the version its
 *   `accessTokenAcceptedVersion` gives (default v1.0: `iss` https://sts.windows.net/{tid}/, `aud` = the identifier as
 *   requested, `appid`); v2.0: `aud` = its client id, `azp`. No `idtyp` / `xms_mirid`: optional claims the app
 *   registration would have to configure (nothing may rely on them);
 * - `api://AzureADTokenExchange` (Entra's own token exchange, first-party): v2.0 with `aud` = its client id
 *   fb60f99c-7a34-4190-8149-302f77469936, not the URI; `azp` = the identity's client id, `idtyp` app, `xms_mirid`;
 * - any other resource (Azure's own: Key Vault, Monitor, …): v1.0, `aud` = the resource, `appid`, `idtyp` app, `xms_mirid`.
 */

const TOKEN_EXCHANGE_AUDIENCE = 'api://AzureADTokenExchange';
/** The client id of Entra's token exchange endpoint (first-party app), the `aud` of its v2.0 tokens. */
const TOKEN_EXCHANGE_APP_ID = 'fb60f99c-7a34-4190-8149-302f77469936';
export const SANDBOX_FUNCTION_IDENTITY_RESOURCE_ID =
  '/subscriptions/00000000-0000-4000-8000-00000000a2e0/resourcegroups/rg-token-broker/providers/Microsoft.ManagedIdentity/userAssignedIdentities/id-token-broker';

export interface ManagedIdentityEmulator extends Emulator {
  /** The value of IDENTITY_ENDPOINT. */
  readonly endpoint: string;
  /** The value of IDENTITY_HEADER. */
  readonly secretHeader: string;
  /** The identity's object (principal) id. */
  readonly objectId: string;
  /** The user-assigned identity's client id. */
  readonly clientId: string;
  /** Resources tokens were issued for, in order (with the client id of the identity that got each). */
  readonly issued: readonly { resource: string; token: string; clientId: string }[];
  /** Attach another user-assigned identity to the app (selected by `client_id`). */
  addIdentity(identity: UserAssignedIdentity): void;
}

export interface UserAssignedIdentity {
  readonly clientId: string;
  readonly objectId: string;
  /** ARM resource id (`xms_mirid`); default: a sandbox id named after the client id. */
  readonly resourceId?: string;
}

interface AttachedIdentity {
  readonly clientId: string;
  readonly objectId: string;
  readonly resourceId: string;
}

const attached = (i: UserAssignedIdentity): AttachedIdentity => ({
  clientId: i.clientId.toLowerCase(),
  objectId: i.objectId.toLowerCase(),
  resourceId: i.resourceId ?? SANDBOX_FUNCTION_IDENTITY_RESOURCE_ID.replace(/[^/]+$/, `id-${i.clientId.toLowerCase()}`),
});

export interface ManagedIdentityOptions {
  entra: EntraEmulator;
  objectId?: string;
  clientId?: string;
  port?: number;
  /** Token lifetime in seconds (default 3600). */
  lifetimeSeconds?: number;
  /** The X-IDENTITY-HEADER value to require (default: a random one). */
  secretHeader?: string;
  /** ARM resource id of the identity (`xms_mirid`). */
  resourceId?: string;
  /** Further user-assigned identities attached to the app, selected by `client_id`, `principal_id`/`object_id` or `mi_res_id`. */
  identities?: readonly UserAssignedIdentity[];
}

const SANDBOX_FUNCTION_OID = '5e7f0000-0000-4000-8000-0000000f00c1';
const SANDBOX_FUNCTION_CLIENT_ID = '5e7f0000-0000-4000-8000-00000c11e471';

export async function startManagedIdentity(opts: ManagedIdentityOptions): Promise<ManagedIdentityEmulator> {
  const secretHeader = opts.secretHeader ?? randomUUID();
  const objectId = opts.objectId ?? SANDBOX_FUNCTION_OID;
  const clientId = opts.clientId ?? SANDBOX_FUNCTION_CLIENT_ID;
  const issued: { resource: string; token: string; clientId: string }[] = [];
  // The app's identities: the default one first (used when the request names none), then the others by client id.
  const identities: AttachedIdentity[] = [
    attached({ clientId, objectId, resourceId: opts.resourceId ?? SANDBOX_FUNCTION_IDENTITY_RESOURCE_ID }),
    ...(opts.identities ?? []).map(attached),
  ];
  const lifetime = opts.lifetimeSeconds ?? 3600;
  const err = (status: number, error: string, description: string) => ({
    status,
    body: { statusCode: status, message: description, correlationId: randomUUID(), error, error_description: description },
  });
  // An identity that is not attached, or an ambiguous selection: App Service answers exactly three camelCase fields
  // (Azure/azure-sdk-for-net #43691, microsoft/azure-container-apps #442), with `Server: Kestrel`.
  const notAttached = () => ({
    status: 400,
    headers: { server: 'Kestrel', 'x-correlation-id': randomUUID() },
    body: { statusCode: 400, message: 'Unable to load the proper Managed Identity.', correlationId: randomUUID() },
  });
  const emu = await startEmulator({
    name: 'managed-identity',
    port: opts.port,
    routes: [
      {
        method: 'GET',
        path: '/msi/token',
        name: 'msi.token',
        handle: async (req) => {
          if (req.header('x-identity-header') !== secretHeader)
            return err(401, 'unauthorized', 'X-IDENTITY-HEADER is missing or wrong.');
          if (req.url.searchParams.get('api-version') !== '2019-08-01')
            return err(400, 'invalid_request', 'api-version must be 2019-08-01.');
          const resource = req.url.searchParams.get('resource');
          if (!resource) return err(400, 'invalid_request', 'resource is required.');
          // Selection by client_id, principal_id/object_id or mi_res_id (ARM resource id, compared case-insensitively
          // as ARM ids are); none: the app's default identity; more than one selector, or no such identity attached:
          // 400 "Unable to load the proper Managed Identity."
          // (https://learn.microsoft.com/azure/app-service/overview-managed-identity#rest-endpoint-reference).
          const q = req.url.searchParams;
          const cid = q.get('client_id')?.toLowerCase();
          const principal = (q.get('principal_id') ?? q.get('object_id'))?.toLowerCase();
          const rid = q.get('mi_res_id')?.toLowerCase();
          if ([cid, principal, rid].filter((x) => x !== undefined).length > 1) return notAttached();
          const who =
            cid !== undefined
              ? identities.find((i) => i.clientId === cid)
              : principal !== undefined
                ? identities.find((i) => i.objectId === principal)
                : rid !== undefined
                  ? identities.find((i) => i.resourceId.toLowerCase() === rid)
                  : identities[0];
          if (!who) return notAttached();
          const requested = resource.replace(/\/\.default$/, '');
          const ms = { idtyp: 'app', xms_mirid: who.resourceId };
          const app = tokenShapeFor(opts.entra.apps, requested);
          const exchange = requested === TOKEN_EXCHANGE_AUDIENCE || requested.toLowerCase() === TOKEN_EXCHANGE_APP_ID;
          const shape = exchange
            ? { version: '2.0' as const, aud: TOKEN_EXCHANGE_APP_ID, extra: ms }
            : app
              ? { version: app.version, aud: app.aud, extra: {} }
              : { version: '1.0' as const, aud: requested, extra: ms };
          const token = await opts.entra.mint({
            oid: who.objectId,
            appId: who.clientId,
            aud: shape.aud,
            version: shape.version,
            expiresIn: lifetime,
            extra: { sub: who.objectId, ...shape.extra },
          });
          issued.push({ resource, token, clientId: who.clientId });
          return {
            status: 200,
            body: {
              access_token: token,
              expires_on: String(Math.floor(Date.now() / 1000) + lifetime),
              resource,
              token_type: 'Bearer',
              client_id: who.clientId,
            },
          };
        },
      },
    ],
  });
  const addIdentity = (i: UserAssignedIdentity) => {
    identities.push(attached(i));
  };
  return Object.assign(emu, { endpoint: `${emu.url}/msi/token`, secretHeader, objectId, clientId, issued, addIdentity });
}
