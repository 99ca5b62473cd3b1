import { app, type HttpFunctionOptions } from '@azure/functions';
import { appContext } from '../shared/app/context';
import { httpHandler } from '../shared/http/handler';
import { makeAdminRotate } from '../shared/rotation/endpoint';

/** POST /api/admin/rotate?dryRun=true|false: the key-rotation plan on demand (admin role). */
export const handler = httpHandler(appContext(), 'adminRotate', 'problem', makeAdminRotate());

export const registration = {
  name: 'adminRotate',
  options: { route: 'admin/rotate', methods: ['POST'], authLevel: 'anonymous', handler } satisfies HttpFunctionOptions,
} as const;

app.http(registration.name, registration.options);
