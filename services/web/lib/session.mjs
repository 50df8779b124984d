// @ts-check
/**
 * Who is signed in: the bearer token in sessionStorage "orderflow.token" (never localStorage:
 * a token should not outlive the tab), {name, role, customer_id, development, notice, provider,
 * expires_at} in "orderflow.session", a provider's refresh token in "orderflow.refresh"; the
 * last shipping address in localStorage "orderflow.address" (cleared on sign-out).
 */

/** @typedef {import('./routing.mjs').SessionInfo} SessionInfo */

const TOKEN_KEY = 'orderflow.token';
const SESSION_KEY = 'orderflow.session';
export const REFRESH_KEY = 'orderflow.refresh';
const ADDRESS_KEY = 'orderflow.address';

/** @typedef {'local' | 'session'} Area */

/** localStorage for what outlives a tab (the last address), sessionStorage for tokens. @param {Area} kind */
function area(kind) {
  return kind === 'session' ? sessionStorage : localStorage;
}
/** @param {string} key @param {Area} [kind] */
export function storageGet(key, kind = 'local') {
  try { return area(kind).getItem(key); } catch { return null; }
}
/** @param {string} key @param {string} value @param {Area} [kind] */
export function storageSet(key, value, kind = 'local') {
  try { area(kind).setItem(key, value); } catch { /* private mode: session lasts for this page only */ }
}
/** @param {string} key @param {Area} [kind] */
export function storageRemove(key, kind = 'local') {
  try { area(kind).removeItem(key); } catch { /* nothing stored */ }
}

/** The provider session's renewal (auth.mjs); ending the session cancels it. */
let renewTimer = 0;

export const session = {
  /** @returns {string | null} */
  token() { return storageGet(TOKEN_KEY, 'session'); },
  /** @returns {SessionInfo | null} */
  info() {
    const raw = storageGet(SESSION_KEY, 'session');
    if (!raw) return null;
    try {
      const value = JSON.parse(raw);
      return value && typeof value === 'object' ? value : null;
    } catch {
      return null;
    }
  },
  signedIn() { return Boolean(this.token() && this.info()); },
  /** @returns {string} */
  role() { const info = this.info(); return info ? info.role : ''; },
  /** @param {string} token @param {SessionInfo} info */
  save(token, info) {
    storageSet(TOKEN_KEY, token, 'session');
    storageSet(SESSION_KEY, JSON.stringify(info), 'session');
  },
  /** Runs `renew` in `delay` ms instead of any renewal planned before. @param {() => void} renew @param {number} delay */
  renewIn(renew, delay) {
    clearTimeout(renewTimer);
    renewTimer = window.setTimeout(renew, delay);
  },
  cancelRenewal() { clearTimeout(renewTimer); },
  clear() {
    storageRemove(TOKEN_KEY, 'session');
    storageRemove(SESSION_KEY, 'session');
    storageRemove(REFRESH_KEY, 'session');
    clearTimeout(renewTimer);
    /** @type {HTMLElement} */ (document.querySelector('#session-banner')).hidden = true;
  },
};

/**
 * @typedef {{name?: string, line1?: string, line2?: string, city?: string,
 *   postal_code?: string, country?: string}} Address
 */

/** The last shipping address this browser used, if it was this customer's. @returns {(Address & {owner?: string}) | null} */
export function rememberedAddress() {
  const raw = storageGet(ADDRESS_KEY);
  if (!raw) return null;
  try {
    const value = JSON.parse(raw);
    if (!value || typeof value !== 'object') return null;
    const info = session.info();
    if (value.owner && info && info.customer_id && value.owner !== info.customer_id) return null;
    return value;
  } catch {
    return null;
  }
}

/** @param {Address} address */
export function rememberAddress(address) {
  const info = session.info();
  storageSet(ADDRESS_KEY, JSON.stringify({ ...address, owner: (info && info.customer_id) || undefined }));
}

export function forgetAddress() {
  storageRemove(ADDRESS_KEY);
}
