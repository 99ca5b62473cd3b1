import { randomUUID } from 'node:crypto';
import { startEmulator, type Emulator } from './harness';
import type { EntraEmulator } from './entra';

/**
 * The App Service / Functions managed-identity endpoint (`IDENTITY_ENDPOINT` + `IDENTITY_HEADER`,
 * api-version 2019-08-01), as `ManagedIdentityCredential` calls it. Tokens are real JWTs signed by the
 * Entra emulator for the Function's own identity, with `aud` = the requested resource.
 */

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
}

export interface ManagedIdentityOptions {
  entra: EntraEmulator;
  objectId?: string;
  clientId?: string;
  port?: number;
  /** Token lifetime in seconds (default 3600). */
  lifetimeSeconds?: number;
  /** The X-IDENTITY-HEADER value to require (default: a random one). */
  secretHeader?: string;
  /** Further user-assigned identities attached to the app, selected by `client_id` (or `principal_id`). */
  identities?: readonly UserAssignedIdentity[];
}

export const SANDBOX_FUNCTION_OID = '5e7f0000-0000-4000-8000-0000000f00c1';
export const SANDBOX_FUNCTION_CLIENT_ID = '5e7f0000-0000-4000-8000-00000c11e471';

export async function startManagedIdentity(opts: ManagedIdentityOptions): Promise<ManagedIdentityEmulator> {
  const secretHeader = opts.secretHeader ?? randomUUID();
  const objectId = opts.objectId ?? SANDBOX_FUNCTION_OID;
  const clientId = opts.clientId ?? SANDBOX_FUNCTION_CLIENT_ID;
  const issued: { resource: string; token: string; clientId: string }[] = [];
  // The app's identities: the default one first (used when the request names none), then the others by client id.
  const identities: UserAssignedIdentity[] = [{ clientId, objectId }, ...(opts.identities ?? [])].map((i) => ({
    clientId: i.clientId.toLowerCase(),
    objectId: i.objectId.toLowerCase(),
  }));
  const lifetime = opts.lifetimeSeconds ?? 3600;
  const err = (status: number, error: string, description: string) => ({
    status,
    body: { statusCode: status, message: description, correlationId: randomUUID(), error, error_description: description },
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
          if (req.header('x-identity-header') !== secretHeader) return err(401, 'unauthorized', 'X-IDENTITY-HEADER is missing or wrong.');
          if (req.url.searchParams.get('api-version') !== '2019-08-01') return err(400, 'invalid_request', 'api-version must be 2019-08-01.');
          const resource = req.url.searchParams.get('resource');
          if (!resource) return err(400, 'invalid_request', 'resource is required.');
          const cid = req.url.searchParams.get('client_id')?.toLowerCase();
          const principal = (req.url.searchParams.get('principal_id') ?? req.url.searchParams.get('object_id'))?.toLowerCase();
          if (cid && principal) return err(400, 'invalid_request', 'Only one of client_id, principal_id, object_id may be given.');
          const who = cid ? identities.find((i) => i.clientId === cid) : principal ? identities.find((i) => i.objectId === principal) : identities[0];
          if (!who) {
            return err(400, 'invalid_request', 'No user-assigned identity with that id is assigned to this app.');
          }
          const token = await opts.entra.mint({
            oid: who.objectId,
            appId: who.clientId,
            aud: resource.replace(/\/\.default$/, ''),
            version: '1.0',
            expiresIn: lifetime,
            extra: { sub: who.objectId }, // managed identity tokens carry sub = oid
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
    identities.push({ clientId: i.clientId.toLowerCase(), objectId: i.objectId.toLowerCase() });
  };
  return Object.assign(emu, { endpoint: `${emu.url}/msi/token`, secretHeader, objectId, clientId, issued, addIdentity }) as ManagedIdentityEmulator;
}
