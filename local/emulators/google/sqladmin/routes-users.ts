import type { EmuRequest, EmuResponse, Route } from '../../harness';
import { googleError } from '../state';
import type { Authorize } from './auth';

/** Database users (workforce identities). */
export function userRoutes(authorize: Authorize): Route[] {
  /** users.get (https://cloud.google.com/sql/docs/postgres/admin-api/rest/v1beta4/users/get): a workforce user, or 404. */
  const getUser = (req: EmuRequest): EmuResponse => {
    const a = authorize(req);
    if (!('instance' in a)) return a;
    const name = decodeURIComponent(req.params.name ?? '');
    if (!a.instance.workforceUsers?.has(name)) return googleError(404, 'NOT_FOUND', 'The Cloud SQL user does not exist.');
    return {
      status: 200,
      body: {
        kind: 'sql#user',
        name,
        instance: a.instance.name,
        project: a.instance.project,
        type: 'CLOUD_IAM_WORKFORCE_IDENTITY',
      },
    };
  };

  return [
    {
      method: 'GET',
      name: 'sqladmin.users.get',
      path: /^\/(?:sql\/)?v1beta4\/projects\/(?<project>[^/]+)\/instances\/(?<instance>[^/:]+)\/users\/(?<name>[^/]+)$/,
      handle: getUser,
    },
  ];
}
