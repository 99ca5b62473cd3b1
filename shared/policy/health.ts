import type { CheckResult } from '../health/types';
import type { AppContext } from '../app/context';

/**
 * The policy's readiness: which version this instance decides with (ETag, revision), how old it is (since it was
 * written, and since this instance last confirmed it with the store), and whether it is being served stale
 * because the store cannot be read. `fail` once nothing may be served (no policy, or stale past the bound).
 */
export async function checkPolicy(app: AppContext, now = Date.now()): Promise<CheckResult> {
  const store = await app.policy.store();
  let version;
  try {
    version = await store.current();
  } catch (e) {
    return { status: 'fail', detail: (e as Error).message, info: { source: store.source.kind } };
  }
  const st = store.state();
  const p = version.policy;
  const info: Record<string, string | number | boolean> = {
    source: version.source,
    etag: version.etag,
    rules: p.rules.length,
    deny: p.deny.length,
    stale: st.failing,
  };
  if (version.revision !== undefined) info.revision = version.revision;
  if (version.lastModified) {
    info.lastModified = version.lastModified;
    info.ageSeconds = Math.max(0, Math.round((now - Date.parse(version.lastModified)) / 1000));
  }
  if (st.confirmedAt !== undefined) info.confirmedSecondsAgo = Math.max(0, Math.round((now - st.confirmedAt) / 1000));
  const rev = version.revision !== undefined ? `revision ${version.revision}, ` : '';
  return {
    status: 'ok',
    detail: `${rev}${p.rules.length} rules, ${p.deny.length} deny entries${st.failing ? '; the store cannot be read: serving the last good policy' : ''}`,
    info,
  };
}
