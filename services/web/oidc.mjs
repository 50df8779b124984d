// @ts-check
/**
 * Signing in at an OpenID Connect provider from the browser: the authorization-code flow with
 * PKCE (RFC 7636, S256) for a public client, so no client secret ever reaches the page.
 *
 * Pure helpers and the few network calls the flow makes; lib/auth.mjs decides when to call
 * them and keeps the tokens (sessionStorage, never localStorage: a token should not outlive
 * the tab).
 * `node --test services/web/` runs oidc.test.mjs against these functions.
 */

/** sessionStorage key of the sign-in in flight: {state, nonce, verifier, returnTo}. */
export const PENDING_KEY = 'orderflow.oidc.pending';

/** @param {Uint8Array} bytes */
export function base64url(bytes) {
  let text = '';
  for (const byte of bytes) text += String.fromCharCode(byte);
  return btoa(text).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
}

/** A random URL-safe string of `bytes` random bytes (43 characters for 32). */
export function randomString(bytes = 32) {
  return base64url(crypto.getRandomValues(new Uint8Array(bytes)));
}

/** The S256 code challenge of a PKCE verifier. @param {string} verifier */
export async function challengeOf(verifier) {
  const digest = await crypto.subtle.digest('SHA-256', new TextEncoder().encode(verifier));
  return base64url(new Uint8Array(digest));
}

/**
 * @typedef {{issuer: string, authorization_endpoint: string, token_endpoint: string,
 *   end_session_endpoint?: string}} Discovery
 */

/**
 * The provider's discovery document; its issuer must be the one configured (OpenID Connect
 * Discovery §4.3), or a look-alike could hand out its own endpoints.
 * @param {string} issuer
 * @param {typeof fetch} [fetchFn]
 * @returns {Promise<Discovery>}
 */
export async function discover(issuer, fetchFn = fetch) {
  const url = `${issuer.replace(/\/+$/, '')}/.well-known/openid-configuration`;
  const res = await fetchFn(url, { headers: { Accept: 'application/json' }, cache: 'no-store' });
  if (!res.ok) throw new Error(`The identity provider answered ${res.status} at ${url}.`);
  const doc = await res.json();
  if (!doc || doc.issuer !== issuer) {
    throw new Error(`The identity provider says its issuer is ${doc && doc.issuer}, not ${issuer}.`);
  }
  if (!doc.authorization_endpoint || !doc.token_endpoint) {
    throw new Error('The identity provider names no authorization or token endpoint.');
  }
  return doc;
}

/**
 * Where the browser goes to sign in.
 * @param {Discovery} doc
 * @param {{clientId: string, scope: string, redirectUri: string, challenge: string,
 *   state: string, nonce: string, prompt?: string}} request
 */
export function authorizeUrl(doc, request) {
  const url = new URL(doc.authorization_endpoint);
  /** @type {Record<string, string>} */
  const params = {
    client_id: request.clientId,
    response_type: 'code',
    scope: request.scope,
    redirect_uri: request.redirectUri,
    code_challenge: request.challenge,
    code_challenge_method: 'S256',
    state: request.state,
    nonce: request.nonce,
  };
  if (request.prompt) params.prompt = request.prompt;
  for (const [key, value] of Object.entries(params)) url.searchParams.set(key, value);
  return url.toString();
}

/**
 * What the provider sent back in the redirect's query, or null when this is no callback.
 * @param {string} search location.search
 */
export function callbackParams(search) {
  const query = new URLSearchParams(search);
  const code = query.get('code');
  const error = query.get('error');
  if (!code && !error) return null;
  return {
    code,
    state: query.get('state'),
    error,
    errorDescription: query.get('error_description'),
  };
}

/**
 * The token endpoint's form for exchanging a code, or for a refresh token.
 * @param {{clientId: string, code?: string | null, redirectUri?: string, verifier?: string,
 *   refreshToken?: string}} grant
 */
export function tokenForm(grant) {
  const form = new URLSearchParams({ client_id: grant.clientId });
  if (grant.refreshToken) {
    form.set('grant_type', 'refresh_token');
    form.set('refresh_token', grant.refreshToken);
  } else {
    form.set('grant_type', 'authorization_code');
    form.set('code', grant.code || '');
    form.set('redirect_uri', grant.redirectUri || '');
    form.set('code_verifier', grant.verifier || '');
  }
  return form;
}

/**
 * @typedef {{access_token: string, id_token?: string, refresh_token?: string,
 *   expires_in?: number}} TokenAnswer
 */

/**
 * POSTs a grant to the token endpoint.
 * @param {Discovery} doc
 * @param {URLSearchParams} form
 * @param {typeof fetch} [fetchFn]
 * @returns {Promise<TokenAnswer>}
 */
export async function requestTokens(doc, form, fetchFn = fetch) {
  const res = await fetchFn(doc.token_endpoint, {
    method: 'POST',
    headers: { 'Content-Type': 'application/x-www-form-urlencoded', Accept: 'application/json' },
    body: form.toString(),
    cache: 'no-store',
  });
  const body = await res.json().catch(() => null);
  if (!res.ok || !body || typeof body.access_token !== 'string') {
    const why = body && (body.error_description || body.error);
    throw new Error(`The identity provider did not issue a token${why ? `: ${why}` : ''}.`);
  }
  return body;
}

/** A JWT's claims, unchecked (the API checks the access token; this only reads). @param {string} token */
export function decodeJwt(token) {
  const part = String(token).split('.')[1];
  if (!part) return null;
  try {
    const text = atob(part.replace(/-/g, '+').replace(/_/g, '/'));
    const bytes = Uint8Array.from(text, (c) => c.charCodeAt(0));
    return JSON.parse(new TextDecoder().decode(bytes));
  } catch {
    return null;
  }
}

/**
 * Why an ID token is not the one this sign-in asked for, or null when it is: the issuer, the
 * audience (this client), the nonce this page made, and not expired. The page uses it only for
 * the user's name, and still refuses a token replayed from another sign-in.
 * @param {any} claims
 * @param {{issuer: string, clientId: string, nonce: string, nowSeconds: number}} expected
 */
export function idTokenProblem(claims, expected) {
  if (!claims) return 'the ID token is unreadable';
  if (claims.iss !== expected.issuer) return 'the ID token comes from another issuer';
  const audiences = Array.isArray(claims.aud) ? claims.aud : [claims.aud];
  if (!audiences.includes(expected.clientId)) return 'the ID token is for another client';
  if (claims.nonce !== expected.nonce) return 'the ID token answers another sign-in';
  if (typeof claims.exp === 'number' && claims.exp + 60 < expected.nowSeconds) return 'the ID token has expired';
  return null;
}

/**
 * How long to wait before renewing a token that expires at `expiresAt` (ms since the epoch):
 * a minute before it does, or at 80% of a shorter life, never less than 5 s from now.
 * @param {number} expiresAt
 * @param {number} now
 */
export function renewDelay(expiresAt, now) {
  const left = expiresAt - now;
  return Math.max(5000, Math.floor(left - Math.min(60000, left * 0.2)));
}

/**
 * The provider's sign-out URL (RP-initiated logout), or null when it has none.
 * @param {Discovery} doc
 * @param {{idToken?: string, postLogoutRedirectUri: string, clientId: string}} request
 */
export function endSessionUrl(doc, request) {
  if (!doc.end_session_endpoint) return null;
  const url = new URL(doc.end_session_endpoint);
  if (request.idToken) url.searchParams.set('id_token_hint', request.idToken);
  url.searchParams.set('post_logout_redirect_uri', request.postLogoutRedirectUri);
  url.searchParams.set('client_id', request.clientId);
  return url.toString();
}
