import { ReadableStream } from 'node:stream/web';
import type { HttpRequest } from '@azure/functions';
import { MAX_BODY_BYTES, readBodyText } from '../../../shared/http/request';

/** A request whose body never ends: only a reader that stops at the cap returns. */
function endless(headers: Record<string, string> = {}) {
  let pulled = 0;
  let cancelled = false;
  const body = new ReadableStream<Uint8Array>({
    pull(c) {
      pulled += 1024;
      c.enqueue(new Uint8Array(1024).fill(97));
    },
    cancel() {
      cancelled = true;
    },
  });
  const req = { headers: new Headers(headers), body } as unknown as Pick<HttpRequest, 'headers' | 'body'>;
  return { req, pulled: () => pulled, cancelled: () => cancelled };
}

describe('request bodies are read at most to the cap', () => {
  test('an endless streamed body: 413 as soon as the cap is passed, the stream cancelled', async () => {
    const r = endless();
    await expect(readBodyText(r.req)).rejects.toMatchObject({ code: 'payload_too_large' });
    expect(r.cancelled()).toBe(true);
    expect(r.pulled()).toBeLessThanOrEqual(MAX_BODY_BYTES + 64 * 1024);
  });

  test('a declared Content-Length over the cap: 413 before anything is read', async () => {
    const r = endless({ 'content-length': String(MAX_BODY_BYTES + 1) });
    await expect(readBodyText(r.req)).rejects.toMatchObject({ code: 'payload_too_large' });
    expect(r.pulled()).toBeLessThanOrEqual(16 * 1024); // at most what the stream buffered on its own
  });

  test('a body at the cap is read whole', async () => {
    const text = 'a'.repeat(MAX_BODY_BYTES);
    const body = new ReadableStream<Uint8Array>({
      start(c) {
        c.enqueue(Buffer.from(text));
        c.close();
      },
    });
    await expect(readBodyText({ headers: new Headers(), body })).resolves.toBe(text);
  });
});
