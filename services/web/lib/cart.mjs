// @ts-check
/**
 * The shop's arithmetic and client-side checks, pure (no DOM): what the quantity inputs and
 * the address amount to, and what the server would refuse (it checks everything again).
 */
import { formatMoney } from './format.mjs';

/**
 * A quantity input's value: '' is 0; anything else as typed (NaN when it is no number).
 * @param {string} raw
 */
export function readQuantity(raw) {
  const text = raw.trim();
  return text === '' ? 0 : Number(text);
}

/**
 * Why a quantity cannot be ordered, or '' when it can; `most` is the server's most per line
 * when the OpenAPI document could be read.
 * @param {number} quantity
 * @param {number | undefined} most
 */
export function quantityError(quantity, most) {
  if (Number.isInteger(quantity) && quantity >= 0 && (most === undefined || quantity <= most)) return '';
  const range = most === undefined ? 'a whole number, 0 or more' : `a whole number from 0 to ${most}`;
  return `Enter ${range}.`;
}

/**
 * Why an address field's value cannot be sent, or ''.
 * @param {string} key the AddressBody property
 * @param {string} value trimmed
 * @param {boolean} required
 */
export function addressError(key, value, required) {
  if (required && !value) return 'Required.';
  if (key === 'country' && value && !/^[A-Za-z]{2}$/.test(value)) return 'Use a two-letter country code, e.g. DE.';
  return '';
}

/**
 * @typedef {{sku: string, quantity: number}} Line
 * @typedef {{sku: string, unit_price: number | string, currency: string}} Priced
 */

/**
 * The cart's total in words, one sum per currency ("12.99 EUR + 3.00 USD"); "—" when empty.
 * Lines whose SKU the catalog does not hold (any longer) count for nothing.
 * @param {Line[]} lines
 * @param {Priced[]} catalog
 */
export function cartTotal(lines, catalog) {
  const prices = new Map(catalog.map((item) => [item.sku, item]));
  /** @type {Map<string, number>} */
  const totals = new Map();
  for (const line of lines) {
    const item = prices.get(line.sku);
    if (!item) continue;
    totals.set(item.currency, (totals.get(item.currency) || 0) + line.quantity * Number(item.unit_price));
  }
  return totals.size ? Array.from(totals, ([currency, minor]) => formatMoney(minor, currency)).join(' + ') : '—';
}
