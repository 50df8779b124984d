// @ts-check
/**
 * Signing in and out. How this server signs users in comes from GET /api/auth/config: the
 * development login, or an OpenID provider (authorization code + PKCE through oidc.mjs, the
 * refresh token in sessionStorage, renewed before expiry, sign-out at the provider).
 */
import { api } from './api.mjs';
import { catalogCache } from './catalog.mjs';
import { renderChrome } from './chrome.mjs';
import { $, announce } from './dom.mjs';
import { live } from './live.mjs';
import { navigate } from './router.mjs';
import { homeFor } from './routing.mjs';
import { REFRESH_KEY, forgetAddress, session, storageGet, storageRemove, storageSet } from './session.mjs';
import { state } from './state.mjs';

/**
 * @typedef {{mode: 'development' | 'oidc' | 'shared_secret' | string, issuer: string,
 *   client_id: string, scope?: string}} AuthConfig
 * @typedef {typeof import('../oidc.mjs')} Oidc
 * @typedef {import('../oidc.mjs').Discovery} Discovery
 */

/**
 * Read at boot: `config` says the mode, `oidc` holds the oidc.mjs module (loaded only when
 * the mode is oidc) and `doc` the provider's discovery document once read.
 * @type {{config: AuthConfig, oidc: Oidc | null, doc: Discovery | null}}
 */
export const auth = { config: { mode: 'development', issuer: '', client_id: '' }, oidc: null, doc: null };

/** The oidc.mjs module, which only the oidc mode loads. */
function oidc() {
  if (!auth.oidc) throw new Error('This server does not sign users in at an OpenID provider.');
  return auth.oidc;
}

export async function loadAuthConfig() {
  try {
    const { data } = await api('/api/auth/config', { anonymous: true });
    if (data && data.mode) auth.config = data;
  } catch {
    // An older server without the endpoint has the development login.
  }
  if (auth.config.mode === 'oidc') auth.oidc = await import('../oidc.mjs');
}

async function providerDoc() {
  if (!auth.doc) auth.doc = await oidc().discover(auth.config.issuer);
  return auth.doc;
}

/** The provider sends users back to the UI's root; the hash route is kept aside meanwhile. */
function redirectUri() {
  return `${location.origin}/`;
}

/** Leaves for the provider's sign-in page; the PKCE verifier and state wait in sessionStorage. */
export async function startProviderSignIn() {
  if (!auth.config.client_id) throw new Error('This server names no OpenID client for the web UI (ORDERFLOW_OIDC_CLIENT_ID).');
  const o = oidc();
  const doc = await providerDoc();
  const returnTo = location.hash && !location.hash.startsWith('#/login') ? location.hash : '';
  const pending = { state: o.randomString(), nonce: o.randomString(), verifier: o.randomString(48), returnTo };
  storageSet(o.PENDING_KEY, JSON.stringify(pending), 'session');
  location.assign(o.authorizeUrl(doc, {
    clientId: auth.config.client_id,
    scope: auth.config.scope || 'openid profile',
    redirectUri: redirectUri(),
    challenge: await o.challengeOf(pending.verifier),
    state: pending.state,
    nonce: pending.nonce,
  }));
}

/** Finishes a sign-in the provider sent back (`?code=`): exchanges the code, cleans the URL. */
export async function finishProviderSignIn() {
  const o = auth.oidc;
  const back = o && o.callbackParams(location.search);
  if (!o || !back) return;
  /** @type {{state: string, nonce: string, verifier: string, returnTo: string} | null} */
  let pending = null;
  try { pending = JSON.parse(storageGet(o.PENDING_KEY, 'session') || 'null'); } catch { /* unreadable */ }
  storageRemove(o.PENDING_KEY, 'session');
  // The code must not stay in the address bar or the history.
  history.replaceState(null, '', `/${location.hash}`);
  try {
    if (back.error) throw new Error(`The identity provider refused: ${back.errorDescription || back.error}.`);
    if (!pending || pending.state !== back.state) throw new Error('This sign-in was not started in this tab. Please sign in again.');
    const doc = await providerDoc();
    const tokens = await o.requestTokens(doc, o.tokenForm({
      clientId: auth.config.client_id, code: back.code, redirectUri: redirectUri(), verifier: pending.verifier,
    }));
    const claims = tokens.id_token ? o.decodeJwt(tokens.id_token) : null;
    if (tokens.id_token) {
      const problem = o.idTokenProblem(claims, {
        issuer: auth.config.issuer, clientId: auth.config.client_id, nonce: pending.nonce, nowSeconds: Date.now() / 1000,
      });
      if (problem) throw new Error(`Sign-in refused: ${problem}.`);
    }
    await acceptProviderTokens(tokens, claims);
    navigate(pending.returnTo || homeFor(session.role()), true);
  } catch (err) {
    session.clear();
    state.loginNotice = (err instanceof Error && err.message) || 'Signing in failed.';
    navigate('#/login', true);
  }
}

/**
 * Keeps the provider's tokens, with who the API says the caller is (roles are its call).
 * @param {{access_token: string, id_token?: string, refresh_token?: string}} tokens
 * @param {Record<string, any> | null} claims the ID token's
 */
async function acceptProviderTokens(tokens, claims) {
  const { data: me } = await api('/api/me', { token: tokens.access_token });
  const previous = session.info();
  const name = (claims && (claims.name || claims.preferred_username || claims.email))
    || (previous && previous.name) || me.customer_id;
  session.save(tokens.access_token, {
    name,
    role: me.role,
    roles: me.roles,
    customer_id: me.customer_id,
    development: false,
    provider: true,
    expires_at: Date.parse(me.expires_at),
    id_token: tokens.id_token || (previous && previous.id_token) || '',
  });
  if (tokens.refresh_token) storageSet(REFRESH_KEY, tokens.refresh_token, 'session');
  $('#session-banner').hidden = true;
  scheduleRenewal();
  // The live stream ends when the token it opened with expires: reopen it with the new one.
  live.stop();
  live.start();
  renderChrome();
}

export function scheduleRenewal() {
  session.cancelRenewal();
  const info = session.info();
  if (!info || !info.provider || !info.expires_at || !auth.oidc) return;
  session.renewIn(renewSession, auth.oidc.renewDelay(info.expires_at, Date.now()));
}

/** Before the token expires: a silent refresh, or else an offer to sign in again. */
async function renewSession() {
  const refreshToken = storageGet(REFRESH_KEY, 'session');
  if (refreshToken) {
    try {
      const o = oidc();
      const tokens = await o.requestTokens(await providerDoc(), o.tokenForm({ clientId: auth.config.client_id, refreshToken }));
      await acceptProviderTokens(tokens, tokens.id_token ? o.decodeJwt(tokens.id_token) : null);
      return;
    } catch (err) {
      storageRemove(REFRESH_KEY, 'session');
      console.warn('renewing the session failed', err);
    }
  }
  const info = session.info();
  if (!info || !info.expires_at) return;
  $('#session-banner-text').textContent = `Your session ends at ${new Date(info.expires_at).toLocaleTimeString()}.`;
  $('#session-banner').hidden = false;
}

/**
 * Starts a development-login session with the token POST /api/dev/token returned.
 * @param {{token: string, role?: string, customer_id?: string, development?: boolean, notice?: string}} data
 * @param {string} name
 * @param {string} role the role asked for
 */
export function signIn(data, name, role) {
  const info = {
    name,
    role: data.role || role,
    customer_id: data.customer_id || '',
    development: data.development !== false,
    notice: data.notice || 'Development login: this token was signed by the server itself.',
  };
  session.save(data.token, info);
  state.orderAttempt = null;
  live.stop();
  live.start();
  renderChrome();
  navigate(homeFor(info.role));
}

export function logout() {
  const info = session.info();
  live.stop();
  session.clear();
  forgetAddress();
  catalogCache.clear();
  state.lastPlaced = null;
  state.orderAttempt = null;
  state.loginNotice = 'You have signed out.';
  renderChrome();
  announce('Signed out.');
  const o = auth.oidc;
  if (info && info.provider && o) {
    // Sign out at the provider too, or its session would sign the next person straight back in.
    providerDoc()
      .then((doc) => o.endSessionUrl(doc, { idToken: info.id_token, postLogoutRedirectUri: redirectUri(), clientId: auth.config.client_id }))
      .then((url) => (url ? location.assign(url) : navigate('#/login')))
      .catch(() => navigate('#/login'));
    return;
  }
  navigate('#/login');
}

/** The server refused the session's token (a 401): back to the login, saying why. */
export function expireSession() {
  if (!session.token()) return;
  live.stop();
  session.clear();
  state.loginNotice = 'Your session has ended. Please sign in again.';
  renderChrome();
  navigate('#/login', true);
}
