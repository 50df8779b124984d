// @ts-check
/** #/orders/<id>: one order, its event timeline, cancelling, and (operators) shipping it. */
import { api, clientProblem } from '../lib/api.mjs';
import { catalogCache } from '../lib/catalog.mjs';
import { $, $$, announce, el, focusStatus, mount, setBusy, timeEl } from '../lib/dom.mjs';
import { REASONS, formatMoney, orderPath, shortId } from '../lib/format.mjs';
import { listen } from '../lib/live.mjs';
import { clearInvalid, showProblem, unmarkOnInput } from '../lib/problems.mjs';
import { eventItem, itemLabel } from '../lib/rows.mjs';
import { session } from '../lib/session.mjs';
import { markShipProblem, shipFieldResolver, shipFormBody, shipFormErrors } from '../lib/ship.mjs';

/**
 * @typedef {import('../lib/rows.mjs').OrderView} OrderView
 * @typedef {import('../lib/rows.mjs').StoredEvent} StoredEvent
 */

/** Statuses a customer (or an operator) may still cancel from. */
const CANCELLABLE = new Set(['placed', 'confirmed']);

/** @param {HTMLElement} node @param {import('../lib/session.mjs').Address | undefined} address */
function renderAddress(node, address) {
  node.replaceChildren();
  if (!address) return;
  const lines = /** @type {string[]} */ ([
    address.name,
    address.line1,
    address.line2,
    [address.postal_code, address.city].filter(Boolean).join(' '),
    address.country,
  ].filter(Boolean));
  lines.forEach((line, i) => {
    if (i) node.append(el('br'));
    node.append(line);
  });
}

/** @param {HTMLElement} dl @param {OrderView} view */
function renderMeta(dl, view) {
  /** @type {[string, Node | string][]} */
  const entries = [
    ['Order id', el('code', { text: view.order_id })],
    ['Customer', el('code', { text: view.customer_id || '—' })],
    ['Placed', timeEl(view.placed_at)],
    ['Updated', timeEl(view.updated_at)],
    ['Version', String(view.version)],
  ];
  dl.replaceChildren(...entries.flatMap(([term, value]) => [el('dt', { text: term }), el('dd', {}, value)]));
}

/** @param {HTMLElement} root @param {OrderView} view */
function renderLines(root, view) {
  const tbody = $('#order-lines tbody', root);
  tbody.replaceChildren(...(view.lines || []).map((line) => el('tr', { 'data-sku': line.sku },
    el('th', { scope: 'row' },
      ...itemLabel((catalogCache.find(line.sku) || { name: undefined }).name, line.sku),
      el('span', { class: 'cell-facts narrow-only', text: `${formatMoney(line.unit_price, view.currency)} each` })),
    el('td', { class: 'num', text: String(line.quantity) }),
    el('td', { class: 'num wide-only', text: formatMoney(line.unit_price, view.currency) }),
    el('td', { class: 'num', text: formatMoney(Number(line.unit_price) * Number(line.quantity), view.currency) }))));
  $('#order-total', root).textContent = formatMoney(view.total, view.currency);
}

/**
 * "cancelled by an operator" etc., from the OrderCancelled event's metadata.actor.
 * @param {StoredEvent[]} events
 */
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

/** @param {HTMLElement} root @param {OrderView} view @param {StoredEvent[]} events */
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

/** @param {HTMLElement} root @param {OrderView} view @param {StoredEvent[]} events */
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
  tracking.hidden = !(view.tracking_number || view.carrier);
  if (!tracking.hidden) {
    tracking.replaceChildren('Shipped with ', el('strong', { text: view.carrier || 'carrier' }));
    if (view.tracking_number) tracking.append(', tracking number ', el('code', { text: view.tracking_number }));
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

/** @param {HTMLElement} root @param {StoredEvent[]} events */
function renderTimeline(root, events) {
  const list = $('#timeline', root);
  const note = $('#timeline-note', root);
  const open = new Set($$('li', list).filter((li) => $('details', li, HTMLDetailsElement).open).map((li) => li.dataset.eventId));
  const sorted = (Array.isArray(events) ? events : []).slice().sort((a, b) => a.version - b.version);
  list.replaceChildren(...sorted.map((event) => eventItem(event, open.has(String(event.event_id)))));
  note.hidden = sorted.length > 0;
  note.textContent = sorted.length ? '' : 'No events recorded yet.';
}

/** @param {import('../lib/router.mjs').ViewContext} ctx */
export async function orderDetailView({ main, signal, params }) {
  mount(main, 'tpl-order');
  const id = params[0];
  const loading = $('#order-loading', main);
  const body = $('#order-body', main);
  const loadErrors = $('#detail-errors', main);
  let shownVersion = 0;
  let wantedVersion = 0;
  /** The refresh loop's promise while one runs. @type {Promise<void> | null} */
  let running = null;
  let again = false;
  /** @type {OrderView | null} */
  let shownView = null;

  function notFound() {
    loading.hidden = true;
    body.hidden = true;
    $('#order-title', main).textContent = 'Order not found';
    $('#order-missing', main).hidden = false;
    document.title = 'Order not found · orderflow';
  }

  /** @param {number} minVersion */
  async function load(minVersion) {
    const [viewResult, eventsResult] = await Promise.allSettled([
      api(orderPath(id, minVersion), { signal }),
      api(`/api/orders/${encodeURIComponent(id)}/events`, { signal }),
    ]);
    if (signal.aborted) return;
    loading.hidden = true;
    if (viewResult.status === 'rejected') {
      if (viewResult.reason.status === 404) notFound();
      else showProblem(loadErrors, viewResult.reason);
      return;
    }
    /** @type {OrderView} */
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
   * @param {number} [minVersion]
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
        } while (again && !signal.aborted);
      } finally {
        running = null;
      }
    })();
    return running;
  }

  listen(signal, (event) => {
    if (event.order_id !== id || (event.version && event.version <= shownVersion)) return;
    announce(`Order ${shortId(id)} is now ${event.status}.`);
    refresh(event.version);
  });

  // Product names for the lines: the catalog is cached for the session.
  catalogCache.load()
    .then(() => { if (!signal.aborted && shownView) renderLines(main, shownView); })
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
  const cancelForm = $('#cancel-form', main, HTMLFormElement);
  const cancelButton = $('#cancel-order', main, HTMLButtonElement);
  const confirmBox = $('#cancel-confirm', main);
  const yesButton = $('#cancel-yes', main, HTMLButtonElement);

  /** @param {boolean} open */
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
  }, { signal });
  $('#cancel-keep', main).addEventListener('click', () => askToCancel(false), { signal });
  confirmBox.addEventListener('keydown', (event) => {
    if (event.key === 'Escape' && !yesButton.disabled) askToCancel(false);
  }, { signal });
  yesButton.addEventListener('click', async () => {
    if (yesButton.disabled) return;
    clearMessages();
    const reason = $('#cancel-reason', main, HTMLInputElement).value.trim();
    setBusy(yesButton, true, 'Cancelling…');
    try {
      const { data } = await api(`/api/orders/${encodeURIComponent(id)}/cancel`, { method: 'POST', body: reason ? { reason } : {} });
      if (signal.aborted) return;
      announce('Cancellation requested.');
      await refresh(data && data.version);
      if (signal.aborted) return;
      if (cancelForm.hidden) $('#order-title', main).focus();
      else askToCancel(false);
    } catch (err) {
      if (signal.aborted) return;
      showProblem(cancelErrors, err);
      askToCancel(false);
    } finally {
      if (!signal.aborted) setBusy(yesButton, false);
    }
  }, { signal });

  // Operators ship and deliver from here too (the same calls as the operations table).
  const shipForm = $('#ship-order-form', main, HTMLFormElement);
  const deliverButton = $('#deliver-order', main, HTMLButtonElement);

  /** After an action, focus the next step (Deliver) or the status. */
  function focusNextStep() {
    if (!deliverButton.hidden && !$('#order-actions', main).hidden) deliverButton.focus();
    else focusStatus($('.status-line .status', main));
  }

  /**
   * @param {'ship' | 'deliver'} action
   * @param {object} payload
   * @param {HTMLButtonElement} button
   */
  async function fulfil(action, payload, button) {
    clearMessages();
    setBusy(button, true);
    try {
      const { data } = await api(`/api/orders/${encodeURIComponent(id)}/${action}`, { method: 'POST', body: payload });
      if (signal.aborted) return;
      message.textContent = action === 'ship' ? 'Shipment recorded.' : 'Delivery recorded.';
      await refresh(data && data.version);
      if (!signal.aborted) focusNextStep();
    } catch (err) {
      if (signal.aborted) return;
      const first = showProblem(actionErrors, err, shipFieldResolver(shipForm)) || markShipProblem(shipForm, err);
      (first || actionErrors).focus();
    } finally {
      if (!signal.aborted) setBusy(button, false);
    }
  }

  unmarkOnInput(shipForm, signal);
  shipForm.addEventListener('submit', (event) => {
    event.preventDefault();
    const button = $('button[type="submit"]', shipForm, HTMLButtonElement);
    if (button.disabled) return;
    clearMessages();
    const missing = shipFormErrors(shipForm);
    if (missing.length) {
      showProblem(actionErrors, clientProblem('Carrier and tracking number are needed to ship', missing));
      missing[0].input?.focus();
      return;
    }
    fulfil('ship', shipFormBody(shipForm), button);
  }, { signal });
  deliverButton.addEventListener('click', () => {
    if (!deliverButton.disabled) fulfil('deliver', {}, deliverButton);
  }, { signal });

  await refresh(0);
}
