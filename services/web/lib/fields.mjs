// @ts-check
/**
 * The API's field paths in words. A problem's field errors name a path ("lines[0].quantity");
 * users see a label ("Quantity of item 1") and the path only as a tooltip. Pure (no DOM).
 */

/**
 * Human names for the API's field paths (normalized: "lines.0.quantity", "shipping_address.city").
 * @type {Readonly<Record<string, string>>}
 */
export const FIELD_LABELS = {
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
  tracking_number: 'Tracking number',
  quantity: 'Quantity',
  sku: 'SKU',
  reason: 'Cancellation reason',
};

/**
 * "shipping_address.city", "/shipping_address/city", "lines[0].quantity" → dotted "lines.0.quantity".
 * @param {unknown} field
 */
export function normalizeFieldPath(field) {
  return String(field || '')
    .trim()
    .replace(/^\$\.?/, '')
    .replace(/^\//, '')
    .replace(/\//g, '.')
    .replace(/\[(\d+)\]/g, '.$1')
    .replace(/^body\./, '');
}

/**
 * A field path in words: a known label, "Item 2" for lines[1], else the last segment spelled out.
 * @param {unknown} field
 * @returns {string}
 */
export function humanField(field) {
  const path = normalizeFieldPath(field);
  if (!path) return '';
  if (FIELD_LABELS[path]) return FIELD_LABELS[path];
  const line = /^lines\.(\d+)(?:\.(\w+))?$/.exec(path);
  if (line) {
    const item = `item ${Number(line[1]) + 1}`;
    return line[2] ? `${humanField(line[2])} of ${item}` : `Item ${Number(line[1]) + 1}`;
  }
  const last = path.slice(path.lastIndexOf('.') + 1).replace(/_/g, ' ');
  return last.charAt(0).toUpperCase() + last.slice(1);
}

/**
 * What follows a field's label in a field error: server messages continue the sentence
 * ("is required" → " is required."), client ones stand alone ("Required." → ": Required.").
 * @param {string} message
 */
export function afterLabel(message) {
  return /^[a-z]/.test(message) ? ` ${message}${/[.!?]$/.test(message) ? '' : '.'}` : `: ${message}`;
}
