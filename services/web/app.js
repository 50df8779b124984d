/*
 * orderflow web UI — one vanilla ES2020 file, no build step, no dependencies, same origin only.
 *
 * How this file is laid out (top to bottom):
 *   1. Constants and shared state  — storage keys, statuses, a little in-memory state.
 *   2. Session                     — bearer token in localStorage "orderflow.token", and
 *                                    {name, role, customer_id, development, notice} in "orderflow.session".
 *   3. DOM helpers and formatting  — el(), mount(), money (minor units) and time formatting.
 *                                    Data only ever reaches the DOM through textContent /
 *                                    createElement; innerHTML is never used.
 *   4. api()                       — fetch wrapper: bearer token, JSON in and out, problem+json
 *                                    (RFC 9457) turned into ApiError, a 401 sends the user to #/login.
 *   5. Problems                    — renders a problem into an alert region and marks the inputs
 *                                    its field errors point at ("shipping_address.city", "lines[0].quantity").
 *   6. Live feed                   — one EventSource per signed-in session; views subscribe to its
 *                                    "order" events and unsubscribe when the route changes.
 *   7. Order rows                  — table rows shared by "My orders" and the operator page,
 *                                    updated in place by live events, paginated by next_cursor.
 *   8. Views                       — login, shop, orders, order detail, operator. Each view clones
 *                                    its <template> from index.html into <main> and wires it up.
 *   9. Chrome, router and boot     — header (nav by role, #whoami, #live, dev banner), hash routes
 *                                    with role guards, a per-route context whose cleanups run on leave.
 */
'use strict';

// ---------- 1. Constants and shared state ----------

const TOKEN_KEY = 'orderflow.token';
const SESSION_KEY = 'orderflow.session';
const CANCELLABLE = new Set(['placed', 'confirmed']);
const STAFF_ROLES = new Set(['operator', 'analyst']);
const REASONS = { out_of_stock: 'Out of stock', payment_declined: 'Payment declined' };
const LIVE_RETRY_MS = 15000;

const state = {
  loginNotice: '',        // shown once on the login page, e.g. after a 401
  lastPlaced: null,       // {order_id, version} of the order just placed (read-your-writes on #/orders)
  orderAttempt: null,     // {key, body}: an Idempotency-Key is reused only to retry the same body
  keepOrderResult: false, // keep #order-result visible across the next route change
};

// ---------- 2. Session ----------

function storageGet(key) {
  try { return localStorage.getItem(key); } catch { return null; }
}
function storageSet(key, value) {
  try { localStorage.setItem(key, value); } catch { /* private mode: session lasts for this page only */ }
}
function storageRemove(key) {
  try { localStorage.removeItem(key); } catch { /* nothing stored */ }
}

const session = {
  token() { return storageGet(TOKEN_KEY); },
  info() {
    const raw = storageGet(SESSION_KEY);
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
    storageSet(TOKEN_KEY, token);
    storageSet(SESSION_KEY, JSON.stringify(info));
  },
  clear() {
    storageRemove(TOKEN_KEY);
    storageRemove(SESSION_KEY);
  },
};

function homeFor(role) {
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
  live.stop();
  session.clear();
  state.lastPlaced = null;
  state.orderAttempt = null;
  renderChrome();
  navigate('#/login');
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
  for (const child of children.flat()) {
    if (child !== null && child !== undefined && child !== false) node.append(child);
  }
  return node;
}

/** Replace <main>'s content with a clone of a <template> from index.html. */
function mount(main, templateId) {
  main.replaceChildren(document.getElementById(templateId).content.cloneNode(true));
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

function shortId(id) {
  return String(id || '').slice(0, 8);
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
async function api(path, { method = 'GET', body, headers = {}, anonymous = false } = {}) {
  const token = anonymous ? null : session.token();
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
  if (res.status === 401 && token) {
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

function labelText(input) {
  const label = input.labels && input.labels[0];
  return label ? label.textContent.replace(/\s+/g, ' ').trim() : input.name || input.id;
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
  if (problem.detail && problem.detail !== problem.title) box.append(el('p', { text: problem.detail }));
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

function fieldErrorItem(fieldError, input) {
  const message = fieldError.message || 'is not valid';
  const item = el('li', { 'data-field': fieldError.field || undefined });
  if (input) {
    item.append(
      el('button', { type: 'button', class: 'link', text: labelText(input), onclick: () => input.focus() }),
      `: ${message}`,
    );
    if (fieldError.field) item.append(' ', el('code', { text: fieldError.field }));
  } else {
    item.append(fieldError.field ? `${fieldError.field}: ${message}` : message);
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

// ---------- 7. Order rows (shared by #/orders and #/operator) ----------

function statusCell(status) {
  return el('td', { class: 'status', 'data-status': status, text: status });
}

function orderLink(id) {
  return el('a', { href: orderHref(id), title: `Order ${id}`, text: shortId(id) });
}

function itemCount(view) {
  return (view.lines || []).reduce((sum, line) => sum + (Number(line.quantity) || 0), 0);
}

function customerOrderRow(view) {
  return el('tr', { 'data-order-id': view.order_id, 'data-version': view.version, 'data-status': view.status },
    el('td', {}, orderLink(view.order_id)),
    el('td', {}, timeEl(view.placed_at)),
    el('td', { class: 'num', text: String(itemCount(view)) }),
    el('td', { class: 'num', text: formatMoney(view.total, view.currency) }),
    statusCell(view.status));
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

function catalogRow(item, index) {
  const inputId = `qty-${index}`;
  const name = item.name || item.sku;
  const available = Number(item.available);
  return el('tr', { 'data-sku': item.sku, class: available === 0 ? 'sold-out' : undefined },
    el('th', { scope: 'row', text: name }),
    el('td', {}, el('code', { text: item.sku })),
    el('td', { class: 'num', text: formatMoney(item.unit_price, item.currency) }),
    el('td', { class: 'num', text: item.available === undefined ? '—' : String(item.available) }),
    el('td', { class: 'num' },
      el('label', { for: inputId, class: 'visually-hidden', text: `Quantity of ${name}` }),
      el('input', {
        id: inputId, class: 'qty', type: 'number', inputmode: 'numeric', min: 0, max: 1000, step: 1, value: 0,
        name: `qty-${item.sku}`, 'data-sku': item.sku,
      })));
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
  for (const input of qtyInputs(form)) {
    const quantity = readQuantity(input);
    if (!Number.isInteger(quantity) || quantity < 0 || quantity > 1000) {
      errors.push({ field: `quantity (${input.dataset.sku})`, message: 'Enter a whole number from 0 to 1000.', input });
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

  try {
    const { data } = await api('/api/catalog');
    if (!ctx.alive) return;
    catalog = Array.isArray(data) ? data : [];
    tbody.replaceChildren(...catalog.map(catalogRow));
    if (!catalog.length) tbody.append(el('tr', {}, el('td', { colspan: 5, class: 'muted', text: 'The catalog is empty.' })));
    updateCartTotal(form, catalog);
  } catch (err) {
    if (!ctx.alive) return;
    tbody.replaceChildren(el('tr', {}, el('td', { colspan: 5, class: 'muted', text: 'The catalog could not be loaded.' })));
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
  tbody.replaceChildren(...(view.lines || []).map((line) => el('tr', {},
    el('td', {}, el('code', { text: line.sku })),
    el('td', { class: 'num', text: String(line.quantity) }),
    el('td', { class: 'num', text: formatMoney(line.unit_price, view.currency) }),
    el('td', { class: 'num', text: formatMoney(Number(line.unit_price) * Number(line.quantity), view.currency) }))));
  $('#order-total', root).textContent = formatMoney(view.total, view.currency);
}

function renderOrder(root, view) {
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

  const reason = $('#order-reason', root);
  reason.hidden = !view.reason;
  if (view.reason) {
    reason.dataset.reason = view.reason;
    reason.replaceChildren('Reason: ', el('strong', { text: REASONS[view.reason] || view.reason }));
  }

  const tracking = $('#order-tracking', root);
  tracking.hidden = !(view.tracking || view.carrier);
  if (!tracking.hidden) {
    tracking.replaceChildren('Shipped with ', el('strong', { text: view.carrier || 'carrier' }));
    if (view.tracking) tracking.append(', tracking number ', el('code', { text: view.tracking }));
  }

  $('#cancel-form', root).hidden = !(CANCELLABLE.has(view.status) && session.role() !== 'analyst');
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
  let running = false;
  let again = false;

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
    renderOrder(main, view);
    body.hidden = false;
    if (eventsResult.status === 'fulfilled') {
      renderTimeline(main, eventsResult.value.data);
    } else if (!eventsResult.reason.sessionExpired) {
      const note = $('#timeline-note', main);
      note.textContent = `The event history is not available: ${(eventsResult.reason.problem || {}).title || 'error'}.`;
      note.hidden = false;
    }
  }

  /** Coalesces refreshes: live events arriving during a load trigger one more load afterwards. */
  async function refresh(minVersion = 0) {
    wantedVersion = Math.max(wantedVersion, Number(minVersion) || 0);
    if (running) { again = true; return; }
    running = true;
    try {
      do {
        again = false;
        await load(wantedVersion);
      } while (again && ctx.alive);
    } finally {
      running = false;
    }
  }

  listen(ctx, (event) => {
    if (event.order_id !== id || (event.version && event.version <= shownVersion)) return;
    announce(`Order ${shortId(id)} is now ${event.status}.`);
    refresh(event.version);
  });

  const cancelForm = $('#cancel-form', main);
  cancelForm.addEventListener('submit', async (event) => {
    event.preventDefault();
    const button = $('#cancel-order', main);
    const cancelErrors = $('#cancel-errors', main);
    if (button.disabled) return;
    showProblem(cancelErrors, null);
    const reason = $('#cancel-reason', main).value.trim() || 'Cancelled by the customer';
    setBusy(button, true, 'Cancelling…');
    try {
      const { data } = await api(`/api/orders/${encodeURIComponent(id)}/cancel`, { method: 'POST', body: { reason } });
      if (!ctx.alive) return;
      announce('Cancellation requested.');
      await refresh(data && data.version);
      if (ctx.alive && cancelForm.hidden) $('#order-title', main).focus();
    } catch (err) {
      if (ctx.alive) showProblem(cancelErrors, err);
    } finally {
      if (ctx.alive) setBusy(button, false);
    }
  });

  await refresh(0);
}

// ----- #/operator -----

function actionsFor(id, status, canAct) {
  if (!canAct) return [el('span', { class: 'muted', text: '—' })];
  if (status === 'confirmed') {
    const formId = `ship-form-${id}`;
    return [
      el('button', { type: 'button', class: 'ship', 'aria-expanded': 'false', 'aria-controls': formId, 'aria-label': `Ship order ${shortId(id)}`, text: 'Ship' }),
      el('form', { id: formId, class: 'ship-form', hidden: true, novalidate: true },
        el('label', {}, 'Carrier ', el('input', { name: 'carrier', type: 'text', list: 'carriers', required: true, maxlength: 100, autocomplete: 'off' })),
        el('label', {}, 'Tracking ', el('input', { name: 'tracking', type: 'text', required: true, maxlength: 100, autocomplete: 'off', spellcheck: 'false' })),
        el('button', { type: 'submit', class: 'primary', text: 'Confirm shipment' }),
        el('button', { type: 'button', class: 'ship-close ghost-dark', text: 'Close' })),
    ];
  }
  if (status === 'shipped') {
    return [el('button', { type: 'button', class: 'deliver', 'aria-label': `Deliver order ${shortId(id)}`, text: 'Deliver' })];
  }
  return [el('span', { class: 'muted', text: '—' })];
}

function renderActions(row, status, canAct) {
  $('td.actions', row).replaceChildren(...actionsFor(row.dataset.orderId, status, canAct));
}

function operatorRow(view, canAct) {
  const row = el('tr', { 'data-order-id': view.order_id, 'data-version': view.version, 'data-status': view.status },
    el('td', {}, orderLink(view.order_id)),
    el('td', {}, el('code', { title: view.customer_id || undefined, text: shortId(view.customer_id) || '—' })),
    el('td', {}, timeEl(view.placed_at)),
    el('td', { class: 'num', text: formatMoney(view.total, view.currency) }),
    statusCell(view.status),
    el('td', { class: 'actions' }));
  renderActions(row, view.status, canAct);
  return row;
}

function stockRow(item) {
  return el('tr', { 'data-sku': item.sku },
    el('td', {}, el('code', { text: item.sku })),
    el('td', { text: item.name || '' }),
    el('td', { class: 'num', text: formatMoney(item.unit_price, item.currency) }),
    el('td', { class: 'num available', text: String(item.available ?? '—') }));
}

async function operatorView({ main, ctx }) {
  mount(main, 'tpl-operator');
  const canAct = session.role() === 'operator';
  const errors = $('#operator-errors', main);
  const message = $('#operator-message', main);
  const filter = $('#operator-status', main);
  const tbody = $('#operator-orders tbody', main);
  const restockForm = $('#restock-form', main);
  const say = (text) => { message.textContent = text; };

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
      if (hadFocus) $('a', row).focus();
    },
  });
  const pager = orderPager({
    ctx, rows, limit: 50, query: () => (filter.value ? { status: filter.value } : {}),
    more: $('#operator-load-more', main), empty, errors,
  });

  async function refreshRow(id, minVersion) {
    try {
      const { data } = await api(orderPath(id, minVersion));
      if (ctx.alive && data) rows.onEvent({ order_id: data.order_id, status: data.status, version: Number(data.version) || 0 });
    } catch (err) {
      if (ctx.alive) showProblem(errors, err);
    }
  }

  async function command(row, action, body, button) {
    const id = row.dataset.orderId;
    showProblem(errors, null);
    setBusy(button, true);
    try {
      const { data } = await api(`/api/orders/${encodeURIComponent(id)}/${action}`, { method: 'POST', body });
      if (!ctx.alive) return;
      say(action === 'ship' ? `Order ${shortId(id)}: shipment recorded.` : `Order ${shortId(id)}: delivery recorded.`);
      await refreshRow(id, data && data.version);
    } catch (err) {
      if (ctx.alive) {
        showProblem(errors, err);
        errors.focus();
      }
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
    if (!button) return;
    const row = button.closest('tr');
    if (button.classList.contains('ship')) toggleShipForm(row, $('form.ship-form', row).hidden);
    else if (button.classList.contains('ship-close')) toggleShipForm(row, false);
    else if (button.classList.contains('deliver')) command(row, 'deliver', {}, button);
  });

  tbody.addEventListener('submit', (event) => {
    const form = event.target.closest('form.ship-form');
    if (!form) return;
    event.preventDefault();
    clearInvalid(form);
    const carrier = form.elements.carrier.value.trim();
    const tracking = form.elements.tracking.value.trim();
    const missing = [];
    if (!carrier) missing.push({ field: 'carrier', message: 'Required.', input: form.elements.carrier });
    if (!tracking) missing.push({ field: 'tracking', message: 'Required.', input: form.elements.tracking });
    if (missing.length) {
      showProblem(errors, clientProblem('Carrier and tracking number are needed to ship', missing));
      missing[0].input.focus();
      return;
    }
    command(form.closest('tr'), 'ship', { carrier, tracking }, $('button[type="submit"]', form));
  });

  tbody.addEventListener('keydown', (event) => {
    const form = event.target.closest && event.target.closest('form.ship-form');
    if (form && event.key === 'Escape') toggleShipForm(form.closest('tr'), false);
  });

  filter.addEventListener('change', () => pager.load(true));
  $('#operator-refresh', main).addEventListener('click', () => { pager.load(true); loadStock(); });

  listen(ctx, (event) => rows.onEvent(event));

  // ----- stock and restocking -----
  const skuSelect = $('#restock-sku', main);
  const qtyInput = $('#restock-qty', main);

  async function loadStock() {
    try {
      const { data } = await api('/api/catalog');
      if (!ctx.alive) return;
      const catalog = Array.isArray(data) ? data : [];
      $('#stock tbody', main).replaceChildren(...catalog.map(stockRow));
      const selected = skuSelect.value;
      skuSelect.replaceChildren(...catalog.map((item) => el('option', { value: item.sku, text: `${item.sku} — ${item.name || ''}` })));
      if (catalog.some((item) => item.sku === selected)) skuSelect.value = selected;
    } catch (err) {
      if (ctx.alive) showProblem(errors, err);
    }
  }

  restockForm.addEventListener('input', (event) => event.target.removeAttribute('aria-invalid'));
  restockForm.addEventListener('submit', async (event) => {
    event.preventDefault();
    clearInvalid(restockForm);
    showProblem(errors, null);
    const sku = skuSelect.value;
    const quantity = Number(qtyInput.value);
    if (!sku || !Number.isInteger(quantity) || quantity < 1) {
      const problems = [];
      if (!sku) problems.push({ field: 'sku', message: 'Choose a SKU.', input: skuSelect });
      if (!Number.isInteger(quantity) || quantity < 1) problems.push({ field: 'quantity', message: 'Enter a whole number of at least 1.', input: qtyInput });
      showProblem(errors, clientProblem('Cannot restock', problems));
      problems[0].input.focus();
      return;
    }
    const button = $('#restock-submit', main);
    setBusy(button, true, 'Restocking…');
    try {
      await api(`/api/catalog/${encodeURIComponent(sku)}/restock`, { method: 'POST', body: { quantity } });
      if (!ctx.alive) return;
      say(`Restocked ${sku} by ${quantity}.`);
      await loadStock();
    } catch (err) {
      if (ctx.alive) {
        showProblem(errors, err, (field) => (normalizeFieldPath(field) === 'quantity' ? qtyInput : null));
        errors.focus();
      }
    } finally {
      if (ctx.alive) setBusy(button, false);
    }
  });

  await Promise.all([pager.load(true), loadStock()]);
}

// ---------- 9. Chrome, router and boot ----------

function renderChrome() {
  const info = session.signedIn() ? session.info() : null;
  const role = info ? info.role : '';
  for (const item of $$('#site-nav [data-roles]')) {
    item.hidden = !info || !item.dataset.roles.split(' ').includes(role);
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
  if (match.route.roles && !match.route.roles.has(info.role)) return navigate(homeFor(info.role), true);

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

function boot() {
  $('#logout').addEventListener('click', logout);
  $('#skip-link').addEventListener('click', (event) => {
    event.preventDefault(); // a plain #main would be taken for a route
    $('#main').focus();
  });
  window.addEventListener('hashchange', route);
  // Signing in or out in another tab changes this tab's session too.
  window.addEventListener('storage', (event) => {
    if (event.key !== TOKEN_KEY && event.key !== null) return;
    live.stop();
    if (session.signedIn()) live.start();
    route();
  });
  if (session.signedIn()) live.start();
  route();
}

if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', boot);
else boot();
