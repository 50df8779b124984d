// Unit tests of the API client with a stand-in fetch: `node --test services/web/`.
import assert from 'node:assert/strict';
import { afterEach, test } from 'node:test';

import { ApiError, api, isAbort, isRetryable, toProblem } from './api.mjs';

const realFetch = globalThis.fetch;
afterEach(() => { globalThis.fetch = realFetch; });

/** @param {number} status @param {unknown} body @param {Record<string, string>} [headers] */
const answer = (status, body, headers = { 'Content-Type': 'application/problem+json' }) => {
  globalThis.fetch = async () => new Response(typeof body === 'string' ? body : JSON.stringify(body), { status, headers });
};

test('2xx resolves with the parsed body', async () => {
  answer(200, { mode: 'development' }, { 'Content-Type': 'application/json' });
  const { status, data } = await api('/api/auth/config', { anonymous: true });
  assert.equal(status, 200);
  assert.deepEqual(data, { mode: 'development' });
});

test('a problem+json answer rejects with its problem, field errors included', async () => {
  answer(422, { title: 'Invalid request', status: 422, errors: [{ field: 'lines[0].quantity', message: 'must be at least 1' }] });
  const err = await api('/api/orders', { method: 'POST', body: {}, anonymous: true }).catch((e) => e);
  assert.ok(err instanceof ApiError);
  assert.equal(err.status, 422);
  assert.equal(err.problem.errors[0].field, 'lines[0].quantity');
  assert.equal(err.sessionExpired, false);
  assert.ok(!isRetryable(err));
});

test('an unreachable server is a problem of status 0, which may be retried', async () => {
  globalThis.fetch = async () => { throw new TypeError('fetch failed'); };
  const err = await api('/api/orders', { anonymous: true }).catch((e) => e);
  assert.ok(err instanceof ApiError);
  assert.equal(err.status, 0);
  assert.equal(err.problem.title, 'Network error');
  assert.ok(isRetryable(err));
});

test('a read cancelled by leaving its route rejects with the AbortError, not a problem', async () => {
  // The real fetch, to a port nobody answers quickly enough: the abort comes first.
  globalThis.fetch = realFetch;
  const controller = new AbortController();
  controller.abort();
  const err = await api('http://127.0.0.1:9/never', { anonymous: true, signal: controller.signal }).catch((e) => e);
  assert.ok(!(err instanceof ApiError), `got ${err}`);
  assert.ok(isAbort(err));
});

test('an abort while the body is read is an abort too, not an empty success', async () => {
  const controller = new AbortController();
  // Like fetch: the body's stream fails with the signal's reason when it aborts.
  globalThis.fetch = async (_url, init) => {
    const body = new ReadableStream({
      start(stream) {
        stream.enqueue(new TextEncoder().encode('{"items": ['));
        init.signal.addEventListener('abort', () => stream.error(init.signal.reason));
      },
    });
    setTimeout(() => controller.abort(), 10);
    return new Response(body, { status: 200, headers: { 'Content-Type': 'application/json' } });
  };
  const err = await api('/api/orders', { anonymous: true, signal: controller.signal }).catch((e) => e);
  assert.ok(isAbort(err), `got ${err}`);
});

test('a body that is no problem becomes one from the status', () => {
  const res = { status: 503, statusText: 'Service Unavailable', headers: new Headers({ 'Retry-After': '5' }) };
  assert.deepEqual(toProblem(res, 'upstream down'), { title: 'Service Unavailable', status: 503, detail: 'upstream down', retry_after: '5' });
  assert.deepEqual(toProblem({ status: 500, statusText: '', headers: new Headers() }, null), { title: 'HTTP 500', status: 500, detail: '' });
  assert.deepEqual(toProblem({ status: 409, statusText: 'Conflict', headers: new Headers() }, { code: 'not_cancellable' }),
    { code: 'not_cancellable', title: 'Conflict', status: 409 });
});

test('only answers that may not have been acted on are retried', () => {
  const of = (/** @type {number} */ status) => new ApiError({ title: 't', status });
  for (const status of [0, 408, 429, 500, 503]) assert.ok(isRetryable(of(status)), String(status));
  for (const status of [400, 401, 404, 409, 422]) assert.ok(!isRetryable(of(status)), String(status));
});
