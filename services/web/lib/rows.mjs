// @ts-check
/**
 * Order rows shared by "My orders" and the operator page (updated in place by live events,
 * paginated by next_cursor), and the cells and items other views share.
 */
import { api } from './api.mjs';
import { $, el, highlight, setBusy, timeEl } from './dom.mjs';
import { formatMoney, itemCount, orderHref, orderPath, prettyJson, reasonText, shortId } from './format.mjs';
import { showProblem } from './problems.mjs';

/**
 * @typedef {import('./live.mjs').OrderEvent} OrderEvent
 * @typedef {{sku: string, quantity: number, unit_price: number}} OrderLine
 * @typedef {{order_id: string, customer_id?: string, version: number, status: string,
 *   reason?: string, placed_at?: string, updated_at?: string, total?: number, currency?: string,
 *   lines?: OrderLine[], shipping_address?: import('./session.mjs').Address, carrier?: string,
 *   tracking_number?: string, history?: {status: string, at: string}[]}} OrderView
 * @typedef {{event_id: string, event_type: string, version: number, schema_version: number,
 *   occurred_at: string, payload: unknown, metadata?: Record<string, any> | null,
 *   stream_type?: string, stream_id?: string}} StoredEvent
 */

/**
 * @param {HTMLElement} node
 * @param {string} status
 * @param {string | undefined} reason
 */
function setReason(node, status, reason) {
  const text = reasonText(status, reason);
  node.hidden = !text;
  node.replaceChildren(...(text ? [el('span', { class: 'visually-hidden', text: 'Reason: ' }), text] : []));
}

/**
 * The status cell: <span class="status"> holds exactly the status word (tests and scripts read
 * it); the reason, when there is one, is a sibling <span class="reason">.
 * @param {string} status
 * @param {string} [reason]
 */
export function statusCell(status, reason) {
  const reasonNode = el('span', { class: 'reason' });
  setReason(reasonNode, status, reason);
  return el('td', { class: 'status-cell' },
    el('span', { class: 'status', 'data-status': status, text: status }),
    reasonNode);
}

/** @param {string} id */
export function orderLink(id) {
  return el('a', { href: orderHref(id), title: `Order ${id}`, text: shortId(id) });
}

/**
 * The order cell: the link and, on narrow screens only, facts whose columns are hidden there.
 * @param {OrderView} view
 * @param {Node[]} facts
 */
export function orderCell(view, facts) {
  return el('td', { class: 'order-cell' },
    orderLink(view.order_id),
    el('span', { class: 'cell-facts narrow-only' }, ...facts));
}

/** @param {OrderView} view */
export function customerOrderRow(view) {
  return el('tr', { 'data-order-id': view.order_id, 'data-version': view.version, 'data-status': view.status },
    orderCell(view, [timeEl(view.placed_at)]),
    el('td', { class: 'wide-only' }, timeEl(view.placed_at)),
    el('td', { class: 'num wide-only', text: String(itemCount(view)) }),
    el('td', { class: 'num', text: formatMoney(view.total, view.currency) }),
    statusCell(view.status, view.reason));
}

/**
 * Item name with its SKU in small text below: used by the shop and the order page.
 * @param {string | undefined} name
 * @param {string} sku
 */
export function itemLabel(name, sku) {
  return [el('span', { class: 'item-name', text: name || sku }), name ? el('code', { class: 'sku', text: sku }) : null];
}

/**
 * One event of an order's timeline (the order page, the analyst's order at a moment).
 * @param {StoredEvent} event
 * @param {boolean} open whether its payload is shown
 */
export function eventItem(event, open) {
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

/**
 * @typedef {object} OrderRows
 * @property {(view: OrderView, prepend?: boolean) => void} add
 * @property {(id: string, minVersion: number, event?: OrderEvent | null) => Promise<void>} ensure
 * @property {(event: OrderEvent) => boolean} onEvent
 * @property {() => number} count
 * @property {() => void} clear
 */

/**
 * Keeps a <tbody> of order rows current: adds pages, applies live status events in place, and
 * fetches (then prepends) orders it has not seen yet.
 * @param {object} options
 * @param {HTMLTableSectionElement} options.tbody
 * @param {AbortSignal} options.signal the route's
 * @param {(view: OrderView) => HTMLTableRowElement} options.build
 * @param {(view: OrderView) => boolean} [options.accept] whether an order fetched for an event belongs here
 * @param {(row: HTMLTableRowElement, status: string) => void} [options.onStatusChange]
 * @param {(row: HTMLTableRowElement) => void} [options.onAdd]
 * @returns {OrderRows}
 */
export function orderRows({ tbody, signal, build, accept = () => true, onStatusChange = () => {}, onAdd = () => {} }) {
  /** order_id → latest event that arrived while its view was being fetched @type {Map<string, OrderEvent | null>} */
  const inflight = new Map();

  /** @param {string} id */
  const find = (id) => Array.from(tbody.rows).find((row) => row.dataset.orderId === id) || null;

  /** @param {HTMLTableRowElement} row @param {OrderEvent} event */
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

  /** @param {OrderView} view */
  function add(view, prepend = false) {
    if (!view || !view.order_id || find(view.order_id)) return;
    const row = build(view);
    if (prepend) tbody.prepend(row); else tbody.append(row);
    onAdd(row);
  }

  /** @param {string} id @param {number} minVersion @param {OrderEvent | null} [event] */
  async function ensure(id, minVersion, event = null) {
    if (find(id)) return;
    if (inflight.has(id)) {
      if (event) inflight.set(id, event);
      return;
    }
    inflight.set(id, event);
    try {
      const { data } = await api(orderPath(id, minVersion), { signal });
      if (signal.aborted || !data) return;
      if (accept(data)) add(data, true);
      const later = inflight.get(id);
      const row = find(id);
      if (later && row) applyStatus(row, later);
    } catch {
      // Not visible to this caller (404), a passing failure, or the route was left: the next
      // event or reload shows it.
    } finally {
      inflight.delete(id);
    }
  }

  /** @param {OrderEvent} event */
  function onEvent(event) {
    const row = find(event.order_id);
    if (row) return applyStatus(row, event);
    ensure(event.order_id, event.version, event);
    return false;
  }

  return { add, ensure, onEvent, count: () => tbody.rows.length, clear: () => tbody.replaceChildren() };
}

/**
 * "Load more" pagination over GET /api/orders with next_cursor.
 * @param {object} options
 * @param {AbortSignal} options.signal the route's
 * @param {OrderRows} options.rows
 * @param {number} options.limit
 * @param {() => Record<string, string>} [options.query]
 * @param {HTMLButtonElement} options.more
 * @param {HTMLElement} options.empty
 * @param {HTMLElement} options.errors
 */
export function orderPager({ signal, rows, limit, query = () => ({}), more, empty, errors }) {
  /** @type {string | null} */
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
      const { data } = await api(`/api/orders?${params}`, { signal });
      if (signal.aborted || mine !== generation) return;
      const items = Array.isArray(data) ? data : (data && data.items) || [];
      items.forEach((/** @type {OrderView} */ view) => rows.add(view));
      cursor = data && !Array.isArray(data) ? data.next_cursor || null : null;
      more.hidden = !cursor;
      empty.hidden = rows.count() > 0;
      showProblem(errors, null);
    } catch (err) {
      if (!signal.aborted && mine === generation) showProblem(errors, err);
    } finally {
      setBusy(more, false);
    }
  }

  more.addEventListener('click', () => load(false), { signal });
  return { load };
}
