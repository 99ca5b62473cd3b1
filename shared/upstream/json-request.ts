import { Agent as HttpAgent, request as httpRequest, type IncomingMessage } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { httpOutcome, recordUpstream, upstreamSlug } from '../observability/telemetry';
import { networkFailure } from './failure';
import { sharedHttpsAgent } from './local-endpoints';

/**
 * One JSON request/answer over node:http(s) on the process's shared keep-alive agents, for the upstream calls of a
 * cache miss (IAM generateAccessToken). Same contract as fetchWithTimeout (one deadline over connect, answer and body;
 * network failures become BrokerErrors; counted per upstream), without the WHATWG fetch machinery: a miss runs rarely,
 * so its code runs barely optimised, and fetch's Request/Response/Headers/streams layers cost milliseconds of CPU per
 * call there (bench/README.md, (8)).
 */

export interface JsonAnswer {
  readonly status: number;
  readonly ok: boolean;
  /** A response header (lower-case name), the first value when repeated. */
  header(name: string): string | undefined;
  /** The parsed body; undefined when it is empty or not JSON (`unreadable` says which). */
  readonly body: unknown;
  /** The body was not empty and did not parse as JSON. */
  readonly unreadable: boolean;
}

/** An answer larger than this is refused (no upstream JSON the broker reads comes near it). */
const MAX_ANSWER_BYTES = 1024 * 1024;

/** Plain-HTTP endpoints are loopback emulators only (config refuses them elsewhere); one keep-alive agent for them. */
const httpAgent = new HttpAgent({ keepAlive: true, timeout: 30_000 });

export async function requestJson(
  service: string,
  url: string,
  init: { readonly method: string; readonly headers: Record<string, string>; readonly body?: string },
  timeoutMs: number,
): Promise<JsonAnswer> {
  let answer: JsonAnswer;
  try {
    answer = await send(url, init, AbortSignal.timeout(timeoutMs));
  } catch (e) {
    const err = networkFailure(service, e);
    recordUpstream(upstreamSlug(service), err.code);
    throw err;
  }
  recordUpstream(upstreamSlug(service), httpOutcome(answer.status));
  return answer;
}

function send(
  url: string,
  init: { readonly method: string; readonly headers: Record<string, string>; readonly body?: string },
  signal: AbortSignal,
): Promise<JsonAnswer> {
  const u = new URL(url);
  const https = u.protocol === 'https:';
  const body = init.body === undefined ? undefined : Buffer.from(init.body, 'utf8');
  const headers = body ? { ...init.headers, 'content-length': String(body.length) } : init.headers;
  return new Promise<JsonAnswer>((resolve, reject) => {
    const onAnswer = (res: IncomingMessage) => {
      const chunks: Buffer[] = [];
      let size = 0;
      res.on('data', (c: Buffer) => {
        size += c.length;
        if (size > MAX_ANSWER_BYTES) {
          res.destroy(new Error(`answer larger than ${MAX_ANSWER_BYTES} bytes`));
          return;
        }
        chunks.push(c);
      });
      res.on('error', reject); // the deadline fired while the body was read (the request is destroyed with it)
      res.on('aborted', () => reject(signal.aborted ? (signal.reason as Error) : new Error('answer cut short')));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        let parsed: unknown;
        let unreadable = false;
        if (text.trim() !== '') {
          try {
            parsed = JSON.parse(text) as unknown;
          } catch {
            unreadable = true;
          }
        }
        const status = res.statusCode ?? 0;
        resolve({
          status,
          ok: status >= 200 && status < 300,
          header: (name) => {
            const v = res.headers[name.toLowerCase()];
            return Array.isArray(v) ? v[0] : v;
          },
          body: parsed,
          unreadable,
        });
      });
    };
    const options = { method: init.method, headers, signal, agent: https ? sharedHttpsAgent(undefined) : httpAgent };
    const req = https ? httpsRequest(u, options, onAnswer) : httpRequest(u, options, onAnswer);
    req.on('error', reject);
    req.end(body);
  });
}
