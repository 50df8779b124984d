// @ts-check
/**
 * fetch() for the orderflow API: bearer token, JSON in and out, problem+json (RFC 9457) turned
 * into ApiError; a 401 on the session's own token ends the session.
 */
import { session } from './session.mjs';

/**
 * @typedef {{field?: string, message?: string, label?: string, input?: HTMLElement}} FieldError
 * @typedef {{title?: string, status?: number, detail?: string, errors?: FieldError[],
 *   retry_after?: string, code?: string}} Problem
 */

export class ApiError extends Error {
  /** @param {Problem} problem */
  constructor(problem) {
    super(problem.detail || problem.title || 'Request failed');
    this.name = 'ApiError';
    this.problem = problem;
    this.status = problem.status;
    /** Set when this error ended the session: the login page says so instead. */
    this.sessionExpired = false;
  }
}

/**
 * A problem built in the browser (client-side validation), shaped like the server's.
 * @param {string} title
 * @param {FieldError[]} [errors]
 */
export function clientProblem(title, errors = []) {
  return new ApiError({ title, status: 0, errors });
}

/**
 * Whether `err` is a request cancelled because its route was left: nothing to tell the user.
 * @param {unknown} err
 */
export function isAbort(err) {
  return typeof err === 'object' && err !== null && /** @type {{name?: unknown}} */ (err).name === 'AbortError';
}

/** What ends the session when the server refuses its token (auth.mjs sets it at boot). */
let sessionExpired = () => {};

/** @param {() => void} handler */
export function onSessionExpired(handler) {
  sessionExpired = handler;
}

/**
 * @typedef {object} ApiOptions
 * @property {string} [method]
 * @property {unknown} [body] sent as JSON
 * @property {Record<string, string>} [headers]
 * @property {boolean} [anonymous] no bearer token (the development login)
 * @property {string} [token] this token instead of the session's (a 401 then ends nothing)
 * @property {AbortSignal} [signal] the route's: leaving it cancels the read. Commands (POST)
 *   are not given one, as the server may act on them all the same.
 */

/**
 * Resolves {status, data, headers} on 2xx; rejects with ApiError carrying the problem+json
 * body otherwise (status 0 = network failure), or with the AbortError when `signal` aborted.
 * @param {string} path
 * @param {ApiOptions} [options]
 * @returns {Promise<{status: number, data: any, headers: Headers}>}
 */
export async function api(path, { method = 'GET', body, headers = {}, anonymous = false, token: explicit, signal } = {}) {
  const token = anonymous ? null : (explicit || session.token());
  const h = new Headers({ Accept: 'application/json, application/problem+json' });
  for (const [name, value] of Object.entries(headers)) h.set(name, value);
  if (body !== undefined) h.set('Content-Type', 'application/json');
  if (token) h.set('Authorization', `Bearer ${token}`);

  let res;
  try {
    res = await fetch(path, {
      method,
      headers: h,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: 'no-store',
      credentials: 'same-origin',
      signal,
    });
  } catch (err) {
    if (isAbort(err)) throw err;
    throw new ApiError({
      title: 'Network error',
      status: 0,
      detail: 'The server could not be reached. Check the connection and try again.',
    });
  }

  const data = await readBody(res);
  if (signal && signal.aborted) throw signal.reason;
  if (res.ok) return { status: res.status, data, headers: res.headers };

  const err = new ApiError(toProblem(res, data));
  if (res.status === 401 && token && !explicit) {
    err.sessionExpired = true;
    sessionExpired();
  }
  throw err;
}

/** @param {Response} res */
async function readBody(res) {
  let text = '';
  try { text = await res.text(); } catch { return null; }
  if (!text) return null;
  if (/json/i.test(res.headers.get('Content-Type') || '')) {
    try { return JSON.parse(text); } catch { return text; }
  }
  return text;
}

/**
 * The problem a failed response describes; one made up from its status when the body is none.
 * @param {{status: number, statusText: string, headers: Headers}} res
 * @param {unknown} data its body, parsed
 * @returns {Problem}
 */
export function toProblem(res, data) {
  const fallbackTitle = res.statusText || `HTTP ${res.status}`;
  /** @type {Problem} */
  const problem = data && typeof data === 'object' && !Array.isArray(data)
    ? { ...data, title: /** @type {Problem} */ (data).title || fallbackTitle, status: /** @type {Problem} */ (data).status || res.status }
    : { title: fallbackTitle, status: res.status, detail: typeof data === 'string' ? data.slice(0, 300) : '' };
  const retryAfter = res.headers.get('Retry-After');
  if (retryAfter) problem.retry_after = retryAfter;
  return problem;
}

/**
 * A retry may repeat the same command: the server may or may not have acted on it (no
 * answer, a timeout, too many requests, a server error; or no ApiError at all).
 * @param {unknown} err
 */
export function isRetryable(err) {
  const status = err instanceof ApiError ? err.status : undefined;
  return !status || status === 408 || status === 429 || status >= 500;
}
