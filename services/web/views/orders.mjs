// @ts-check
/** #/orders: the caller's orders (all orders for staff), following live status events. */
import { $, announce, mount } from '../lib/dom.mjs';
import { shortId } from '../lib/format.mjs';
import { listen } from '../lib/live.mjs';
import { STAFF_ROLES } from '../lib/routing.mjs';
import { customerOrderRow, orderPager, orderRows } from '../lib/rows.mjs';
import { session } from '../lib/session.mjs';
import { state } from '../lib/state.mjs';

/** @param {import('../lib/router.mjs').ViewContext} ctx */
export async function ordersView({ main, signal }) {
  mount(main, 'tpl-orders');
  if (STAFF_ROLES.has(session.role())) $('#orders-title', main).textContent = 'All orders';
  const empty = $('#orders-empty', main);
  const rows = orderRows({
    tbody: $('#orders tbody', main, HTMLTableSectionElement), signal, build: customerOrderRow, onAdd: () => { empty.hidden = true; },
  });
  const pager = orderPager({
    signal, rows, limit: 20, more: $('#load-more', main, HTMLButtonElement), empty, errors: $('#orders-errors', main),
  });

  listen(signal, (event) => {
    if (rows.onEvent(event)) announce(`Order ${shortId(event.order_id)} is now ${event.status}.`);
  });

  await pager.load(true);
  // Read-your-writes: the list is a projection and may not hold the order just placed yet.
  const placed = state.lastPlaced;
  state.lastPlaced = null;
  if (placed && !signal.aborted) {
    await rows.ensure(placed.order_id, placed.version);
  }
}
