import type { EmuRequest, EmuResponse } from '../../harness';
import { checkGoogleBearer, isEmuResponse } from '../bearer';
import { googleError } from '../state';
import { ACCEPTED_BEARER_SCOPES, type SqlAdminContext, type SqlInstance } from './context';

/** roles/cloudsql.client on the instance, for a live Admin API token; a stopped instance is refused. */
export function createAuth(ctx: SqlAdminContext) {
  const { state, instances } = ctx;

  /** Authenticate the caller and find the instance; an EmuResponse on failure. */
  const authorize = (req: EmuRequest): { instance: SqlInstance; principal: string } | EmuResponse => {
    const t = checkGoogleBearer(req, state, {
      scopes: ACCEPTED_BEARER_SCOPES,
      accessTokensOnly: true,
      missingMessage: 'Request is missing required authentication credential. Expected OAuth 2 access token.',
      invalidMessage: 'Request had invalid authentication credentials. Expected OAuth 2 access token.',
    });
    if (isEmuResponse(t)) return t;
    const instance = instances.get(`${req.params.project}/${req.params.instance}`);
    // The real API answers 403 for instances the caller cannot see, not 404.
    if (!instance || !instance.clients.has(t.principal)) {
      // Legacy v1 shape: errors[] reason notAuthorized, no `status` (GoogleCloudPlatform/cloud-sql-proxy #79, #115).
      const message = 'The client is not authorized to make this request.';
      return {
        status: 403,
        body: { error: { code: 403, message, errors: [{ domain: 'global', message, reason: 'notAuthorized' }] } },
      };
    }
    if (instance.stopped) return googleError(400, 'FAILED_PRECONDITION', 'Invalid request: Instance is not running.');
    return { instance, principal: t.principal };
  };

  return { authorize };
}

export type Authorize = ReturnType<typeof createAuth>['authorize'];
