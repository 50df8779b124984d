// @ts-check
/**
 * Text for the page: money in minor units, times, short ids, sentences, URLs of orders. Pure
 * (no DOM), so `node --test services/web/` checks it (format.test.mjs).
 */

/** Reasons a rejected or cancelled order carries, in words. */
/** @type {Readonly<Record<string, string>>} */
export const REASONS = { out_of_stock: 'Out of stock', payment_declined: 'Payment declined' };

/** @type {Map<string, number>} */
const digitsCache = new Map();

/**
 * The minor-unit digits of an ISO 4217 currency (2 for EUR, 0 for JPY, 3 for BHD); 2 when the
 * code is missing or unknown to this browser.
 * @param {string | undefined | null} currency
 * @returns {number}
 */
export function currencyDigits(currency) {
  if (!currency) return 2;
  let digits = digitsCache.get(currency);
  if (digits === undefined) {
    digits = 2;
    try {
      digits = new Intl.NumberFormat('en', { style: 'currency', currency }).resolvedOptions().maximumFractionDigits ?? 2;
    } catch { /* unknown code: assume cents */ }
    digitsCache.set(currency, digits);
  }
  return digits;
}

/**
 * Integer minor units to text: formatMoney(1299, 'EUR') === '12.99 EUR'.
 * @param {number | string | null | undefined} minor
 * @param {string} [currency]
 */
export function formatMoney(minor, currency) {
  const amount = Number(minor);
  if (minor === null || minor === undefined || !Number.isFinite(amount)) return '—';
  const digits = currencyDigits(currency);
  const text = (amount / 10 ** digits).toFixed(digits);
  return currency ? `${text} ${currency}` : text;
}

/** @param {string | null | undefined} iso */
export function formatTime(iso) {
  if (!iso) return '—';
  const date = new Date(iso);
  return Number.isNaN(date.getTime()) ? String(iso) : date.toLocaleString();
}

/**
 * The last 8 hex digits of a UUID: v7 ids begin with a timestamp (orders placed close together
 * share their first digits), while their last digits, like a v5 id's, are effectively random.
 * @param {string | null | undefined} id
 */
export function shortId(id) {
  const text = String(id || '');
  const hex = text.replace(/-/g, '');
  return /^[0-9a-f]{32}$/i.test(hex) ? hex.slice(-8).toLowerCase() : text.slice(0, 8);
}

/**
 * "the request has invalid fields" → "The request has invalid fields."
 * @param {unknown} text
 */
export function sentence(text) {
  const value = String(text || '').trim();
  if (!value) return '';
  const capital = value.charAt(0).toUpperCase() + value.slice(1);
  return /[.!?…]$/.test(capital) ? capital : `${capital}.`;
}

/** @param {string} id */
export function orderHref(id) {
  return `#/orders/${encodeURIComponent(id)}`;
}

/**
 * The order's view; `min_version` asks the server to wait until its projection has caught up.
 * @param {string} id
 * @param {number} [minVersion]
 */
export function orderPath(id, minVersion = 0) {
  const base = `/api/orders/${encodeURIComponent(id)}`;
  return minVersion > 0 ? `${base}?min_version=${encodeURIComponent(minVersion)}` : base;
}

/** @param {unknown} value */
export function prettyJson(value) {
  try { return JSON.stringify(value, null, 2); } catch { return String(value); }
}

/** A fresh v4 UUID for an Idempotency-Key. */
export function newIdempotencyKey() {
  if (globalThis.crypto && typeof crypto.randomUUID === 'function') return crypto.randomUUID();
  // randomUUID exists only in secure contexts (https, localhost); build a v4 UUID otherwise.
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  bytes[6] = (bytes[6] & 0x0f) | 0x40;
  bytes[8] = (bytes[8] & 0x3f) | 0x80;
  const hex = Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

/**
 * A datetime-local value (local time, no zone) as RFC 3339 UTC, or '' when empty.
 * @param {string} value
 */
export function localToIso(value) {
  if (!value) return '';
  const date = new Date(value);
  return Number.isNaN(date.getTime()) ? '' : date.toISOString();
}

/**
 * "?a=1&b=2" from the parameters that have a value; '' when none has.
 * @param {Record<string, string | null | undefined>} params
 */
export function queryString(params) {
  const search = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) if (value) search.set(key, value);
  const text = search.toString();
  return text ? `?${text}` : '';
}

/**
 * Shown next to a rejected or cancelled status: the rejection reason or the cancellation note.
 * @param {string} status
 * @param {string | null | undefined} reason
 */
export function reasonText(status, reason) {
  if (!reason || (status !== 'rejected' && status !== 'cancelled')) return '';
  return REASONS[reason] || String(reason);
}

/** @param {{available?: number | null}} item */
export function availableText(item) {
  return item.available === undefined || item.available === null ? '—' : String(item.available);
}

/** @param {{lines?: {quantity: number | string}[]}} view */
export function itemCount(view) {
  return (view.lines || []).reduce((sum, line) => sum + (Number(line.quantity) || 0), 0);
}

/** The order of statuses on the analyst page: the lifecycle's, unknown ones last. */
const LIFECYCLE = ['placed', 'confirmed', 'shipped', 'delivered', 'rejected', 'cancelled'];

/**
 * Counts per status in lifecycle order.
 * @param {Record<string, number>} counts
 * @returns {[string, number][]}
 */
export function byLifecycle(counts = {}) {
  const rank = (/** @type {string} */ name) => (LIFECYCLE.includes(name) ? LIFECYCLE.indexOf(name) : LIFECYCLE.length);
  return Object.entries(counts || {}).sort(([a], [b]) => rank(a) - rank(b));
}

/**
 * @typedef {{state: string, folded: number, total?: number | null, events_per_second?: number,
 *   generation?: number, error?: string | null}} ReplayStatus
 */

/**
 * A replay's progress in one line: "Running: 40 of 100 events (12 events/s)".
 * @param {ReplayStatus} status
 */
export function replayLine(status) {
  const total = Number(status.total) || 0;
  const of = total ? ` of ${total}` : '';
  const rate = Math.round(status.events_per_second || 0);
  /** @type {Record<string, string>} */
  const states = { running: 'Running', succeeded: 'Done', failed: 'Failed' };
  let line = `${states[status.state] || status.state}: ${status.folded}${of} events (${rate} events/s)`;
  if (status.state === 'succeeded') line += `; readers switched to generation ${status.generation}`;
  if (status.error) line += `: ${status.error}`;
  return line;
}
