import type { EmuRequest, EmuResponse } from '../../harness';
import { checkGoogleBearer, INVALID_CREDENTIAL, isEmuResponse, MISSING_CREDENTIAL } from '../bearer';
import { CLOUD_PLATFORM_SCOPE, googleError, type ServiceAccount } from '../state';
import type { IamContext } from './context';

/** Authentication (Google bearer tokens with the cloud-platform scope) and key-admin authorization. */
export function createAuth(ctx: IamContext) {
  const { state, keyAdmins, isAdmin } = ctx;

  const denied = (permission: string, resource: string) =>
    googleError(403, 'PERMISSION_DENIED', `Permission '${permission}' denied on resource '${resource}' (or it may not exist).`);

  /**
   * Authenticate, resolve projects/{project}/serviceAccounts/{email or uniqueId} and authorize `permission` on it.
   * Google checks the permission on the resolved resource: under the `-` wildcard an unknown account cannot be
   * resolved to a project, so it is 403 PERMISSION_DENIED, never 404 (the IAM reference warns of exactly this,
   * https://cloud.google.com/iam/docs/reference/rest/v1/projects.serviceAccounts/get); an account the caller holds
   * no grant on (another team's, another project's) is the same 403. Only a caller with a project-level grant learns
   * that an account of that project does not exist (404).
   */
  const resolve = (req: EmuRequest, permission: string): ServiceAccount | EmuResponse => {
    const tok = checkGoogleBearer(req, state, {
      scopes: [CLOUD_PLATFORM_SCOPE],
      missingMessage: `${MISSING_CREDENTIAL} See https://developers.google.com/identity/sign-in/web/devconsole-project.`,
      invalidMessage: INVALID_CREDENTIAL,
    });
    if (isEmuResponse(tok)) return tok;
    const project = decodeURIComponent(req.params.project ?? '');
    const id = decodeURIComponent(req.params.account ?? '');
    const resource = `projects/${project}/serviceAccounts/${id}`;
    const sa = state.serviceAccounts.get(id) ?? [...state.serviceAccounts.values()].find((s) => s.uniqueId === id);
    if (!sa || (project !== '-' && project !== sa.projectId)) {
      return project !== '-' && keyAdmins.get(tok.principal) === '*'
        ? googleError(404, 'NOT_FOUND', `Unknown service account`)
        : denied(permission, resource);
    }
    if (!isAdmin(tok.principal, sa.email)) return denied(permission, resource);
    return sa;
  };

  return { resolve };
}

export type Resolve = ReturnType<typeof createAuth>['resolve'];
