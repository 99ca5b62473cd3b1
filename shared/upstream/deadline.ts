/**
 * The one deadline helper: every upstream and database call races a timer, so nothing can hang a request.
 * `onTimeout` builds what the caller raises (a BrokerError for HTTP upstreams, DeadlineExceeded for database
 * phases, which the query path classifies). The loser of the race may still reject later (a connection
 * destroyed under it, an aborted fetch): that rejection is observed, never unhandled.
 */
export async function withDeadline<T>(work: Promise<T>, ms: number, onTimeout: () => Error): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  work.catch(() => undefined);
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(onTimeout()), ms);
    timer.unref?.();
  });
  try {
    return await Promise.race([work, deadline]);
  } finally {
    if (timer) clearTimeout(timer);
  }
}
