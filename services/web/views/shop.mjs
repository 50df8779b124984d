// @ts-check
/** #/shop: the catalog with quantity inputs, the shipping address, placing the order. */
import { ApiError, api, clientProblem, isRetryable } from '../lib/api.mjs';
import { addressError, cartTotal, quantityError, readQuantity } from '../lib/cart.mjs';
import { catalogCache, watchCatalog } from '../lib/catalog.mjs';
import { $, $$, el, mount, setBusy, targetOf, updateText } from '../lib/dom.mjs';
import { normalizeFieldPath } from '../lib/fields.mjs';
import { availableText, formatMoney, newIdempotencyKey, orderHref, shortId } from '../lib/format.mjs';
import { maxima } from '../lib/limits.mjs';
import { clearInvalid, showProblem } from '../lib/problems.mjs';
import { navigate } from '../lib/router.mjs';
import { itemLabel } from '../lib/rows.mjs';
import { rememberAddress, rememberedAddress } from '../lib/session.mjs';
import { state } from '../lib/state.mjs';

/**
 * @typedef {import('../lib/catalog.mjs').CatalogItem} CatalogItem
 * @typedef {import('../lib/cart.mjs').Line} Line
 * @typedef {import('../lib/api.mjs').FieldError} FieldError
 */

/** @type {[keyof import('../lib/session.mjs').Address, string, boolean][]} [JSON key, input selector, required] */
const ADDRESS_FIELDS = [
  ['name', '#ship-name', true],
  ['line1', '#ship-line1', true],
  ['line2', '#ship-line2', false],
  ['city', '#ship-city', true],
  ['postal_code', '#ship-postal', true],
  ['country', '#ship-country', true],
];

/**
 * A shop row. Price and availability have their own columns on wide screens; on narrow ones
 * those columns are hidden and the same facts are shown under the item name instead.
 * @param {CatalogItem} item
 * @param {number} index
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

/**
 * Refresh a shop row's numbers in place; the quantity the user typed is left alone.
 * @param {HTMLTableRowElement} row
 * @param {CatalogItem} item
 */
function updateCatalogRow(row, item) {
  row.classList.toggle('sold-out', Number(item.available) === 0);
  for (const node of $$('[data-available]', row)) updateText(node, availableText(item));
  for (const node of $$('[data-price]', row)) updateText(node, formatMoney(item.unit_price, item.currency));
}

/** @param {HTMLFormElement} form */
function qtyInputs(form) {
  return $$('input.qty', form, HTMLInputElement);
}

/** @param {HTMLFormElement} form @param {string} sku */
function qtyInputFor(form, sku) {
  return qtyInputs(form).find((input) => input.dataset.sku === sku) || null;
}

/** @param {HTMLFormElement} form @param {string} selector */
function input(form, selector) {
  return $(selector, form, HTMLInputElement);
}

/** @param {HTMLFormElement} form @returns {Line[]} */
function collectLines(form) {
  const lines = [];
  for (const qty of qtyInputs(form)) {
    const quantity = readQuantity(qty.value);
    if (Number.isInteger(quantity) && quantity > 0) lines.push({ sku: qty.dataset.sku || '', quantity });
  }
  return lines;
}

/** @param {HTMLFormElement} form */
function collectAddress(form) {
  /** @type {import('../lib/session.mjs').Address} */
  const address = {};
  for (const [key, selector] of ADDRESS_FIELDS) {
    let value = input(form, selector).value.trim();
    if (key === 'country') value = value.toUpperCase();
    if (value || key !== 'line2') address[key] = value;
  }
  return address;
}

/**
 * Client-side checks, reported exactly like the server's field errors.
 * @param {HTMLFormElement} form
 * @param {Line[]} lines
 * @returns {FieldError[]}
 */
function validateOrderForm(form, lines) {
  const errors = [];
  // The server's most per line, when the OpenAPI document could be read (it checks anyway).
  const most = maxima.get('LineBody.quantity');
  for (const qty of qtyInputs(form)) {
    const message = quantityError(readQuantity(qty.value), most);
    if (message) errors.push({ field: `lines[sku=${qty.dataset.sku}].quantity`, message, input: qty });
  }
  if (!errors.length && !lines.length) {
    errors.push({ field: 'lines', message: 'Choose a quantity for at least one item.' });
  }
  for (const [key, selector, required] of ADDRESS_FIELDS) {
    const field = input(form, selector);
    const message = addressError(key, field.value.trim(), required);
    if (message) errors.push({ field: `shipping_address.${key}`, message, input: field });
  }
  return errors;
}

/**
 * Maps a server field path onto the order form's inputs.
 * @param {HTMLFormElement} form
 * @param {Line[]} submittedLines
 * @returns {import('../lib/problems.mjs').FieldResolver}
 */
function orderFieldResolver(form, submittedLines) {
  /** @type {Record<string, string>} */
  const addressInputs = Object.fromEntries(ADDRESS_FIELDS.map(([key, selector]) => [key, selector]));
  return (field) => {
    const path = normalizeFieldPath(field);
    let match = /^shipping_address\.(\w+)/.exec(path);
    if (match && addressInputs[match[1]]) return input(form, addressInputs[match[1]]);
    match = /^lines\.(\d+)(?:\.|$)/.exec(path);
    if (match) {
      const line = submittedLines[Number(match[1])];
      return line ? qtyInputFor(form, line.sku) : null;
    }
    return null;
  };
}

/** @param {HTMLFormElement} form @param {CatalogItem[]} catalog */
function updateCartTotal(form, catalog) {
  $('#cart-total', form).textContent = cartTotal(collectLines(form), catalog);
}

/** @param {string} orderId */
function showOrderResult(orderId) {
  const link = $('#order-link', document, HTMLAnchorElement);
  link.href = orderHref(orderId);
  link.textContent = `View order ${shortId(orderId)}`;
  $('#order-result').hidden = false;
  $('#order-result-text').textContent = 'Order placed.';
  state.keepOrderResult = true;
}

/** @param {import('../lib/router.mjs').ViewContext} ctx */
export async function shopView({ main, signal }) {
  mount(main, 'tpl-shop');
  const form = $('#order-form', main, HTMLFormElement);
  const tbody = $('#catalog tbody', main, HTMLTableSectionElement);
  const errors = $('#form-errors', main);
  const button = $('#place-order', main, HTMLButtonElement);
  /** @type {CatalogItem[]} */
  let catalog = [];

  const saved = rememberedAddress();
  if (saved) {
    for (const [key, selector] of ADDRESS_FIELDS) {
      if (typeof saved[key] === 'string') input(form, selector).value = saved[key];
    }
  }

  /** Show a catalog read: new rows for new SKUs, fresh numbers (never the inputs) for known ones. @param {CatalogItem[]} items */
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
    const target = targetOf(event);
    target.removeAttribute('aria-invalid');
    if (target.matches('input.qty')) updateCartTotal(form, catalog);
  }, { signal });

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
      // No signal: once sent, the order may be placed whether or not this page is still shown.
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
      if (!signal.aborted) navigate('#/orders');
    } catch (err) {
      if (!isRetryable(err)) state.orderAttempt = null;
      if (signal.aborted) return;
      const first = showProblem(errors, err, orderFieldResolver(form, lines));
      (first || errors).focus();
    } finally {
      if (!signal.aborted) setBusy(button, false);
    }
  }, { signal });

  // Stock moves while the page is open: keep the numbers current (the timer stops on leave).
  watchCatalog(signal, showCatalog);
  try {
    const items = await catalogCache.load(true);
    if (!signal.aborted) showCatalog(items);
  } catch (err) {
    if (signal.aborted || tbody.querySelector('tr[data-sku]')) return;
    tbody.replaceChildren(el('tr', {}, el('td', { colspan: 4, class: 'muted', text: 'The catalog could not be loaded.' })));
    showProblem(errors, err);
  }
}
