import { app, type HttpFunctionOptions } from '@azure/functions';
import { httpHandler } from '../shared/http/handler';
import { makeAdminRotate } from '../shared/rotation/endpoint';

/** POST /api/admin/rotate?dryRun=true|false: the key-rotation plan on demand (admin role). */
export const handler = httpHandler('adminRotate', 'problem', makeAdminRotate(), { adminAction: () => 'rotation.admin' });

export const registration = {
  name: 'adminRotate',
  options: { route: 'admin/rotate', methods: ['POST'], authLevel: 'anonymous', handler } satisfies HttpFunctionOptions,
} as const;

app.http(registration.name, registration.options);
