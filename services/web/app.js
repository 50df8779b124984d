/*
 * orderflow web UI — one vanilla ES2020 file, no build step, no dependencies, same origin only.
 *
 * How this file is laid out (top to bottom):
 *   1. Constants and shared state  — storage keys, statuses, a little in-memory state.
 *   2. Session                     — bearer token in sessionStorage "orderflow.token" (never localStorage:
 *                                    a token should not outlive the tab), {name, role, customer_id,
 *                                    development, notice, provider, expires_at} in "orderflow.session";
 *                                    the last shipping address in localStorage "orderflow.address"
 *                                    (cleared on sign-out). How this server signs users in comes from
 *                                    GET /api/auth/config: the development login, or an OpenID provider
 *                                    (authorization code + PKCE through oidc.mjs, the refresh token in
 *                                    sessionStorage "orderflow.refresh", renewed before expiry, sign-out
 *                                    at the provider).
 *   3. DOM helpers and formatting  — el(), mount(), money (minor units) and time formatting.
 *                                    Data only ever reaches the DOM through textContent /
 *                                    createElement; innerHTML is never used.
 *   4. api()                       — fetch wrapper: bearer token, JSON in and out, problem+json
 *                                    (RFC 9457) turned into ApiError, a 401 sends the user to #/login.
 *   5. Problems                    — renders a problem into an alert region and marks the inputs
 *                                    its field errors point at ("shipping_address.city", "lines[0].quantity");
 *                                    fields are named by their human label, the path is only a title.
 *   6. Live feed                   — one EventSource per signed-in session; views subscribe to its
 *                                    "order" events and unsubscribe when the route changes.
 *   7. Catalog and order rows      — the catalog (cached for the session, re-read every few seconds
 *                                    while the shop or operator page is shown, and after live events);
 *                                    table rows shared by "My orders" and the operator page,
 *                                    updated in place by live events, paginated by next_cursor.
 *   8. Views                       — login, shop, orders, order detail, operator, analyst. Each view
 *                                    clones its <template> from index.html into <main> and wires it up.
 *                                    The analyst page reads /api/analytics/summary and /api/events,
 *                                    folds an order to a moment (?as_of=) and starts/follows replays.
 *   9. Chrome, router and boot     — header (nav by role, #whoami, #live, dev banner), hash routes
 *                                    with role guards, a per-route context whose cleanups run on leave.
 */
'use strict';

// ---------- 1. Constants and shared state ----------

const TOKEN_KEY = 'orderflow.token';
const SESSION_KEY = 'orderflow.session';
const REFRESH_KEY = 'orderflow.refresh';
const CANCELLABLE = new Set(['placed', 'confirmed']);
const STAFF_ROLES = new Set(['operator', 'analyst']);
const ADDRESS_KEY = 'orderflow.address';
const REASONS = { out_of_stock: 'Out of stock', payment_declined: 'Payment declined' };
const LIVE_RETRY_MS = 15000;
const CATALOG_REFRESH_MS = 5000;

/** Human names for the API's field paths (normalized: "lines.0.quantity", "shipping_address.city"). */
const FIELD_LABELS = {
  customer_id: 'Name',
  role: 'Role',
  lines: 'Items',
  'shipping_address': 'Shipping address',
  'shipping_address.name': 'Name',
  'shipping_address.line1': 'Address line 1',
  'shipping_address.line2': 'Address line 2',
  'shipping_address.city': 'City',
  'shipping_address.postal_code': 'Postal code',
  'shipping_address.country': 'Country',
  carrier: 'Carrier',
  tracking: 'Tracking number',
  quantity: 'Quantity',
  sku: 'SKU',
  reason: 'Cancellation reason',
};

const state = {
  loginNotice: '',        // shown once on the login page, e.g. after a 401
  lastPlaced: null,       // {order_id, version} of the order just placed (read-your-writes on #/orders)
  orderAttempt: null,     // {key, body}: an Idempotency-Key is reused only to retry the same body
  keepOrderResult: false, // keep #order-result visible across the next route change
};

// ---------- 2. Session ----------

/** localStorage for what outlives a tab (the last address), sessionStorage for tokens. */
function area(kind) {
  return kind === 'session' ? sessionStorage : localStorage;
}
function storageGet(key, kind = 'local') {
  try { return area(kind).getItem(key); } catch { return null; }
}
function storageSet(key, value, kind = 'local') {
  try { area(kind).setItem(key, value); } catch { /* private mode: session lasts for this page only */ }
}
function storageRemove(key, kind = 'local') {
  try { area(kind).removeItem(key); } catch { /* nothing stored */ }
}

const session = {
  token() { return storageGet(TOKEN_KEY, 'session'); },
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
  role() { const info = this.info(); return info ? info.role : ''; },
  save(token, info) {
    storageSet(TOKEN_KEY, token, 'session');
    storageSet(SESSION_KEY, JSON.stringify(info), 'session');
  },
  clear() {
    storageRemove(TOKEN_KEY, 'session');
    storageRemove(SESSION_KEY, 'session');
    storageRemove(REFRESH_KEY, 'session');
    clearTimeout(auth.renewTimer);
    $('#session-banner').hidden = true;
  },
};

/**
 * How this server signs users in (GET /api/auth/config, read at boot): `development` (the dev
 * login form), `oidc` (sign in at the provider; `oidc` holds the oidc.mjs module and `doc` its
 * discovery document once read) or `shared_secret` (tokens come from elsewhere).
 */
const auth = { config: { mode: 'development' }, oidc: null, doc: null, renewTimer: 0 };

async function loadAuthConfig() {
  try {
    const { data } = await api('/api/auth/config', { anonymous: true });
    if (data && data.mode) auth.config = data;
  } catch {
    // An older server without the endpoint has the development login.
  }
  if (auth.config.mode === 'oidc') auth.oidc = await import('/oidc.mjs');
}

async function providerDoc() {
  if (!auth.doc) auth.doc = await auth.oidc.discover(auth.config.issuer);
  return auth.doc;
}

/** The provider sends users back to the UI's root; the hash route is kept aside meanwhile. */
function redirectUri() {
  return `${location.origin}/`;
}

/** Leaves for the provider's sign-in page; the PKCE verifier and state wait in sessionStorage. */
async function startProviderSignIn() {
  const o = auth.oidc;
  if (!auth.config.client_id) throw new Error('This server names no OpenID client for the web UI (ORDERFLOW_OIDC_CLIENT_ID).');
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
async function finishProviderSignIn() {
  const o = auth.oidc;
  const back = o && o.callbackParams(location.search);
  if (!back) return;
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
    state.loginNotice = err.message || 'Signing in failed.';
    navigate('#/login', true);
  }
}

/** Keeps the provider's tokens, with who the API says the caller is (roles are its call). */
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

function scheduleRenewal() {
  clearTimeout(auth.renewTimer);
  const info = session.info();
  if (!info || !info.provider || !info.expires_at || !auth.oidc) return;
  auth.renewTimer = setTimeout(renewSession, auth.oidc.renewDelay(info.expires_at, Date.now()));
}

/** Before the token expires: a silent refresh, or else an offer to sign in again. */
async function renewSession() {
  const refreshToken = storageGet(REFRESH_KEY, 'session');
  if (refreshToken) {
    try {
      const o = auth.oidc;
      const tokens = await o.requestTokens(await providerDoc(), o.tokenForm({ clientId: auth.config.client_id, refreshToken }));
      await acceptProviderTokens(tokens, tokens.id_token ? o.decodeJwt(tokens.id_token) : null);
      return;
    } catch (err) {
      storageRemove(REFRESH_KEY, 'session');
      console.warn('renewing the session failed', err);
    }
  }
  const info = session.info();
  if (!info) return;
  const banner = $('#session-banner');
  $('#session-banner-text').textContent = `Your session ends at ${new Date(info.expires_at).toLocaleTimeString()}.`;
  banner.hidden = false;
}

/** Every role the caller holds: a provider may grant several (the dev login one). */
function rolesOf(info) {
  return info && Array.isArray(info.roles) && info.roles.length ? info.roles : [info ? info.role : ''];
}

function homeFor(role) {
  if (role === 'analyst') return '#/analyst';
  return STAFF_ROLES.has(role) ? '#/operator' : '#/shop';
}

function signIn(data, name, role) {
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

function logout() {
  const info = session.info();
  live.stop();
  session.clear();
  storageRemove(ADDRESS_KEY);
  catalogCache.clear();
  state.lastPlaced = null;
  state.orderAttempt = null;
  state.loginNotice = 'You have signed out.';
  renderChrome();
  announce('Signed out.');
  if (info && info.provider && auth.oidc) {
    // Sign out at the provider too, or its session would sign the next person straight back in.
    providerDoc()
      .then((doc) => auth.oidc.endSessionUrl(doc, { idToken: info.id_token, postLogoutRedirectUri: redirectUri(), clientId: auth.config.client_id }))
      .then((url) => (url ? location.assign(url) : navigate('#/login')))
      .catch(() => navigate('#/login'));
    return;
  }
  navigate('#/login');
}

/** The last shipping address this browser used, if it was this customer's. */
function rememberedAddress() {
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

function rememberAddress(address) {
  const info = session.info();
  storageSet(ADDRESS_KEY, JSON.stringify({ ...address, owner: (info && info.customer_id) || undefined }));
}

function expireSession() {
  if (!session.token()) return;
  live.stop();
  session.clear();
  state.loginNotice = 'Your session has ended. Please sign in again.';
  renderChrome();
  navigate('#/login', true);
}

// ---------- 3. DOM helpers and formatting ----------

const $ = (selector, root = document) => root.querySelector(selector);
const $$ = (selector, root = document) => Array.from(root.querySelectorAll(selector));

/** createElement with attributes; children are Nodes or strings (strings become text nodes). */
function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === 'text') node.textContent = String(value);
    else if (key === 'class') node.className = value;
    else if (key.startsWith('on') && typeof value === 'function') node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? '' : String(value));
  }
  if (node.dataset.limit) applyLimits(node);
  for (const child of children.flat()) {
    if (child !== null && child !== undefined && child !== false) node.append(child);
  }
  return node;
}

/** Replace <main>'s content with a clone of a <template> from index.html. */
function mount(main, templateId) {
  main.replaceChildren(document.getElementById(templateId).content.cloneNode(true));
  applyLimits(main);
}

// ----- the request contract's limits, from the served OpenAPI document -----

/**
 * Limits by "Schema.property" (e.g. "AddressBody.name"), read from /openapi.json at boot:
 * the server writes its own constants there, so an input cannot drift from what the server
 * accepts. Texts have a maxLength, numbers a maximum. Empty if the document could not be
 * read: the server still checks.
 * @type {Map<string, number>}
 */
const limits = new Map();
/** @type {Map<string, number>} */
const maxima = new Map();

async function loadLimits() {
  try {
    const res = await fetch('/openapi.json', { headers: { Accept: 'application/json' } });
    if (!res.ok) return;
    const schemas = ((await res.json()).components || {}).schemas || {};
    for (const [schema, body] of Object.entries(schemas)) {
      for (const [property, rule] of Object.entries(body.properties || {})) {
        if (rule && Number.isInteger(rule.maxLength)) limits.set(`${schema}.${property}`, rule.maxLength);
        if (rule && Number.isInteger(rule.maximum)) maxima.set(`${schema}.${property}`, rule.maximum);
      }
    }
  } catch (err) {
    console.warn('the request limits could not be read; the server still checks them', err);
  }
  applyLimits(document);
}

/** Sets maxlength on `root` and the inputs under it that name a limit (data-limit). */
function applyLimits(root) {
  const named = root.matches && root.matches('[data-limit]') ? [root] : [];
  const inputs = named.concat(root.querySelectorAll ? [...root.querySelectorAll('[data-limit]')] : []);
  for (const input of inputs) {
    const max = limits.get(input.dataset.limit);
    if (max !== undefined) input.maxLength = max;
    const maximum = maxima.get(input.dataset.limit);
    if (maximum !== undefined) input.max = String(maximum);
  }
}

function setBusy(button, busy, label) {
  if (!button) return;
  if (busy) {
    if (!button.dataset.label) button.dataset.label = button.textContent;
    if (label) button.textContent = label;
  } else if (button.dataset.label) {
    button.textContent = button.dataset.label;
    delete button.dataset.label;
  }
  button.disabled = busy;
  button.setAttribute('aria-busy', String(busy));
}

function announce(message) {
  const region = $('#announcer');
  region.textContent = '';
  // Setting the text a moment after clearing it makes screen readers repeat identical messages too.
  setTimeout(() => { region.textContent = message; }, 50);
}

function highlight(node) {
  if (typeof node.animate !== 'function') return;
  if (window.matchMedia && matchMedia('(prefers-reduced-motion: reduce)').matches) return;
  node.animate([{ backgroundColor: '#fff1b8' }, { backgroundColor: 'rgba(255, 241, 184, 0)' }], { duration: 1600 });
}

const digitsCache = new Map();
function currencyDigits(currency) {
  if (!currency) return 2;
  if (!digitsCache.has(currency)) {
    let digits = 2;
    try {
      digits = new Intl.NumberFormat('en', { style: 'currency', currency }).resolvedOptions().maximumFractionDigits;
    } catch { /* unknown code: assume cents */ }
    digitsCache.set(currency, digits);
  }
  return digitsCache.get(currency);
}

/** Integer minor units to text: formatMoney(1299, 'EUR') === '12.99 EUR'. */
function formatMoney(minor, currency) {
  const amount = Number(minor);
  if (minor === null || minor === undefined || !Number.isFinite(amount)) return '—';
  const digits = currencyDigits(currency);
  const text = (amount / 10 ** digits).toFixed(digits);
  return currency ? `${text} ${currency}` : text;
}

function formatTime(iso) {
  if (!iso) return '—';
  const date = new Date(iso);
  return Number.isNaN(date.getTime()) ? String(iso) : date.toLocaleString();
}

function timeEl(iso) {
  return el('time', { datetime: iso || undefined, text: formatTime(iso) });
}

/**
 * The last 8 hex digits of a UUID: v7 ids begin with a timestamp (orders placed close together
 * share their first digits), while their last digits, like a v5 id's, are effectively random.
 */
function shortId(id) {
  const text = String(id || '');
  const hex = text.replace(/-/g, '');
  return /^[0-9a-f]{32}$/i.test(hex) ? hex.slice(-8).toLowerCase() : text.slice(0, 8);
}

/** "the request has invalid fields" → "The request has invalid fields." */
function sentence(text) {
  const value = String(text || '').trim();
  if (!value) return '';
  const capital = value.charAt(0).toUpperCase() + value.slice(1);
  return /[.!?…]$/.test(capital) ? capital : `${capital}.`;
}

function orderHref(id) {
  return `#/orders/${encodeURIComponent(id)}`;
}

function orderPath(id, minVersion) {
  const base = `/api/orders/${encodeURIComponent(id)}`;
  return minVersion > 0 ? `${base}?min_version=${encodeURIComponent(minVersion)}` : base;
}

function prettyJson(value) {
  try { return JSON.stringify(value, null, 2); } catch { return String(value); }
}

function newIdempotencyKey() {
  if (window.crypto && typeof crypto.randomUUID === 'function') return crypto.randomUUID();
  // randomUUID exists only in secure contexts (https, localhost); build a v4 UUID otherwise.
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  bytes[6] = (bytes[6] & 0x0f) | 0x40;
  bytes[8] = (bytes[8] & 0x3f) | 0x80;
  const hex = Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

// ---------- 4. api() ----------

class ApiError extends Error {
  constructor(problem) {
    super(problem.detail || problem.title || 'Request failed');
    this.name = 'ApiError';
    this.problem = problem;
    this.status = problem.status;
    this.sessionExpired = false;
  }
}

/** A problem built in the browser (client-side validation), shaped like the server's. */
function clientProblem(title, errors = []) {
  return new ApiError({ title, status: 0, errors });
}

/**
 * fetch() for the orderflow API. Resolves {status, data, headers} on 2xx; rejects with ApiError
 * carrying the problem+json body otherwise (status 0 = network failure). `anonymous` leaves the
 * bearer token off (the development login).
 */
async function api(path, { method = 'GET', body, headers = {}, anonymous = false, token: explicit } = {}) {
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
    });
  } catch {
    throw new ApiError({
      title: 'Network error',
      status: 0,
      detail: 'The server could not be reached. Check the connection and try again.',
    });
  }

  const data = await readBody(res);
  if (res.ok) return { status: res.status, data, headers: res.headers };

  const err = new ApiError(toProblem(res, data));
  if (res.status === 401 && token && !explicit) {
    err.sessionExpired = true;
    expireSession();
  }
  throw err;
}

async function readBody(res) {
  let text = '';
  try { text = await res.text(); } catch { return null; }
  if (!text) return null;
  if (/json/i.test(res.headers.get('Content-Type') || '')) {
    try { return JSON.parse(text); } catch { return text; }
  }
  return text;
}

function toProblem(res, data) {
  const fallbackTitle = res.statusText || `HTTP ${res.status}`;
  const problem = data && typeof data === 'object' && !Array.isArray(data)
    ? { ...data, title: data.title || fallbackTitle, status: data.status || res.status }
    : { title: fallbackTitle, status: res.status, detail: typeof data === 'string' ? data.slice(0, 300) : '' };
  const retryAfter = res.headers.get('Retry-After');
  if (retryAfter) problem.retry_after = retryAfter;
  return problem;
}

/** A retry may repeat the same command: the server may or may not have acted on it. */
function isRetryable(err) {
  return !err.status || err.status === 408 || err.status === 429 || err.status >= 500;
}

// ---------- 5. Problems ----------

/** "shipping_address.city", "/shipping_address/city", "lines[0].quantity" → dotted "lines.0.quantity". */
function normalizeFieldPath(field) {
  return String(field || '')
    .trim()
    .replace(/^\$\.?/, '')
    .replace(/^\//, '')
    .replace(/\//g, '.')
    .replace(/\[(\d+)\]/g, '.$1')
    .replace(/^body\./, '');
}

/** An input's label without hints: "Country (2 letters, e.g. DE)" → "Country". */
function labelText(input) {
  const label = input.labels && input.labels[0];
  if (!label) return humanField(input.name || input.id);
  const copy = label.cloneNode(true);
  for (const node of $$('input, select, textarea, .muted, .hint', copy)) node.remove();
  return copy.textContent.replace(/\s+/g, ' ').replace(/\s*\([^)]*\)\s*$/, '').trim() || humanField(input.name || input.id);
}

/** A field path in words: a known label, "Item 2" for lines[1], else the last segment spelled out. */
function humanField(field) {
  const path = normalizeFieldPath(field);
  if (!path) return '';
  if (FIELD_LABELS[path]) return FIELD_LABELS[path];
  const line = /^lines\.(\d+)(?:\.(\w+))?$/.exec(path);
  if (line) {
    const item = `item ${Number(line[1]) + 1}`;
    return line[2] ? `${humanField(line[2])} of ${item}` : `Item ${Number(line[1]) + 1}`;
  }
  const last = path.split('.').pop().replace(/_/g, ' ');
  return last.charAt(0).toUpperCase() + last.slice(1);
}

function clearInvalid(root) {
  for (const node of $$('[aria-invalid]', root)) node.removeAttribute('aria-invalid');
}

/**
 * Render a problem (or nothing, when err is null) into an alert region. Field errors are listed;
 * the ones resolveField() maps to an input mark it aria-invalid and get a button that focuses it.
 * Returns the first such input.
 */
function showProblem(box, err, resolveField) {
  box.replaceChildren();
  if (!err || err.sessionExpired) {
    box.hidden = true;
    return null;
  }
  const problem = err.problem || { title: err.message || String(err) };
  box.append(el('p', { class: 'problem-title' }, el('strong', { text: problem.title || 'Something went wrong' })));
  if (problem.detail && problem.detail !== problem.title) box.append(el('p', { text: sentence(problem.detail) }));
  if (problem.retry_after) box.append(el('p', { text: `Try again after ${problem.retry_after}${/^\d+$/.test(problem.retry_after) ? ' s' : ''}.` }));

  let first = null;
  const errors = Array.isArray(problem.errors) ? problem.errors : [];
  if (errors.length) {
    const list = el('ul');
    for (const fieldError of errors) {
      const input = fieldError.input || (resolveField && fieldError.field ? resolveField(String(fieldError.field)) : null);
      if (input) {
        input.setAttribute('aria-invalid', 'true');
        first = first || input;
      }
      list.append(fieldErrorItem(fieldError, input));
    }
    box.append(list);
  }
  box.hidden = false;
  return first;
}

/**
 * One field error in words: "Name is required", "Quantity of Stoneware mug: Enter a whole number…".
 * The label links to the input when there is one; the machine path is kept only as a tooltip.
 */
function fieldErrorItem(fieldError, input) {
  const message = String(fieldError.message || 'is not valid').trim();
  const label = input ? labelText(input) : fieldError.label || humanField(fieldError.field);
  const item = el('li', { 'data-field': fieldError.field || undefined, title: fieldError.field || undefined });
  if (!label) {
    item.append(sentence(message));
    return item;
  }
  // Server messages continue the sentence ("is required"); client ones stand alone ("Required.").
  const rest = /^[a-z]/.test(message) ? ` ${message}${/[.!?]$/.test(message) ? '' : '.'}` : `: ${message}`;
  if (input) {
    item.append(el('button', { type: 'button', class: 'link', text: label, onclick: () => input.focus() }), rest);
  } else {
    item.append(label, rest);
  }
  return item;
}

// ---------- 6. Live feed (Server-Sent Events) ----------

const live = {
  source: null,
  listeners: new Set(),
  retryTimer: 0,

  /** Open the session's one EventSource (no-op when already open or signed out). */
  start() {
    const token = session.token();
    if (this.source || !token) return;
    // EventSource cannot send headers; the server accepts the token as a query parameter here only.
    const source = new EventSource(`/api/notifications/stream?access_token=${encodeURIComponent(token)}`);
    let dropped = false;
    source.addEventListener('open', () => {
      setLiveIndicator(true);
      // Updates sent while we were away are not replayed: re-read what is on screen.
      if (dropped) this.resync();
      dropped = false;
    });
    source.addEventListener('error', () => {
      dropped = true;
      setLiveIndicator(false);
      // EventSource reconnects by itself after network errors. It gives up (CLOSED) only when
      // the server answers with an error status; then try once more later with a fresh source.
      if (source.readyState === EventSource.CLOSED && this.source === source) {
        this.source = null;
        clearTimeout(this.retryTimer);
        this.retryTimer = setTimeout(() => this.start(), LIVE_RETRY_MS);
      }
    });
    source.addEventListener('order', (event) => this.dispatch(event.data));
    // The server skipped updates this (slow) client could not take: re-read.
    source.addEventListener('resync', () => this.resync());
    this.source = source;
  },

  /** Re-renders views that show orders; never the shop, whose form may hold the user's input. */
  resync() {
    if (/^#\/(orders|operator)/.test(location.hash)) route();
  },

  stop() {
    clearTimeout(this.retryTimer);
    if (this.source) this.source.close();
    this.source = null;
    setLiveIndicator(false);
  },

  /** Subscribe to order events; returns the unsubscribe function. */
  on(listener) {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  },

  dispatch(raw) {
    let event;
    try { event = JSON.parse(raw); } catch { return; }
    if (!event || !event.order_id || !event.status) return;
    event.version = Number(event.version) || 0;
    for (const listener of Array.from(this.listeners)) {
      try { listener(event); } catch (err) { console.error('order event listener failed', err); }
    }
  },
};

function setLiveIndicator(connected) {
  const indicator = $('#live');
  indicator.textContent = connected ? 'live' : 'offline';
  indicator.dataset.state = connected ? 'live' : 'offline';
}

/** Subscribe a view to order events for as long as its route is shown. */
function listen(ctx, listener) {
  ctx.cleanups.push(live.on((event) => { if (ctx.alive) listener(event); }));
}

// ---------- 7. Catalog and order rows ----------

/** GET /api/catalog (public), cached for the session; load(true) re-reads it. */
const catalogCache = {
  items: null,
  pending: null,
  load(fresh = false) {
    if (this.items && !fresh) return Promise.resolve(this.items);
    if (!this.pending) {
      this.pending = api('/api/catalog')
        .then(({ data }) => {
          this.items = Array.isArray(data) ? data : [];
          return this.items;
        })
        .finally(() => { this.pending = null; });
    }
    return this.pending;
  },
  find(sku) {
    return (this.items || []).find((item) => item.sku === sku) || null;
  },
  clear() {
    this.items = null;
  },
};

/**
 * While the route is shown, re-read the catalog every CATALOG_REFRESH_MS and shortly after every
 * live order event, and hand it to update(). Returns a function that refreshes at once.
 */
function watchCatalog(ctx, update) {
  let running = false;
  let again = false;
  let soon = 0;

  async function refresh() {
    if (running) { again = true; return; }
    running = true;
    try {
      do {
        again = false;
        try {
          const items = await catalogCache.load(true);
          if (ctx.alive) update(items);
        } catch {
          // A passing failure: the next tick tries again (a lost session is handled by api()).
        }
      } while (again && ctx.alive);
    } finally {
      running = false;
    }
  }

  const timer = setInterval(() => { if (!document.hidden) refresh(); }, CATALOG_REFRESH_MS);
  listen(ctx, () => {
    clearTimeout(soon);
    soon = setTimeout(refresh, 300); // several events in a burst cause one read
  });
  ctx.cleanups.push(() => {
    clearInterval(timer);
    clearTimeout(soon);
  });
  return refresh;
}

/** Sets a cell's text; returns true (and highlights the cell) when the value changed. */
function updateText(node, text, flash = true) {
  if (!node || node.textContent === text) return false;
  node.textContent = text;
  if (flash) highlight(node);
  return true;
}

function availableText(item) {
  return item.available === undefined || item.available === null ? '—' : String(item.available);
}

/** Shown next to a rejected or cancelled status: the rejection reason or the cancellation note. */
function reasonText(status, reason) {
  if (!reason || (status !== 'rejected' && status !== 'cancelled')) return '';
  return REASONS[reason] || String(reason);
}

function setReason(node, status, reason) {
  const text = reasonText(status, reason);
  node.hidden = !text;
  node.replaceChildren(...(text ? [el('span', { class: 'visually-hidden', text: 'Reason: ' }), text] : []));
}

/**
 * The status cell: <span class="status"> holds exactly the status word (tests and scripts read
 * it); the reason, when there is one, is a sibling <span class="reason">.
 */
function statusCell(status, reason) {
  const reasonNode = el('span', { class: 'reason' });
  setReason(reasonNode, status, reason);
  return el('td', { class: 'status-cell' },
    el('span', { class: 'status', 'data-status': status, text: status }),
    reasonNode);
}

function orderLink(id) {
  return el('a', { href: orderHref(id), title: `Order ${id}`, text: shortId(id) });
}

/** The order cell: the link and, on narrow screens only, facts whose columns are hidden there. */
function orderCell(view, facts) {
  return el('td', { class: 'order-cell' },
    orderLink(view.order_id),
    el('span', { class: 'cell-facts narrow-only' }, ...facts));
}

function itemCount(view) {
  return (view.lines || []).reduce((sum, line) => sum + (Number(line.quantity) || 0), 0);
}

function customerOrderRow(view) {
  return el('tr', { 'data-order-id': view.order_id, 'data-version': view.version, 'data-status': view.status },
    orderCell(view, [timeEl(view.placed_at)]),
    el('td', { class: 'wide-only' }, timeEl(view.placed_at)),
    el('td', { class: 'num wide-only', text: String(itemCount(view)) }),
    el('td', { class: 'num', text: formatMoney(view.total, view.currency) }),
    statusCell(view.status, view.reason));
}

/**
 * Keeps a <tbody> of order rows current: adds pages, applies live status events in place, and
 * fetches (then prepends) orders it has not seen yet.
 */
function orderRows({ tbody, ctx, build, accept = () => true, onStatusChange = () => {}, onAdd = () => {} }) {
  const inflight = new Map(); // order_id → latest event that arrived while its view was being fetched

  const find = (id) => Array.from(tbody.rows).find((row) => row.dataset.orderId === id) || null;

  function applyStatus(row, event) {
    const known = Number(row.dataset.version) || 0;
    if (event.version && known && event.version < known) return false; // older than what is shown
    if (event.version === known && row.dataset.status === event.status) return false; // duplicate
    row.dataset.version = String(event.version || known);
    row.dataset.status = event.status;
    const cell = $('.status', row);
    cell.textContent = event.status;
    cell.dataset.status = event.status;
    setReason($('.reason', row), event.status, event.reason);
    onStatusChange(row, event.status);
    highlight(row);
    return true;
  }

  function add(view, prepend = false) {
    if (!view || !view.order_id || find(view.order_id)) return;
    const row = build(view);
    if (prepend) tbody.prepend(row); else tbody.append(row);
    onAdd(row);
  }

  async function ensure(id, minVersion, event = null) {
    if (find(id)) return;
    if (inflight.has(id)) {
      if (event) inflight.set(id, event);
      return;
    }
    inflight.set(id, event);
    try {
      const { data } = await api(orderPath(id, minVersion));
      if (!ctx.alive || !data) return;
      if (accept(data)) add(data, true);
      const later = inflight.get(id);
      const row = find(id);
      if (later && row) applyStatus(row, later);
    } catch {
      // Not visible to this caller (404) or a passing failure: the next event or reload shows it.
    } finally {
      inflight.delete(id);
    }
  }

  /** Apply a live event; returns true when a shown row changed. */
  function onEvent(event) {
    const row = find(event.order_id);
    if (row) return applyStatus(row, event);
    ensure(event.order_id, event.version, event);
    return false;
  }

  return { add, ensure, onEvent, count: () => tbody.rows.length, clear: () => tbody.replaceChildren() };
}

/** "Load more" pagination over GET /api/orders with next_cursor. */
function orderPager({ ctx, rows, limit, query = () => ({}), more, empty, errors }) {
  let cursor = null;
  let generation = 0;

  async function load(reset = false) {
    if (reset) {
      generation += 1;
      cursor = null;
      rows.clear();
      more.hidden = true;
    }
    const mine = generation;
    const params = new URLSearchParams({ limit: String(limit), ...query() });
    if (cursor) params.set('cursor', cursor);
    setBusy(more, true, 'Loading…');
    try {
      const { data } = await api(`/api/orders?${params}`);
      if (!ctx.alive || mine !== generation) return;
      const items = Array.isArray(data) ? data : (data && data.items) || [];
      items.forEach((view) => rows.add(view));
      cursor = data && !Array.isArray(data) ? data.next_cursor || null : null;
      more.hidden = !cursor;
      empty.hidden = rows.count() > 0;
      showProblem(errors, null);
    } catch (err) {
      if (ctx.alive && mine === generation) showProblem(errors, err);
    } finally {
      setBusy(more, false);
    }
  }

  more.addEventListener('click', () => load(false));
  return { load };
}

// ---------- 8. Views ----------
// A view is ({main, ctx, params}) => void | Promise. ctx.alive turns false when the route
// changes; async work checks it before touching the DOM. ctx.cleanups run on leave.

// ----- #/login -----

function loginView({ main, ctx }) {
  mount(main, 'tpl-login');
  const mode = auth.config.mode;
  $('#login-dev', main).hidden = mode !== 'development';
  $('#login-provider', main).hidden = mode !== 'oidc';
  $('#login-external', main).hidden = mode !== 'shared_secret';
  const providerButton = $('#login-provider-button', main);
  providerButton.addEventListener('click', async () => {
    setBusy(providerButton, true, 'Opening sign-in…');
    try {
      await startProviderSignIn();
    } catch (err) {
      if (!ctx.alive) return;
      setBusy(providerButton, false);
      showProblem($('#login-errors', main), new ApiError({ title: 'Cannot sign in here', status: 0, detail: err.message }));
    }
  });
  const form = $('#login-form', main);
  const nameInput = $('#login-name', main);
  const roleSelect = $('#login-role', main);
  const errors = $('#login-errors', main);
  const info = $('#login-info', main);

  if (state.loginNotice) {
    info.textContent = state.loginNotice;
    info.hidden = false;
    state.loginNotice = '';
  }
  const current = session.info();
  if (current) {
    nameInput.value = current.name || '';
    roleSelect.value = current.role || 'customer';
  }

  form.addEventListener('input', (event) => event.target.removeAttribute('aria-invalid'));
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    clearInvalid(form);
    showProblem(errors, null);
    const name = nameInput.value.trim();
    const role = roleSelect.value;
    if (!name) {
      showProblem(errors, clientProblem('Enter a name to sign in', [{ field: 'customer_id', message: 'Required.', input: nameInput }]));
      nameInput.focus();
      return;
    }
    const button = $('#login-submit', main);
    setBusy(button, true, 'Signing in…');
    try {
      const { data } = await api('/api/dev/token', { method: 'POST', body: { customer_id: name, role }, anonymous: true });
      if (!data || !data.token) throw new ApiError({ title: 'Unexpected response', status: 200, detail: 'The server did not return a token.' });
      signIn(data, name, role);
    } catch (err) {
      if (!ctx.alive) return;
      if (err.status === 404) err.problem.detail = 'The development login is not enabled on this server.';
      showProblem(errors, err);
      errors.focus();
    } finally {
      if (ctx.alive) setBusy(button, false);
    }
  });
}

// ----- #/shop -----

const ADDRESS_FIELDS = [
  // [JSON key, input selector, required]
  ['name', '#ship-name', true],
  ['line1', '#ship-line1', true],
  ['line2', '#ship-line2', false],
  ['city', '#ship-city', true],
  ['postal_code', '#ship-postal', true],
  ['country', '#ship-country', true],
];

/** Item name with its SKU in small text below: used by the shop and the order page. */
function itemLabel(name, sku) {
  return [el('span', { class: 'item-name', text: name || sku }), name ? el('code', { class: 'sku', text: sku }) : null];
}

/**
 * A shop row. Price and availability have their own columns on wide screens; on narrow ones
 * those columns are hidden and the same facts are shown under the item name instead.
 */
function catalogRow(item, index) {
  const inputId = `qty-${index}`;
  const name = item.name || item.sku;
  const price = formatMoney(item.unit_price, item.currency);
  return el('tr', { 'data-sku': item.sku, class: Number(item.available) === 0 ? 'sold-out' : undefined },
    el('th', { scope: 'row' },
      ...itemLabel(item.name, item.sku),
      el('span', { class: 'cell-facts narrow-only' },
        el('span', { 'data-price': '', text: price }), ' · ',
        el('span', { 'data-available': '', class: 'available', text: availableText(item) }), ' available')),
    el('td', { class: 'num wide-only', 'data-price': '', text: price }),
    el('td', { class: 'num wide-only available', 'data-available': '', text: availableText(item) }),
    el('td', { class: 'num' },
      el('label', { for: inputId, class: 'visually-hidden', text: `Quantity of ${name}` }),
      el('input', {
        id: inputId, class: 'qty', type: 'number', inputmode: 'numeric', min: 0, step: 1, value: 0,
        'data-limit': 'LineBody.quantity',
        name: `qty-${item.sku}`, 'data-sku': item.sku,
      })));
}

/** Refresh a shop row's numbers in place; the quantity the user typed is left alone. */
function updateCatalogRow(row, item) {
  row.classList.toggle('sold-out', Number(item.available) === 0);
  for (const node of $$('[data-available]', row)) updateText(node, availableText(item));
  for (const node of $$('[data-price]', row)) updateText(node, formatMoney(item.unit_price, item.currency));
}

function qtyInputs(form) {
  return $$('input.qty', form);
}

function qtyInputFor(form, sku) {
  return qtyInputs(form).find((input) => input.dataset.sku === sku) || null;
}

function readQuantity(input) {
  const raw = input.value.trim();
  return raw === '' ? 0 : Number(raw);
}

function collectLines(form) {
  const lines = [];
  for (const input of qtyInputs(form)) {
    const quantity = readQuantity(input);
    if (Number.isInteger(quantity) && quantity > 0) lines.push({ sku: input.dataset.sku, quantity });
  }
  return lines;
}

function collectAddress(form) {
  const address = {};
  for (const [key, selector] of ADDRESS_FIELDS) {
    let value = $(selector, form).value.trim();
    if (key === 'country') value = value.toUpperCase();
    if (value || key !== 'line2') address[key] = value;
  }
  return address;
}

/** Client-side checks, reported exactly like the server's field errors. */
function validateOrderForm(form, lines) {
  const errors = [];
  // The server's most per line, when the OpenAPI document could be read (it checks anyway).
  const most = maxima.get('LineBody.quantity');
  for (const input of qtyInputs(form)) {
    const quantity = readQuantity(input);
    if (!Number.isInteger(quantity) || quantity < 0 || (most !== undefined && quantity > most)) {
      const range = most === undefined ? 'a whole number, 0 or more' : `a whole number from 0 to ${most}`;
      errors.push({ field: `lines[sku=${input.dataset.sku}].quantity`, message: `Enter ${range}.`, input });
    }
  }
  if (!errors.length && !lines.length) {
    errors.push({ field: 'lines', message: 'Choose a quantity for at least one item.' });
  }
  for (const [key, selector, required] of ADDRESS_FIELDS) {
    const input = $(selector, form);
    const value = input.value.trim();
    const field = `shipping_address.${key}`;
    if (required && !value) errors.push({ field, message: 'Required.', input });
    else if (key === 'country' && value && !/^[A-Za-z]{2}$/.test(value)) {
      errors.push({ field, message: 'Use a two-letter country code, e.g. DE.', input });
    }
  }
  return errors;
}

/** Maps a server field path onto the order form's inputs. */
function orderFieldResolver(form, submittedLines) {
  const addressInputs = Object.fromEntries(ADDRESS_FIELDS.map(([key, selector]) => [key, selector]));
  return (field) => {
    const path = normalizeFieldPath(field);
    let match = /^shipping_address\.(\w+)/.exec(path);
    if (match && addressInputs[match[1]]) return $(addressInputs[match[1]], form);
    match = /^lines\.(\d+)(?:\.|$)/.exec(path);
    if (match) {
      const line = submittedLines[Number(match[1])];
      return line ? qtyInputFor(form, line.sku) : null;
    }
    return null;
  };
}

function updateCartTotal(form, catalog) {
  const output = $('#cart-total', form);
  const prices = new Map(catalog.map((item) => [item.sku, item]));
  const totals = new Map();
  for (const line of collectLines(form)) {
    const item = prices.get(line.sku);
    if (!item) continue;
    totals.set(item.currency, (totals.get(item.currency) || 0) + line.quantity * Number(item.unit_price));
  }
  output.textContent = totals.size
    ? Array.from(totals, ([currency, minor]) => formatMoney(minor, currency)).join(' + ')
    : '—';
}

function showOrderResult(orderId) {
  const box = $('#order-result');
  const link = $('#order-link');
  link.href = orderHref(orderId);
  link.textContent = `View order ${shortId(orderId)}`;
  box.hidden = false;
  $('#order-result-text').textContent = 'Order placed.';
  state.keepOrderResult = true;
}

async function shopView({ main, ctx }) {
  mount(main, 'tpl-shop');
  const form = $('#order-form', main);
  const tbody = $('#catalog tbody', main);
  const errors = $('#form-errors', main);
  const button = $('#place-order', main);
  let catalog = [];

  const saved = rememberedAddress();
  if (saved) {
    for (const [key, selector] of ADDRESS_FIELDS) {
      if (typeof saved[key] === 'string') $(selector, form).value = saved[key];
    }
  }

  /** Show a catalog read: new rows for new SKUs, fresh numbers (never the inputs) for known ones. */
  function showCatalog(items) {
    catalog = items;
    if (!items.length) {
      tbody.replaceChildren(el('tr', {}, el('td', { colspan: 4, class: 'muted', text: 'The catalog is empty.' })));
      return;
    }
    for (const row of Array.from(tbody.rows)) if (!row.dataset.sku) row.remove(); // "Loading…"
    const rowsBySku = new Map(Array.from(tbody.rows, (row) => [row.dataset.sku, row]));
    for (const item of items) {
      const row = rowsBySku.get(item.sku);
      if (row) updateCatalogRow(row, item);
      else tbody.append(catalogRow(item, tbody.rows.length));
    }
    updateCartTotal(form, catalog);
  }

  form.addEventListener('input', (event) => {
    event.target.removeAttribute('aria-invalid');
    if (event.target.matches('input.qty')) updateCartTotal(form, catalog);
  });

  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    if (button.disabled) return;
    clearInvalid(form);
    showProblem(errors, null);

    const lines = collectLines(form);
    const invalid = validateOrderForm(form, lines);
    if (invalid.length) {
      const first = showProblem(errors, clientProblem('Please check the order', invalid));
      (first || (lines.length ? errors : qtyInputs(form)[0]) || errors).focus();
      return;
    }

    const body = { lines, shipping_address: collectAddress(form) };
    const bodyJson = JSON.stringify(body);
    // One key per submission attempt; a retry of the very same order after a failure that may
    // not have reached the server (network error, 5xx) keeps the key, so it cannot order twice.
    if (!state.orderAttempt || state.orderAttempt.body !== bodyJson) {
      state.orderAttempt = { key: newIdempotencyKey(), body: bodyJson };
    }

    setBusy(button, true, 'Placing order…');
    try {
      const { data } = await api('/api/orders', {
        method: 'POST',
        body,
        headers: { 'Idempotency-Key': state.orderAttempt.key },
      });
      state.orderAttempt = null;
      if (!data || !data.order_id) throw new ApiError({ title: 'Unexpected response', status: 202, detail: 'The server did not return an order id.' });
      state.lastPlaced = { order_id: data.order_id, version: Number(data.version) || 0 };
      rememberAddress(body.shipping_address);
      showOrderResult(data.order_id);
      if (ctx.alive) navigate('#/orders');
    } catch (err) {
      if (!isRetryable(err)) state.orderAttempt = null;
      if (!ctx.alive) return;
      const first = showProblem(errors, err, orderFieldResolver(form, lines));
      (first || errors).focus();
    } finally {
      if (ctx.alive) setBusy(button, false);
    }
  });

  // Stock moves while the page is open: keep the numbers current (the timer stops on leave).
  watchCatalog(ctx, showCatalog);
  try {
    const items = await catalogCache.load(true);
    if (ctx.alive) showCatalog(items);
  } catch (err) {
    if (!ctx.alive || tbody.querySelector('tr[data-sku]')) return;
    tbody.replaceChildren(el('tr', {}, el('td', { colspan: 4, class: 'muted', text: 'The catalog could not be loaded.' })));
    showProblem(errors, err);
  }
}

// ----- #/orders -----

async function ordersView({ main, ctx }) {
  mount(main, 'tpl-orders');
  if (STAFF_ROLES.has(session.role())) $('#orders-title', main).textContent = 'All orders';
  const empty = $('#orders-empty', main);
  const rows = orderRows({
    tbody: $('#orders tbody', main), ctx, build: customerOrderRow, onAdd: () => { empty.hidden = true; },
  });
  const pager = orderPager({
    ctx, rows, limit: 20, more: $('#load-more', main), empty, errors: $('#orders-errors', main),
  });

  listen(ctx, (event) => {
    if (rows.onEvent(event)) announce(`Order ${shortId(event.order_id)} is now ${event.status}.`);
  });

  await pager.load(true);
  // Read-your-writes: the list is a projection and may not hold the order just placed yet.
  const placed = state.lastPlaced;
  state.lastPlaced = null;
  if (placed && ctx.alive) {
    await rows.ensure(placed.order_id, placed.version);
  }
}

// ----- #/orders/<id> -----

function renderAddress(node, address) {
  node.replaceChildren();
  if (!address) return;
  const lines = [
    address.name,
    address.line1,
    address.line2,
    [address.postal_code, address.city].filter(Boolean).join(' '),
    address.country,
  ].filter(Boolean);
  lines.forEach((line, i) => {
    if (i) node.append(el('br'));
    node.append(line);
  });
}

function renderMeta(dl, view) {
  const entries = [
    ['Order id', el('code', { text: view.order_id })],
    ['Customer', el('code', { text: view.customer_id || '—' })],
    ['Placed', timeEl(view.placed_at)],
    ['Updated', timeEl(view.updated_at)],
    ['Version', String(view.version)],
  ];
  dl.replaceChildren(...entries.flatMap(([term, value]) => [el('dt', { text: term }), el('dd', {}, value)]));
}

function renderLines(root, view) {
  const tbody = $('#order-lines tbody', root);
  tbody.replaceChildren(...(view.lines || []).map((line) => el('tr', { 'data-sku': line.sku },
    el('th', { scope: 'row' },
      ...itemLabel((catalogCache.find(line.sku) || {}).name, line.sku),
      el('span', { class: 'cell-facts narrow-only', text: `${formatMoney(line.unit_price, view.currency)} each` })),
    el('td', { class: 'num', text: String(line.quantity) }),
    el('td', { class: 'num wide-only', text: formatMoney(line.unit_price, view.currency) }),
    el('td', { class: 'num', text: formatMoney(Number(line.unit_price) * Number(line.quantity), view.currency) }))));
  $('#order-total', root).textContent = formatMoney(view.total, view.currency);
}

/** "cancelled by an operator" etc., from the OrderCancelled event's metadata.actor. */
function cancelledBy(events) {
  const cancelled = (Array.isArray(events) ? events : []).filter((event) => event.event_type === 'OrderCancelled').pop();
  const actor = String((cancelled && cancelled.metadata && cancelled.metadata.actor) || '');
  if (actor.startsWith('customer:')) {
    const info = session.info();
    return info && info.role === 'customer' ? 'Cancelled by you' : 'Cancelled by the customer';
  }
  if (actor.startsWith('operator:')) return 'Cancelled by an operator';
  return 'Cancelled';
}

function renderReason(root, view, events) {
  const node = $('#order-reason', root);
  if (view.status === 'cancelled') {
    node.hidden = false;
    node.dataset.reason = view.reason || '';
    node.replaceChildren(`${cancelledBy(events)}.`);
    if (view.reason) node.append(' Reason: ', el('strong', { text: view.reason }));
    return;
  }
  node.hidden = !view.reason;
  if (view.reason) {
    node.dataset.reason = view.reason;
    node.replaceChildren('Reason: ', el('strong', { text: REASONS[view.reason] || view.reason }));
  }
}

function renderOrder(root, view, events) {
  const detail = $('#order-detail', root);
  detail.dataset.version = String(view.version);
  detail.dataset.status = view.status;
  $('#order-title', root).textContent = `Order ${shortId(view.order_id)}`;
  document.title = `Order ${shortId(view.order_id)} · orderflow`;

  const status = $('.status', detail);
  if (status.textContent !== view.status) {
    status.textContent = view.status;
    status.dataset.status = view.status;
  }

  renderReason(root, view, events);

  const tracking = $('#order-tracking', root);
  tracking.hidden = !(view.tracking || view.carrier);
  if (!tracking.hidden) {
    tracking.replaceChildren('Shipped with ', el('strong', { text: view.carrier || 'carrier' }));
    if (view.tracking) tracking.append(', tracking number ', el('code', { text: view.tracking }));
  }

  const cancellable = CANCELLABLE.has(view.status) && session.role() !== 'analyst';
  $('#cancel-form', root).hidden = !cancellable;
  if (!cancellable) $('#cancel-confirm', root).hidden = true;
  const operator = session.role() === 'operator';
  $('#ship-order-form', root).hidden = !(operator && view.status === 'confirmed');
  $('#deliver-order', root).hidden = !(operator && view.status === 'shipped');
  $('#order-actions', root).hidden = !(operator && (view.status === 'confirmed' || view.status === 'shipped'));
  renderLines(root, view);
  renderAddress($('#order-address', root), view.shipping_address);
  renderMeta($('#order-meta', root), view);
  $('#status-history', root).replaceChildren(...(view.history || []).map((entry) => el('li', {},
    el('span', { class: 'hist-status', 'data-status': entry.status, text: entry.status }), ' — ', timeEl(entry.at))));
}

function eventItem(event, open) {
  return el('li', { 'data-version': event.version, 'data-event-id': event.event_id },
    el('div', { class: 'event-head' },
      el('span', { class: 'event-version', text: `v${event.version}` }), ' ',
      el('strong', { class: 'event-type', text: event.event_type }), ' ',
      el('span', { class: 'muted', text: `schema ${event.schema_version}` }), ' ',
      timeEl(event.occurred_at)),
    el('details', { open },
      el('summary', { text: 'Payload' }),
      el('pre', {}, el('code', { text: prettyJson(event.payload) })),
      event.metadata ? el('p', { class: 'muted', text: 'Metadata' }) : null,
      event.metadata ? el('pre', {}, el('code', { text: prettyJson(event.metadata) })) : null));
}

function renderTimeline(root, events) {
  const list = $('#timeline', root);
  const note = $('#timeline-note', root);
  const open = new Set($$('li', list).filter((li) => $('details', li).open).map((li) => li.dataset.eventId));
  const sorted = (Array.isArray(events) ? events : []).slice().sort((a, b) => a.version - b.version);
  list.replaceChildren(...sorted.map((event) => eventItem(event, open.has(String(event.event_id)))));
  note.hidden = sorted.length > 0;
  note.textContent = sorted.length ? '' : 'No events recorded yet.';
}

async function orderDetailView({ main, ctx, params }) {
  mount(main, 'tpl-order');
  const id = params[0];
  const loading = $('#order-loading', main);
  const body = $('#order-body', main);
  const loadErrors = $('#detail-errors', main);
  let shownVersion = 0;
  let wantedVersion = 0;
  let running = null; // the refresh loop's promise while one runs
  let again = false;
  let shownView = null;

  function notFound() {
    loading.hidden = true;
    body.hidden = true;
    $('#order-title', main).textContent = 'Order not found';
    $('#order-missing', main).hidden = false;
    document.title = 'Order not found · orderflow';
  }

  async function load(minVersion) {
    const [viewResult, eventsResult] = await Promise.allSettled([
      api(orderPath(id, minVersion)),
      api(`/api/orders/${encodeURIComponent(id)}/events`),
    ]);
    if (!ctx.alive) return;
    loading.hidden = true;
    if (viewResult.status === 'rejected') {
      if (viewResult.reason.status === 404) notFound();
      else showProblem(loadErrors, viewResult.reason);
      return;
    }
    const view = viewResult.value.data;
    showProblem(loadErrors, null);
    shownVersion = Number(view.version) || 0;
    shownView = view;
    renderOrder(main, view, eventsResult.status === 'fulfilled' ? eventsResult.value.data : []);
    body.hidden = false;
    if (eventsResult.status === 'fulfilled') {
      renderTimeline(main, eventsResult.value.data);
    } else if (!eventsResult.reason.sessionExpired) {
      const note = $('#timeline-note', main);
      note.textContent = `The event history is not available: ${(eventsResult.reason.problem || {}).title || 'error'}.`;
      note.hidden = false;
    }
  }

  /**
   * Coalesces refreshes: live events arriving during a load trigger one more load afterwards.
   * Resolves when the page shows the latest read (callers move focus after it).
   */
  function refresh(minVersion = 0) {
    wantedVersion = Math.max(wantedVersion, Number(minVersion) || 0);
    if (running) {
      again = true;
      return running;
    }
    running = (async () => {
      try {
        do {
          again = false;
          await load(wantedVersion);
        } while (again && ctx.alive);
      } finally {
        running = null;
      }
    })();
    return running;
  }

  listen(ctx, (event) => {
    if (event.order_id !== id || (event.version && event.version <= shownVersion)) return;
    announce(`Order ${shortId(id)} is now ${event.status}.`);
    refresh(event.version);
  });

  // Product names for the lines: the catalog is cached for the session.
  catalogCache.load()
    .then(() => { if (ctx.alive && shownView) renderLines(main, shownView); })
    .catch(() => { /* the SKUs alone are shown */ });

  const message = $('#action-message', main);
  const cancelErrors = $('#cancel-errors', main);
  const actionErrors = $('#action-errors', main);
  /** A new action starts: earlier outcomes no longer apply. */
  function clearMessages() {
    message.textContent = '';
    showProblem(cancelErrors, null);
    showProblem(actionErrors, null);
    clearInvalid(body);
  }

  // Cancelling asks first, inline: "Cancel this order? [Yes, cancel] [Keep it]".
  const cancelForm = $('#cancel-form', main);
  const cancelButton = $('#cancel-order', main);
  const confirmBox = $('#cancel-confirm', main);
  const yesButton = $('#cancel-yes', main);

  function askToCancel(open) {
    confirmBox.hidden = !open;
    cancelButton.hidden = open;
    if (open) $('#cancel-keep', main).focus(); else cancelButton.focus();
  }

  cancelForm.addEventListener('submit', (event) => {
    event.preventDefault();
    if (cancelButton.disabled) return;
    clearMessages();
    askToCancel(true);
  });
  $('#cancel-keep', main).addEventListener('click', () => askToCancel(false));
  confirmBox.addEventListener('keydown', (event) => {
    if (event.key === 'Escape' && !yesButton.disabled) askToCancel(false);
  });
  yesButton.addEventListener('click', async () => {
    if (yesButton.disabled) return;
    clearMessages();
    const reason = $('#cancel-reason', main).value.trim();
    setBusy(yesButton, true, 'Cancelling…');
    try {
      const { data } = await api(`/api/orders/${encodeURIComponent(id)}/cancel`, { method: 'POST', body: reason ? { reason } : {} });
      if (!ctx.alive) return;
      announce('Cancellation requested.');
      await refresh(data && data.version);
      if (!ctx.alive) return;
      if (cancelForm.hidden) $('#order-title', main).focus();
      else askToCancel(false);
    } catch (err) {
      if (!ctx.alive) return;
      showProblem(cancelErrors, err);
      askToCancel(false);
    } finally {
      if (ctx.alive) setBusy(yesButton, false);
    }
  });

  // Operators ship and deliver from here too (the same calls as the operations table).
  const shipForm = $('#ship-order-form', main);
  const deliverButton = $('#deliver-order', main);

  /** After an action, focus the next step (Deliver) or the status. */
  function focusNextStep() {
    if (!deliverButton.hidden && !$('#order-actions', main).hidden) deliverButton.focus();
    else focusStatus($('.status-line .status', main));
  }

  async function fulfil(action, payload, button) {
    clearMessages();
    setBusy(button, true);
    try {
      const { data } = await api(`/api/orders/${encodeURIComponent(id)}/${action}`, { method: 'POST', body: payload });
      if (!ctx.alive) return;
      message.textContent = action === 'ship' ? 'Shipment recorded.' : 'Delivery recorded.';
      await refresh(data && data.version);
      if (ctx.alive) focusNextStep();
    } catch (err) {
      if (!ctx.alive) return;
      const first = showProblem(actionErrors, err, shipFieldResolver(shipForm)) || markShipProblem(shipForm, err);
      (first || actionErrors).focus();
    } finally {
      if (ctx.alive) setBusy(button, false);
    }
  }

  shipForm.addEventListener('input', (event) => event.target.removeAttribute('aria-invalid'));
  shipForm.addEventListener('submit', (event) => {
    event.preventDefault();
    const button = $('button[type="submit"]', shipForm);
    if (button.disabled) return;
    clearMessages();
    const missing = shipFormErrors(shipForm);
    if (missing.length) {
      showProblem(actionErrors, clientProblem('Carrier and tracking number are needed to ship', missing));
      missing[0].input.focus();
      return;
    }
    fulfil('ship', shipFormBody(shipForm), button);
  });
  deliverButton.addEventListener('click', () => {
    if (!deliverButton.disabled) fulfil('deliver', {}, deliverButton);
  });

  await refresh(0);
}

// ----- shipping (shared by the operations table and the order page) -----

function shipFormBody(form) {
  return { carrier: form.elements.carrier.value.trim(), tracking: form.elements.tracking.value.trim() };
}

/** Client-side check of a ship form, reported like the server's field errors. */
function shipFormErrors(form) {
  const { carrier, tracking } = shipFormBody(form);
  const missing = [];
  if (!carrier) missing.push({ field: 'carrier', message: 'Required.', input: form.elements.carrier });
  if (!tracking) missing.push({ field: 'tracking', message: 'Required.', input: form.elements.tracking });
  return missing;
}

function shipFieldResolver(form) {
  return (field) => {
    const path = normalizeFieldPath(field);
    return path === 'carrier' || path === 'tracking' ? form.elements[path] : null;
  };
}

/** The server's invalid_tracking problem has no field list: it is about both inputs. */
function markShipProblem(form, err) {
  if (!form || !err || !err.problem || err.problem.code !== 'invalid_tracking') return null;
  form.elements.carrier.setAttribute('aria-invalid', 'true');
  form.elements.tracking.setAttribute('aria-invalid', 'true');
  return form.elements.carrier;
}

/** Focus a status word (not focusable by Tab; it only takes focus so the place is not lost). */
function focusStatus(node) {
  if (!node) return;
  node.tabIndex = -1;
  node.focus();
}

// ----- #/operator -----

function actionsFor(id, status, canAct) {
  if (!canAct) return [el('span', { class: 'muted', text: '—' })];
  // Problems with this row's action are shown here, next to it, not at the top of the page.
  const rowErrors = el('div', { class: 'problem row-errors', role: 'alert', tabindex: -1, hidden: true });
  if (status === 'confirmed') {
    const formId = `ship-form-${id}`;
    return [
      el('button', { type: 'button', class: 'ship', 'aria-expanded': 'false', 'aria-controls': formId, 'aria-label': `Ship order ${shortId(id)}`, text: 'Ship' }),
      el('form', { id: formId, class: 'ship-form', hidden: true, novalidate: true, 'aria-label': `Ship order ${shortId(id)}` },
        el('label', {}, 'Carrier ', el('input', { name: 'carrier', type: 'text', list: 'carriers', required: true, 'data-limit': 'ShipBody.carrier', autocomplete: 'off' })),
        el('label', {}, 'Tracking number ', el('input', { name: 'tracking', type: 'text', required: true, 'data-limit': 'ShipBody.tracking', autocomplete: 'off', spellcheck: 'false' })),
        el('span', { class: 'ship-buttons' },
          el('button', { type: 'submit', class: 'primary', text: 'Confirm shipment' }),
          el('button', { type: 'button', class: 'ship-close ghost-dark', text: 'Close' })),
        rowErrors),
    ];
  }
  if (status === 'shipped') {
    return [el('button', { type: 'button', class: 'deliver', 'aria-label': `Deliver order ${shortId(id)}`, text: 'Deliver' }), rowErrors];
  }
  return [el('span', { class: 'muted', text: '—' })];
}

function renderActions(row, status, canAct) {
  $('td.actions', row).replaceChildren(...actionsFor(row.dataset.orderId, status, canAct));
}

/** After a row's action: focus its next action (Ship → Deliver) or else its status word. */
function focusRowNext(row) {
  const next = $$('td.actions button', row).find((button) => !button.disabled && !button.closest('[hidden]'));
  if (next) next.focus(); else focusStatus($('.status', row));
}

function operatorRow(view, canAct) {
  const total = formatMoney(view.total, view.currency);
  const row = el('tr', { 'data-order-id': view.order_id, 'data-version': view.version, 'data-status': view.status },
    orderCell(view, [el('span', { text: total }), timeEl(view.placed_at)]),
    el('td', { class: 'wide-only' }, el('code', { title: view.customer_id || undefined, text: shortId(view.customer_id) || '—' })),
    el('td', { class: 'wide-only' }, timeEl(view.placed_at)),
    el('td', { class: 'num wide-only', text: total }),
    statusCell(view.status, view.reason),
    el('td', { class: 'actions' }));
  renderActions(row, view.status, canAct);
  return row;
}

function stockRow(item) {
  const number = (value) => (value === undefined || value === null ? '—' : String(value));
  return el('tr', { 'data-sku': item.sku },
    el('td', {}, el('code', { text: item.sku })),
    el('td', { text: item.name || '' }),
    el('td', { class: 'num wide-only', 'data-price': '', text: formatMoney(item.unit_price, item.currency) }),
    el('td', { class: 'num available', 'data-available': '', text: number(item.available) }),
    el('td', { class: 'num wide-only', 'data-on-hand': '', text: number(item.on_hand) }),
    el('td', { class: 'num wide-only', 'data-reserved': '', text: number(item.reserved) }));
}

function updateStockRow(row, item) {
  const number = (value) => (value === undefined || value === null ? '—' : String(value));
  updateText($('[data-price]', row), formatMoney(item.unit_price, item.currency));
  updateText($('[data-available]', row), number(item.available));
  updateText($('[data-on-hand]', row), number(item.on_hand));
  updateText($('[data-reserved]', row), number(item.reserved));
}

async function operatorView({ main, ctx }) {
  mount(main, 'tpl-operator');
  const canAct = session.role() === 'operator';
  const errors = $('#operator-errors', main);
  const message = $('#operator-message', main);
  const filter = $('#operator-status', main);
  const tbody = $('#operator-orders tbody', main);
  const restockForm = $('#restock-form', main);
  const restockErrors = $('#restock-errors', main);
  const restockMessage = $('#restock-message', main);

  /** A new action starts: earlier outcomes (a success next to a new error) no longer apply. */
  function clearMessages() {
    message.textContent = '';
    restockMessage.textContent = '';
    showProblem(errors, null);
    showProblem(restockErrors, null);
    for (const box of $$('.row-errors', tbody)) showProblem(box, null);
    clearInvalid(main);
  }

  $('#operator-readonly', main).hidden = canAct;
  restockForm.hidden = !canAct;

  const empty = $('#operator-empty', main);
  const rows = orderRows({
    tbody,
    ctx,
    onAdd: () => { empty.hidden = true; },
    build: (view) => operatorRow(view, canAct),
    accept: (view) => !filter.value || view.status === filter.value,
    onStatusChange: (row, status) => {
      const hadFocus = row.contains(document.activeElement);
      renderActions(row, status, canAct);
      if (hadFocus) focusRowNext(row);
    },
  });
  const pager = orderPager({
    ctx, rows, limit: 50, query: () => (filter.value ? { status: filter.value } : {}),
    more: $('#operator-load-more', main), empty, errors,
  });

  async function refreshRow(id, minVersion) {
    try {
      const { data } = await api(orderPath(id, minVersion));
      if (ctx.alive && data) rows.onEvent({ order_id: data.order_id, status: data.status, version: Number(data.version) || 0, reason: data.reason });
    } catch (err) {
      if (ctx.alive) showProblem(errors, err);
    }
  }

  async function command(row, action, body, button) {
    const id = row.dataset.orderId;
    clearMessages();
    setBusy(button, true);
    try {
      const { data } = await api(`/api/orders/${encodeURIComponent(id)}/${action}`, { method: 'POST', body });
      if (!ctx.alive) return;
      message.textContent = action === 'ship' ? `Order ${shortId(id)}: shipment recorded.` : `Order ${shortId(id)}: delivery recorded.`;
      await refreshRow(id, data && data.version);
      // The pressed button was disabled (and may be gone): keep the place in this row.
      const focus = document.activeElement;
      if (ctx.alive && row.isConnected && (!focus || focus === document.body || row.contains(focus) || button.contains(focus))) {
        focusRowNext(row);
      }
    } catch (err) {
      if (!ctx.alive) return;
      const box = $('.row-errors', row);
      if (!box) {
        showProblem(errors, err);
        errors.focus();
        return;
      }
      const form = $('form.ship-form', row);
      const first = form ? showProblem(box, err, shipFieldResolver(form)) || markShipProblem(form, err) : showProblem(box, err);
      (first || box).focus();
    } finally {
      if (button.isConnected) setBusy(button, false);
    }
  }

  function toggleShipForm(row, open) {
    const toggle = $('button.ship', row);
    const form = $('form.ship-form', row);
    if (!toggle || !form) return;
    form.hidden = !open;
    toggle.setAttribute('aria-expanded', String(open));
    if (open) form.elements.carrier.focus(); else toggle.focus();
  }

  tbody.addEventListener('click', (event) => {
    const button = event.target.closest('button');
    if (!button || button.disabled) return;
    const row = button.closest('tr');
    if (button.classList.contains('ship')) toggleShipForm(row, $('form.ship-form', row).hidden);
    else if (button.classList.contains('ship-close')) toggleShipForm(row, false);
    else if (button.classList.contains('deliver')) command(row, 'deliver', {}, button);
  });

  tbody.addEventListener('input', (event) => event.target.removeAttribute('aria-invalid'));
  tbody.addEventListener('submit', (event) => {
    const form = event.target.closest('form.ship-form');
    if (!form) return;
    event.preventDefault();
    const button = $('button[type="submit"]', form);
    if (button.disabled) return;
    clearMessages();
    const missing = shipFormErrors(form);
    if (missing.length) {
      showProblem($('.row-errors', form), clientProblem('Carrier and tracking number are needed to ship', missing));
      missing[0].input.focus();
      return;
    }
    command(form.closest('tr'), 'ship', shipFormBody(form), button);
  });

  tbody.addEventListener('keydown', (event) => {
    const form = event.target.closest && event.target.closest('form.ship-form');
    if (form && event.key === 'Escape') toggleShipForm(form.closest('tr'), false);
  });

  filter.addEventListener('change', () => pager.load(true));
  $('#operator-refresh', main).addEventListener('click', () => { pager.load(true); refreshStock(); });

  listen(ctx, (event) => rows.onEvent(event));

  // ----- stock and restocking -----
  const stockBody = $('#stock tbody', main);
  const skuSelect = $('#restock-sku', main);
  const qtyInput = $('#restock-qty', main);

  /** Numbers are updated in place; rows and options are rebuilt only when the SKUs change. */
  function showStock(catalog) {
    const skus = catalog.map((item) => item.sku).join('\n');
    if (stockBody.dataset.skus !== skus) {
      stockBody.dataset.skus = skus;
      stockBody.replaceChildren(...catalog.map(stockRow));
      const selected = skuSelect.value;
      skuSelect.replaceChildren(...catalog.map((item) => el('option', { value: item.sku, text: `${item.sku} — ${item.name || ''}` })));
      if (catalog.some((item) => item.sku === selected)) skuSelect.value = selected;
      return;
    }
    const rowsBySku = new Map(Array.from(stockBody.rows, (row) => [row.dataset.sku, row]));
    for (const item of catalog) updateStockRow(rowsBySku.get(item.sku), item);
  }

  // Stock moves with every order: keep the table current while the page is shown.
  const refreshStock = watchCatalog(ctx, showStock);

  async function loadStock() {
    try {
      const catalog = await catalogCache.load(true);
      if (ctx.alive) showStock(catalog);
    } catch (err) {
      if (ctx.alive) showProblem(restockErrors, err);
    }
  }

  restockForm.addEventListener('input', (event) => event.target.removeAttribute('aria-invalid'));
  restockForm.addEventListener('submit', async (event) => {
    event.preventDefault();
    const button = $('#restock-submit', main);
    if (button.disabled) return;
    clearMessages();
    const sku = skuSelect.value;
    const quantity = Number(qtyInput.value);
    if (!sku || !Number.isInteger(quantity) || quantity < 1) {
      const problems = [];
      if (!sku) problems.push({ field: 'sku', message: 'Choose a SKU.', input: skuSelect });
      if (!Number.isInteger(quantity) || quantity < 1) problems.push({ field: 'quantity', message: 'Enter a whole number of at least 1.', input: qtyInput });
      showProblem(restockErrors, clientProblem('Cannot restock', problems));
      problems[0].input.focus();
      return;
    }
    setBusy(button, true, 'Restocking…');
    try {
      await api(`/api/catalog/${encodeURIComponent(sku)}/restock`, { method: 'POST', body: { quantity } });
      if (!ctx.alive) return;
      restockMessage.textContent = `Restocked ${sku} by ${quantity}.`;
      await loadStock();
    } catch (err) {
      if (ctx.alive) {
        const path = (field) => normalizeFieldPath(field);
        const first = showProblem(restockErrors, err, (field) => (path(field) === 'quantity' ? qtyInput : path(field) === 'sku' ? skuSelect : null));
        (first || restockErrors).focus();
      }
    } finally {
      if (ctx.alive) {
        setBusy(button, false);
        if (document.activeElement === document.body) button.focus();
      }
    }
  });

  const deadLetters = canAct ? deadLetterSection(main, ctx) : null;
  await Promise.all([pager.load(true), loadStock(), deadLetters && deadLetters.load()]);
}

// ----- dead letters (operators only: the API refuses anyone else) -----

function deadRow(letter) {
  const event = letter.event || {};
  const key = `${letter.subscription}/${event.event_id}`;
  const formId = `discard-${letter.subscription}-${event.event_id}`;
  const label = `${event.event_type} ${shortId(event.event_id)} for ${letter.subscription}`;
  return el('tr', { 'data-key': key, 'data-subscription': letter.subscription, 'data-event-id': event.event_id },
    el('td', {}, el('code', { text: letter.subscription })),
    el('td', {},
      el('span', { text: event.event_type }), ' ',
      el('code', { title: event.event_id, text: shortId(event.event_id) }),
      letter.order_id ? [' ', el('a', { href: orderHref(letter.order_id), text: `order ${shortId(letter.order_id)}` })] : null),
    el('td', { class: 'wide-only' }, letter.dead_at ? timeEl(letter.dead_at) : el('span', { class: 'muted', text: 'not recorded' })),
    el('td', { class: 'num wide-only', text: String(letter.attempts) }),
    el('td', { class: 'dead-reason', text: letter.reason || '—' }),
    el('td', { class: 'actions' },
      el('button', { type: 'button', class: 'redrive', 'aria-label': `Re-drive ${label}`, text: 'Re-drive' }),
      el('button', { type: 'button', class: 'discard ghost-dark', 'aria-expanded': 'false', 'aria-controls': formId, 'aria-label': `Discard ${label}`, text: 'Discard' }),
      el('form', { id: formId, class: 'discard-form', hidden: true, novalidate: true, 'aria-label': `Discard ${label}` },
        el('label', {}, 'Why discard it? ', el('input', { name: 'reason', type: 'text', required: true, 'data-limit': 'DiscardBody.reason', autocomplete: 'off' })),
        el('span', { class: 'ship-buttons' },
          el('button', { type: 'submit', class: 'primary', text: 'Discard for good' }),
          el('button', { type: 'button', class: 'discard-close ghost-dark', text: 'Close' })),
        el('div', { class: 'problem row-errors', role: 'alert', tabindex: -1, hidden: true }))));
}

/** The dead-letter section of the operator page: list, re-drive, discard. */
function deadLetterSection(main, ctx) {
  const section = $('#dead-letters', main);
  const tbody = $('#dead-table tbody', section);
  const errors = $('#dead-errors', section);
  const message = $('#dead-message', section);
  const counts = $('#dead-counts', section);
  const empty = $('#dead-empty', section);
  const subscription = $('#dead-subscription', section);
  const redriveShown = $('#dead-redrive-shown', section);
  section.hidden = false;

  function clear() {
    message.textContent = '';
    showProblem(errors, null);
    for (const box of $$('.row-errors', tbody)) showProblem(box, null);
  }

  async function load() {
    try {
      const filter = subscription.value ? `?subscription=${encodeURIComponent(subscription.value)}&limit=1000` : '?limit=1000';
      const { data } = await api(`/api/dead-letters${filter}`);
      if (!ctx.alive) return;
      const hadFocus = tbody.contains(document.activeElement);
      tbody.replaceChildren(...data.items.map(deadRow));
      empty.hidden = data.items.length > 0;
      redriveShown.disabled = data.items.length === 0;
      counts.textContent = data.subscriptions.map((c) => `${c.subscription}: ${c.dead_letters}`).join(' · ')
        + (data.total > data.items.length ? ` (showing ${data.items.length} of ${data.total})` : '');
      if (hadFocus) focusStatus($('#dead-title', main));
    } catch (err) {
      if (ctx.alive) showProblem(errors, err);
    }
  }

  async function act(path, body, button, done) {
    clear();
    setBusy(button, true);
    try {
      const { data } = await api(path, { method: 'POST', body });
      if (!ctx.alive) return;
      message.textContent = done(data.count);
      await load();
    } catch (err) {
      if (!ctx.alive) return;
      const row = button.closest('tr');
      const box = row ? $('.row-errors', row) : null;
      if (box && !box.closest('[hidden]')) {
        const form = $('form.discard-form', row);
        const first = showProblem(box, err, (field) => (normalizeFieldPath(field) === 'reason' && form ? form.elements.reason : null));
        (first || box).focus();
      } else {
        showProblem(errors, err);
        errors.focus();
      }
    } finally {
      if (button.isConnected) setBusy(button, false);
    }
  }

  const one = (row) => ({ all: false, subscription: row.dataset.subscription, event_ids: [row.dataset.eventId] });
  const plural = (n) => (n === 1 ? '' : 's');

  function toggleDiscard(row, open) {
    const toggle = $('button.discard', row);
    const form = $('form.discard-form', row);
    form.hidden = !open;
    toggle.setAttribute('aria-expanded', String(open));
    if (open) form.elements.reason.focus(); else toggle.focus();
  }

  tbody.addEventListener('click', (event) => {
    const button = event.target.closest('button');
    if (!button || button.disabled) return;
    const row = button.closest('tr');
    if (button.classList.contains('redrive')) {
      act('/api/dead-letters/redrive', one(row), button, (n) => (n ? `Re-driven: ${row.dataset.subscription} gets it again.` : 'It was no longer dead: nothing to re-drive.'));
    } else if (button.classList.contains('discard')) {
      toggleDiscard(row, $('form.discard-form', row).hidden);
    } else if (button.classList.contains('discard-close')) {
      toggleDiscard(row, false);
    }
  });
  tbody.addEventListener('input', (event) => event.target.removeAttribute('aria-invalid'));
  tbody.addEventListener('keydown', (event) => {
    const form = event.target.closest && event.target.closest('form.discard-form');
    if (form && event.key === 'Escape') toggleDiscard(form.closest('tr'), false);
  });
  tbody.addEventListener('submit', (event) => {
    const form = event.target.closest('form.discard-form');
    if (!form) return;
    event.preventDefault();
    const button = $('button[type="submit"]', form);
    if (button.disabled) return;
    const reason = form.elements.reason.value.trim();
    if (!reason) {
      clear();
      showProblem($('.row-errors', form), clientProblem('Say why it is discarded: the reason is logged', [{ field: 'reason', message: 'Enter a reason.', input: form.elements.reason }]));
      form.elements.reason.focus();
      return;
    }
    act('/api/dead-letters/discard', { ...one(form.closest('tr')), reason }, button, (n) => (n ? 'Discarded; the reason is in the log.' : 'It was no longer dead: nothing to discard.'));
  });

  subscription.addEventListener('change', () => { clear(); load(); });
  $('#dead-refresh', section).addEventListener('click', () => { clear(); load(); });
  redriveShown.addEventListener('click', () => {
    const body = subscription.value ? { all: true, subscription: subscription.value } : { all: true };
    act('/api/dead-letters/redrive', body, redriveShown, (n) => `Re-driven: ${n} dead letter${plural(n)}.`);
  });
  return { load };
}

// ---------- 8b. Analyst page: analytics summary, event log, an order at a moment, replays ----------

const SUMMARY_REFRESH_MS = 5000;
const REPLAY_POLL_MS = 500;

/** A datetime-local value (local time, no zone) as RFC 3339 UTC, or '' when empty. */
function localToIso(value) {
  if (!value) return '';
  const date = new Date(value);
  return Number.isNaN(date.getTime()) ? '' : date.toISOString();
}

function query(params) {
  const search = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) if (value) search.set(key, value);
  const text = search.toString();
  return text ? `?${text}` : '';
}

function numCell(text) {
  return el('td', { class: 'num', text });
}

function renderSummary(main, summary) {
  const status = $('#summary-status', main);
  const lifecycle = ['placed', 'confirmed', 'shipped', 'delivered', 'rejected', 'cancelled'];
  const rank = (name) => (lifecycle.includes(name) ? lifecycle.indexOf(name) : lifecycle.length);
  const counts = Object.entries(summary.orders_per_status || {}).sort(([a], [b]) => rank(a) - rank(b));
  status.replaceChildren(...counts.map(([name, count]) => el('div', {},
    el('dt', { text: name }),
    el('dd', { 'data-status': name, text: String(count) }))));
  const revenue = $('#summary-revenue tbody', main);
  const days = summary.revenue_per_day || [];
  revenue.replaceChildren(...(days.length ? days.map((day) => el('tr', { 'data-day': day.day },
    el('td', { text: day.day }),
    numCell(String(day.orders)),
    numCell(formatMoney(day.gross, day.currency)),
    numCell(formatMoney(day.refunded, day.currency)),
    numCell(formatMoney(day.net, day.currency)))) : [el('tr', {}, el('td', { colspan: 5, class: 'muted', text: 'No confirmed orders yet.' }))]));
  const skus = $('#summary-skus tbody', main);
  const top = summary.top_skus || [];
  skus.replaceChildren(...(top.length ? top.map((sku) => el('tr', { 'data-sku': sku.sku },
    el('td', { text: sku.sku }),
    numCell(String(sku.units)),
    numCell(String(sku.orders)),
    numCell(formatMoney(sku.revenue, sku.currency)))) : [el('tr', {}, el('td', { colspan: 4, class: 'muted', text: 'Nothing sold yet.' }))]));
  const lag = summary.lag === null || summary.lag === undefined ? '' : ` · ${summary.lag} behind the log`;
  $('#summary-note', main).textContent = `${summary.orders} orders · ${summary.events} events folded${lag}`;
}

function logRow(event) {
  return el('tr', { 'data-event-id': event.event_id },
    el('td', {}, timeEl(event.occurred_at)),
    el('td', {}, el('strong', { class: 'event-type', text: event.event_type }),
      ' ', el('span', { class: 'muted', text: `v${event.schema_version}` })),
    el('td', {}, event.stream_type === 'order'
      ? orderLink(event.stream_id.replace(/^order-/, ''))
      : el('span', { text: event.stream_id })),
    numCell(String(event.version)),
    el('td', {}, el('details', {},
      el('summary', { text: 'Payload' }),
      el('pre', {}, el('code', { text: prettyJson(event.payload) })))));
}

async function analystView({ main, ctx }) {
  mount(main, 'tpl-analyst');

  // Summary: re-read every few seconds while shown (the projection follows the log).
  const summaryErrors = $('#summary-errors', main);
  async function loadSummary() {
    try {
      const { data } = await api('/api/analytics/summary');
      if (!ctx.alive) return;
      showProblem(summaryErrors, null);
      renderSummary(main, data);
    } catch (err) {
      if (ctx.alive) showProblem(summaryErrors, err);
    }
  }
  $('#summary-refresh', main).addEventListener('click', loadSummary);
  const timer = setInterval(loadSummary, SUMMARY_REFRESH_MS);
  ctx.cleanups.push(() => clearInterval(timer));

  // Event log: filtered, paged by next_cursor.
  const logForm = $('#log-form', main);
  const logBody = $('#log-events tbody', main);
  const logErrors = $('#log-errors', main);
  const logMore = $('#log-more', main);
  let logQuery = {};
  let logCursor = null;
  async function loadLog(append) {
    const button = append ? logMore : $('#log-submit', main);
    setBusy(button, true);
    showProblem(logErrors, null);
    clearInvalid(logForm);
    try {
      const params = { ...logQuery, limit: '50', cursor: append ? logCursor : '' };
      const { data } = await api(`/api/events${query(params)}`);
      if (!ctx.alive) return;
      const rows = (data.items || []).map(logRow);
      if (append) logBody.append(...rows); else logBody.replaceChildren(...rows);
      logCursor = data.next_cursor || null;
      logMore.hidden = !logCursor;
      $('#log-empty', main).hidden = logBody.children.length > 0;
      announce(`${logBody.children.length} events shown`);
    } catch (err) {
      const inputs = { type: '#log-type', since: '#log-since', until: '#log-until', order_id: '#log-order' };
      if (ctx.alive) showProblem(logErrors, err, (field) => (inputs[field] ? $(inputs[field], main) : null));
    } finally {
      setBusy(button, false);
    }
  }
  logForm.addEventListener('submit', (event) => {
    event.preventDefault();
    logQuery = {
      type: $('#log-type', main).value.trim(),
      since: localToIso($('#log-since', main).value),
      until: localToIso($('#log-until', main).value),
      order_id: $('#log-order', main).value.trim(),
    };
    loadLog(false);
  });
  logMore.addEventListener('click', () => loadLog(true));

  // An order at a moment: its state folded up to then, its timeline with what came after dimmed.
  const momentForm = $('#moment-form', main);
  const momentErrors = $('#moment-errors', main);
  momentForm.addEventListener('submit', async (event) => {
    event.preventDefault();
    const id = $('#moment-order', main).value.trim();
    const asOf = localToIso($('#moment-at', main).value);
    showProblem(momentErrors, null);
    clearInvalid(momentForm);
    if (!id) {
      showProblem(momentErrors, clientProblem('Enter an order id', [{ field: 'order_id', message: 'is required' }]),
        () => $('#moment-order', main));
      return;
    }
    const button = $('#moment-submit', main);
    setBusy(button, true);
    try {
      const path = `/api/orders/${encodeURIComponent(id)}`;
      const [{ data: view }, { data: events }] = await Promise.all([
        api(`${path}${query({ as_of: asOf })}`),
        api(`${path}/events`),
      ]);
      if (!ctx.alive) return;
      $('#moment-status', main).textContent = view.status;
      $('#moment-version', main).textContent = `version ${view.version} · ${formatMoney(view.total, view.currency)}`;
      const list = $('#moment-timeline', main);
      const sorted = (events || []).slice().sort((a, b) => a.version - b.version);
      list.replaceChildren(...sorted.map((e) => {
        const item = eventItem(e, false);
        if (e.version > view.version) {
          item.classList.add('after-cutoff');
          item.append(el('p', { class: 'muted', text: 'After this moment' }));
        }
        return item;
      }));
      $('#moment-result', main).hidden = false;
      announce(`The order was ${view.status} then`);
    } catch (err) {
      if (ctx.alive) {
        $('#moment-result', main).hidden = true;
        showProblem(momentErrors, err, (field) => (field === 'as_of' ? $('#moment-at', main) : $('#moment-order', main)));
      }
    } finally {
      setBusy(button, false);
    }
  });

  // Replays: start one, then follow its progress until it ends.
  const replayForm = $('#replay-form', main);
  const replayErrors = $('#replay-errors', main);
  const bar = $('#replay-bar', main);
  const text = $('#replay-text', main);
  function renderReplay(status) {
    $('#replay-progress', main).hidden = false;
    const total = Number(status.total) || 0;
    bar.max = Math.max(total, 1);
    bar.value = Math.min(status.folded, bar.max);
    const of = total ? ` of ${total}` : '';
    const rate = Math.round(status.events_per_second || 0);
    const states = { running: 'Running', succeeded: 'Done', failed: 'Failed' };
    let line = `${states[status.state] || status.state}: ${status.folded}${of} events (${rate} events/s)`;
    if (status.state === 'succeeded') line += `; readers switched to generation ${status.generation}`;
    if (status.error) line += `: ${status.error}`;
    text.textContent = line;
    text.dataset.state = status.state;
  }
  async function follow(location) {
    while (ctx.alive) {
      await new Promise((resolve) => { setTimeout(resolve, REPLAY_POLL_MS); });
      if (!ctx.alive) return;
      try {
        const { data } = await api(location);
        renderReplay(data);
        if (data.state !== 'running') {
          announce(text.textContent);
          if (data.state === 'succeeded') loadSummary();
          return;
        }
      } catch (err) {
        showProblem(replayErrors, err);
        return;
      }
    }
  }
  replayForm.addEventListener('submit', async (event) => {
    event.preventDefault();
    showProblem(replayErrors, null);
    const projections = $$('input[name=projection]:checked', replayForm).map((box) => box.value);
    if (!projections.length) {
      showProblem(replayErrors, clientProblem('Choose at least one projection'));
      return;
    }
    const button = $('#replay-submit', main);
    setBusy(button, true, 'Replaying…');
    try {
      const { data, headers } = await api('/api/replays', { method: 'POST', body: { projections } });
      renderReplay(data);
      await follow(headers.get('Location') || `/api/replays/${data.replay_id}`);
    } catch (err) {
      if (ctx.alive) showProblem(replayErrors, err);
    } finally {
      setBusy(button, false);
    }
  });

  await loadSummary();
}

// ---------- 9. Chrome, router and boot ----------

function renderChrome() {
  const info = session.signedIn() ? session.info() : null;
  const role = info ? info.role : '';
  for (const item of $$('#site-nav [data-roles]')) {
    item.hidden = !info || !item.dataset.roles.split(' ').some((r) => rolesOf(info).includes(r));
  }
  $('#nav-orders').textContent = STAFF_ROLES.has(role) ? 'All orders' : 'My orders';

  const hash = location.hash;
  for (const link of $$('#site-nav a')) {
    const href = link.getAttribute('href');
    const current = hash === href || (href === '#/orders' && hash.startsWith('#/orders/'));
    if (current) link.setAttribute('aria-current', 'page'); else link.removeAttribute('aria-current');
  }

  const whoami = $('#whoami');
  whoami.textContent = info ? `${info.name} (${role})` : '';
  whoami.hidden = !info;
  $('#logout').hidden = !info;
  $('#live').hidden = !info;

  const banner = $('#dev-banner');
  banner.hidden = !(info && info.development);
  banner.textContent = info && info.development ? info.notice : '';
}

const routes = [
  { pattern: /^\/login$/, view: loginView, title: 'Sign in', public: true },
  { pattern: /^\/shop$/, view: shopView, title: 'Shop' },
  { pattern: /^\/orders$/, view: ordersView, title: 'Orders' },
  { pattern: /^\/orders\/([^/?#]+)$/, view: orderDetailView, title: 'Order' },
  { pattern: /^\/operator$/, view: operatorView, title: 'Operations', roles: STAFF_ROLES },
  { pattern: /^\/analyst$/, view: analystView, title: 'Analytics', roles: new Set(['analyst']) },
];

let currentCtx = { alive: false, cleanups: [] };
let firstRoute = true;

function navigate(hash, replace = false) {
  if (location.hash === hash) {
    route();
  } else if (replace) {
    location.replace(hash);
  } else {
    location.hash = hash;
  }
}

function matchRoute(path) {
  for (const candidate of routes) {
    const match = candidate.pattern.exec(path);
    if (!match) continue;
    try {
      return { route: candidate, params: match.slice(1).map(decodeURIComponent) };
    } catch {
      return null; // malformed %-escape
    }
  }
  return null;
}

function leaveRoute() {
  currentCtx.alive = false;
  for (const cleanup of currentCtx.cleanups) cleanup();
  currentCtx = { alive: false, cleanups: [] };
}

function route() {
  const info = session.signedIn() ? session.info() : null;
  const match = matchRoute(location.hash.replace(/^#/, ''));
  if (!match) return navigate(info ? homeFor(info.role) : '#/login', true);
  if (!match.route.public && !info) return navigate('#/login', true);
  if (match.route.roles && !rolesOf(info).some((r) => match.route.roles.has(r))) return navigate(homeFor(info.role), true);

  leaveRoute();
  const ctx = { alive: true, cleanups: [] };
  currentCtx = ctx;

  if (state.keepOrderResult) state.keepOrderResult = false;
  else $('#order-result').hidden = true;

  renderChrome();
  document.title = `${match.route.title} · orderflow`;
  const main = $('#main');
  // Views mount synchronously (before their first await), so the heading below is the new one.
  try {
    Promise.resolve(match.route.view({ main, ctx, params: match.params }))
      .catch((err) => console.error('view failed', err));
  } catch (err) {
    console.error('view failed', err);
  }
  // Move focus to the new page's heading (not on first load), so screen readers hear the change.
  if (!firstRoute) {
    const heading = $('h1', main);
    if (heading) heading.focus();
  }
  firstRoute = false;
  return undefined;
}

async function boot() {
  $('#logout').addEventListener('click', logout);
  $('#skip-link').addEventListener('click', (event) => {
    event.preventDefault(); // a plain #main would be taken for a route
    $('#main').focus();
  });
  $('#session-renew').addEventListener('click', () => {
    startProviderSignIn().catch((err) => { $('#session-banner-text').textContent = err.message; });
  });
  window.addEventListener('hashchange', route);
  await Promise.all([loadAuthConfig(), loadLimits()]);
  await finishProviderSignIn();
  if (session.signedIn()) {
    live.start();
    scheduleRenewal();
  }
  route();
}

if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', boot);
else boot();
