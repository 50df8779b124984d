// @ts-check
/**
 * #/operator: every order with its next action (ship, deliver), the stock with restocking,
 * and (operators only) the dead letters. Analysts see it read-only.
 */
import { api, clientProblem } from '../lib/api.mjs';
import { catalogCache, watchCatalog } from '../lib/catalog.mjs';
import { $, $$, $maybe, el, focusStatus, mount, rowOf, setBusy, targetOf, timeEl, updateText } from '../lib/dom.mjs';
import { normalizeFieldPath } from '../lib/fields.mjs';
import { formatMoney, orderPath, shortId } from '../lib/format.mjs';
import { listen } from '../lib/live.mjs';
import { clearInvalid, showProblem, unmarkOnInput } from '../lib/problems.mjs';
import { orderCell, orderPager, orderRows, statusCell } from '../lib/rows.mjs';
import { session } from '../lib/session.mjs';
import { focusCarrier, markShipProblem, shipFieldResolver, shipFormBody, shipFormErrors } from '../lib/ship.mjs';
import { deadLetterSection } from './dead-letters.mjs';

/**
 * @typedef {import('../lib/rows.mjs').OrderView} OrderView
 * @typedef {import('../lib/catalog.mjs').CatalogItem} CatalogItem
 * @typedef {import('../lib/api.mjs').FieldError} FieldError
 */

/** @param {string} id @param {string} status @param {boolean} canAct */
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
        el('label', {}, 'Tracking number ', el('input', { name: 'tracking_number', type: 'text', required: true, 'data-limit': 'ShipBody.tracking_number', autocomplete: 'off', spellcheck: 'false' })),
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

/** @param {HTMLTableRowElement} row @param {string} status @param {boolean} canAct */
function renderActions(row, status, canAct) {
  $('td.actions', row).replaceChildren(...actionsFor(row.dataset.orderId || '', status, canAct));
}

/** After a row's action: focus its next action (Ship → Deliver) or else its status word. @param {HTMLTableRowElement} row */
function focusRowNext(row) {
  const next = $$('td.actions button', row, HTMLButtonElement).find((button) => !button.disabled && !button.closest('[hidden]'));
  if (next) next.focus(); else focusStatus($('.status', row));
}

/** @param {OrderView} view @param {boolean} canAct */
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

/** @param {number | null | undefined} value */
const number = (value) => (value === undefined || value === null ? '—' : String(value));

/** @param {CatalogItem} item */
function stockRow(item) {
  return el('tr', { 'data-sku': item.sku },
    el('td', {}, el('code', { text: item.sku })),
    el('td', { text: item.name || '' }),
    el('td', { class: 'num wide-only', 'data-price': '', text: formatMoney(item.unit_price, item.currency) }),
    el('td', { class: 'num available', 'data-available': '', text: number(item.available) }),
    el('td', { class: 'num wide-only', 'data-on-hand': '', text: number(item.on_hand) }),
    el('td', { class: 'num wide-only', 'data-reserved': '', text: number(item.reserved) }));
}

/** @param {HTMLTableRowElement} row @param {CatalogItem} item */
function updateStockRow(row, item) {
  updateText($('[data-price]', row), formatMoney(item.unit_price, item.currency));
  updateText($('[data-available]', row), number(item.available));
  updateText($('[data-on-hand]', row), number(item.on_hand));
  updateText($('[data-reserved]', row), number(item.reserved));
}

/** @param {import('../lib/router.mjs').ViewContext} ctx */
export async function operatorView({ main, signal }) {
  mount(main, 'tpl-operator');
  const canAct = session.role() === 'operator';
  const errors = $('#operator-errors', main);
  const message = $('#operator-message', main);
  const filter = $('#operator-status', main, HTMLSelectElement);
  const tbody = $('#operator-orders tbody', main, HTMLTableSectionElement);
  const restockForm = $('#restock-form', main, HTMLFormElement);
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
    signal,
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
    signal, rows, limit: 50, query: () => (filter.value ? { status: filter.value } : /** @type {Record<string, string>} */ ({})),
    more: $('#operator-load-more', main, HTMLButtonElement), empty, errors,
  });

  /** @param {string} id @param {number} minVersion */
  async function refreshRow(id, minVersion) {
    try {
      const { data } = await api(orderPath(id, minVersion), { signal });
      if (!signal.aborted && data) rows.onEvent({ order_id: data.order_id, status: data.status, version: Number(data.version) || 0, reason: data.reason });
    } catch (err) {
      if (!signal.aborted) showProblem(errors, err);
    }
  }

  /**
   * @param {HTMLTableRowElement} row
   * @param {'ship' | 'deliver'} action
   * @param {object} body
   * @param {HTMLButtonElement} button
   */
  async function command(row, action, body, button) {
    const id = row.dataset.orderId || '';
    clearMessages();
    setBusy(button, true);
    try {
      const { data } = await api(`/api/orders/${encodeURIComponent(id)}/${action}`, { method: 'POST', body });
      if (signal.aborted) return;
      message.textContent = action === 'ship' ? `Order ${shortId(id)}: shipment recorded.` : `Order ${shortId(id)}: delivery recorded.`;
      await refreshRow(id, data && data.version);
      // The pressed button was disabled (and may be gone): keep the place in this row.
      const focus = document.activeElement;
      if (!signal.aborted && row.isConnected && (!focus || focus === document.body || row.contains(focus) || button.contains(focus))) {
        focusRowNext(row);
      }
    } catch (err) {
      if (signal.aborted) return;
      const box = $maybe('.row-errors', row);
      if (!box) {
        showProblem(errors, err);
        errors.focus();
        return;
      }
      const form = $maybe('form.ship-form', row, HTMLFormElement);
      const first = form ? showProblem(box, err, shipFieldResolver(form)) || markShipProblem(form, err) : showProblem(box, err);
      (first || box).focus();
    } finally {
      if (button.isConnected) setBusy(button, false);
    }
  }

  /** @param {HTMLTableRowElement} row @param {boolean} open */
  function toggleShipForm(row, open) {
    const toggle = $maybe('button.ship', row);
    const form = $maybe('form.ship-form', row, HTMLFormElement);
    if (!toggle || !form) return;
    form.hidden = !open;
    toggle.setAttribute('aria-expanded', String(open));
    if (open) focusCarrier(form); else toggle.focus();
  }

  tbody.addEventListener('click', (event) => {
    const button = targetOf(event).closest('button');
    if (!button || button.disabled) return;
    const row = rowOf(button);
    if (button.classList.contains('ship')) toggleShipForm(row, $('form.ship-form', row).hidden);
    else if (button.classList.contains('ship-close')) toggleShipForm(row, false);
    else if (button.classList.contains('deliver')) command(row, 'deliver', {}, button);
  }, { signal });

  unmarkOnInput(tbody, signal);
  tbody.addEventListener('submit', (event) => {
    const form = targetOf(event).closest('form.ship-form');
    if (!(form instanceof HTMLFormElement)) return;
    event.preventDefault();
    const button = $('button[type="submit"]', form, HTMLButtonElement);
    if (button.disabled) return;
    clearMessages();
    const missing = shipFormErrors(form);
    if (missing.length) {
      showProblem($('.row-errors', form), clientProblem('Carrier and tracking number are needed to ship', missing));
      missing[0].input?.focus();
      return;
    }
    command(rowOf(form), 'ship', shipFormBody(form), button);
  }, { signal });

  tbody.addEventListener('keydown', (event) => {
    const form = targetOf(event).closest('form.ship-form');
    if (form && event.key === 'Escape') toggleShipForm(rowOf(form), false);
  }, { signal });

  filter.addEventListener('change', () => pager.load(true), { signal });
  $('#operator-refresh', main).addEventListener('click', () => { pager.load(true); refreshStock(); }, { signal });

  listen(signal, (event) => rows.onEvent(event));

  // ----- stock and restocking -----
  const stockBody = $('#stock tbody', main, HTMLTableSectionElement);
  const skuSelect = $('#restock-sku', main, HTMLSelectElement);
  const qtyInput = $('#restock-qty', main, HTMLInputElement);

  /** Numbers are updated in place; rows and options are rebuilt only when the SKUs change. @param {CatalogItem[]} catalog */
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
    for (const item of catalog) {
      const row = rowsBySku.get(item.sku);
      if (row) updateStockRow(row, item);
    }
  }

  // Stock moves with every order: keep the table current while the page is shown.
  const refreshStock = watchCatalog(signal, showStock);

  async function loadStock() {
    try {
      const catalog = await catalogCache.load(true);
      if (!signal.aborted) showStock(catalog);
    } catch (err) {
      if (!signal.aborted) showProblem(restockErrors, err);
    }
  }

  unmarkOnInput(restockForm, signal);
  restockForm.addEventListener('submit', async (event) => {
    event.preventDefault();
    const button = $('#restock-submit', main, HTMLButtonElement);
    if (button.disabled) return;
    clearMessages();
    const sku = skuSelect.value;
    const quantity = Number(qtyInput.value);
    if (!sku || !Number.isInteger(quantity) || quantity < 1) {
      /** @type {FieldError[]} */
      const problems = [];
      if (!sku) problems.push({ field: 'sku', message: 'Choose a SKU.', input: skuSelect });
      if (!Number.isInteger(quantity) || quantity < 1) problems.push({ field: 'quantity', message: 'Enter a whole number of at least 1.', input: qtyInput });
      showProblem(restockErrors, clientProblem('Cannot restock', problems));
      problems[0].input?.focus();
      return;
    }
    setBusy(button, true, 'Restocking…');
    try {
      await api(`/api/catalog/${encodeURIComponent(sku)}/restock`, { method: 'POST', body: { quantity } });
      if (signal.aborted) return;
      restockMessage.textContent = `Restocked ${sku} by ${quantity}.`;
      await loadStock();
    } catch (err) {
      if (!signal.aborted) {
        const path = (/** @type {string} */ field) => normalizeFieldPath(field);
        const first = showProblem(restockErrors, err, (field) => (path(field) === 'quantity' ? qtyInput : path(field) === 'sku' ? skuSelect : null));
        (first || restockErrors).focus();
      }
    } finally {
      if (!signal.aborted) {
        setBusy(button, false);
        if (document.activeElement === document.body) button.focus();
      }
    }
  }, { signal });

  const deadLetters = canAct ? deadLetterSection(main, signal) : null;
  await Promise.all([pager.load(true), loadStock(), deadLetters && deadLetters.load()]);
}
