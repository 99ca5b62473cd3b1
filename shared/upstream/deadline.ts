/**
 * The one deadline helper: every upstream and database call races a timer, so nothing can hang a request.
 * `onTimeout` builds what the caller raises (a BrokerError for HTTP upstreams, DeadlineExceeded for database
 * phases, which the query path classifies). The loser of the race may still reject later (a connection
 * destroyed under it, an aborted fetch): that rejection is observed, never unhandled.
 */
export function withDeadline<T>(work: Promise<T>, ms: number, onTimeout: () => Error): Promise<T> {
  // One promise and one timer per call (an async function racing a second promise made four promises per call: a
  // pool checkout at 16 callers pays it on every query). Whatever settles second is observed and dropped.
  return new Promise<T>((resolve, reject) => {
    const timer = setTimeout(() => reject(onTimeout()), ms);
    timer.unref?.();
    work.then(
      (v) => {
        clearTimeout(timer);
        resolve(v);
      },
      (e: Error) => {
        clearTimeout(timer);
        reject(e); // what `work` rejected with, as it is
      },
    );
  });
}
