// @ts-check
/**
 * #/analyst: the analytics summary, the event log, an order folded to a moment (?as_of=),
 * and projection replays started and followed from here.
 */
import { api, clientProblem } from '../lib/api.mjs';
import { $, $$, announce, el, mount, setBusy, timeEl } from '../lib/dom.mjs';
import { byLifecycle, formatMoney, localToIso, prettyJson, queryString, replayLine } from '../lib/format.mjs';
import { clearInvalid, showProblem } from '../lib/problems.mjs';
import { onLeave } from '../lib/router.mjs';
import { eventItem, orderLink } from '../lib/rows.mjs';

/** @typedef {import('../lib/rows.mjs').StoredEvent} StoredEvent */

const SUMMARY_REFRESH_MS = 5000;
const REPLAY_POLL_MS = 500;

/** @param {string} text */
function numCell(text) {
  return el('td', { class: 'num', text });
}

/**
 * @typedef {{orders: number, events: number, lag?: number | null,
 *   orders_per_status?: Record<string, number>,
 *   revenue_per_day?: {day: string, orders: number, gross: number, refunded: number, net: number, currency: string}[],
 *   top_skus?: {sku: string, units: number, orders: number, revenue: number, currency: string}[]}} Summary
 */

/** @param {HTMLElement} main @param {Summary} summary */
function renderSummary(main, summary) {
  $('#summary-status', main).replaceChildren(...byLifecycle(summary.orders_per_status).map(([name, count]) => el('div', {},
    el('dt', { text: name }),
    el('dd', { 'data-status': name, text: String(count) }))));
  const days = summary.revenue_per_day || [];
  $('#summary-revenue tbody', main).replaceChildren(...(days.length ? days.map((day) => el('tr', { 'data-day': day.day },
    el('td', { text: day.day }),
    numCell(String(day.orders)),
    numCell(formatMoney(day.gross, day.currency)),
    numCell(formatMoney(day.refunded, day.currency)),
    numCell(formatMoney(day.net, day.currency)))) : [el('tr', {}, el('td', { colspan: 5, class: 'muted', text: 'No confirmed orders yet.' }))]));
  const top = summary.top_skus || [];
  $('#summary-skus tbody', main).replaceChildren(...(top.length ? top.map((sku) => el('tr', { 'data-sku': sku.sku },
    el('td', { text: sku.sku }),
    numCell(String(sku.units)),
    numCell(String(sku.orders)),
    numCell(formatMoney(sku.revenue, sku.currency)))) : [el('tr', {}, el('td', { colspan: 4, class: 'muted', text: 'Nothing sold yet.' }))]));
  const lag = summary.lag === null || summary.lag === undefined ? '' : ` · ${summary.lag} behind the log`;
  $('#summary-note', main).textContent = `${summary.orders} orders · ${summary.events} events folded${lag}`;
}

/** @param {StoredEvent} event */
function logRow(event) {
  return el('tr', { 'data-event-id': event.event_id },
    el('td', {}, timeEl(event.occurred_at)),
    el('td', {}, el('strong', { class: 'event-type', text: event.event_type }),
      ' ', el('span', { class: 'muted', text: `v${event.schema_version}` })),
    el('td', {}, event.stream_type === 'order'
      ? orderLink((event.stream_id || '').replace(/^order-/, ''))
      : el('span', { text: event.stream_id })),
    numCell(String(event.version)),
    el('td', {}, el('details', {},
      el('summary', { text: 'Payload' }),
      el('pre', {}, el('code', { text: prettyJson(event.payload) })))));
}

/**
 * Resolves after `ms`, or at once when the route is left.
 * @param {number} ms
 * @param {AbortSignal} signal
 * @returns {Promise<void>}
 */
function pause(ms, signal) {
  return new Promise((resolve) => {
    // A replay polls for minutes: each pause takes its abort listener with it.
    const done = () => {
      clearTimeout(timer);
      signal.removeEventListener('abort', done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal.addEventListener('abort', done, { once: true });
  });
}

/** @param {import('../lib/router.mjs').ViewContext} ctx */
export async function analystView({ main, signal }) {
  mount(main, 'tpl-analyst');
  /** @param {string} selector */
  const input = (selector) => $(selector, main, HTMLInputElement);

  // Summary: re-read every few seconds while shown (the projection follows the log).
  const summaryErrors = $('#summary-errors', main);
  async function loadSummary() {
    try {
      const { data } = await api('/api/analytics/summary', { signal });
      if (signal.aborted) return;
      showProblem(summaryErrors, null);
      renderSummary(main, data);
    } catch (err) {
      if (!signal.aborted) showProblem(summaryErrors, err);
    }
  }
  $('#summary-refresh', main).addEventListener('click', loadSummary, { signal });
  const timer = setInterval(loadSummary, SUMMARY_REFRESH_MS);
  onLeave(signal, () => clearInterval(timer));

  // Event log: filtered, paged by next_cursor.
  const logForm = $('#log-form', main, HTMLFormElement);
  const logBody = $('#log-events tbody', main);
  const logErrors = $('#log-errors', main);
  const logMore = $('#log-more', main, HTMLButtonElement);
  /** @type {Record<string, string>} */
  let logQuery = {};
  /** @type {string | null} */
  let logCursor = null;
  /** @param {boolean} append the next page, or the first one afresh */
  async function loadLog(append) {
    const button = append ? logMore : $('#log-submit', main, HTMLButtonElement);
    setBusy(button, true);
    showProblem(logErrors, null);
    clearInvalid(logForm);
    try {
      const params = { ...logQuery, limit: '50', cursor: append ? logCursor : '' };
      const { data } = await api(`/api/events${queryString(params)}`, { signal });
      if (signal.aborted) return;
      const rows = (data.items || []).map(logRow);
      if (append) logBody.append(...rows); else logBody.replaceChildren(...rows);
      logCursor = data.next_cursor || null;
      logMore.hidden = !logCursor;
      $('#log-empty', main).hidden = logBody.children.length > 0;
      announce(`${logBody.children.length} events shown`);
    } catch (err) {
      /** @type {Record<string, string>} */
      const inputs = { type: '#log-type', since: '#log-since', until: '#log-until', order_id: '#log-order' };
      if (!signal.aborted) showProblem(logErrors, err, (field) => (inputs[field] ? $(inputs[field], main) : null));
    } finally {
      setBusy(button, false);
    }
  }
  logForm.addEventListener('submit', (event) => {
    event.preventDefault();
    logQuery = {
      type: input('#log-type').value.trim(),
      since: localToIso(input('#log-since').value),
      until: localToIso(input('#log-until').value),
      order_id: input('#log-order').value.trim(),
    };
    loadLog(false);
  }, { signal });
  logMore.addEventListener('click', () => loadLog(true), { signal });

  // An order at a moment: its state folded up to then, its timeline with what came after dimmed.
  const momentForm = $('#moment-form', main, HTMLFormElement);
  const momentErrors = $('#moment-errors', main);
  momentForm.addEventListener('submit', async (event) => {
    event.preventDefault();
    const id = input('#moment-order').value.trim();
    const asOf = localToIso(input('#moment-at').value);
    showProblem(momentErrors, null);
    clearInvalid(momentForm);
    if (!id) {
      showProblem(momentErrors, clientProblem('Enter an order id', [{ field: 'order_id', message: 'is required' }]),
        () => input('#moment-order'));
      return;
    }
    const button = $('#moment-submit', main, HTMLButtonElement);
    setBusy(button, true);
    try {
      const path = `/api/orders/${encodeURIComponent(id)}`;
      const [{ data: view }, { data: events }] = await Promise.all([
        api(`${path}${queryString({ as_of: asOf })}`, { signal }),
        api(`${path}/events`, { signal }),
      ]);
      if (signal.aborted) return;
      $('#moment-status', main).textContent = view.status;
      $('#moment-version', main).textContent = `version ${view.version} · ${formatMoney(view.total, view.currency)}`;
      /** @type {StoredEvent[]} */
      const sorted = (events || []).slice().sort((/** @type {StoredEvent} */ a, /** @type {StoredEvent} */ b) => a.version - b.version);
      $('#moment-timeline', main).replaceChildren(...sorted.map((e) => {
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
      if (!signal.aborted) {
        $('#moment-result', main).hidden = true;
        showProblem(momentErrors, err, (field) => (field === 'as_of' ? input('#moment-at') : input('#moment-order')));
      }
    } finally {
      setBusy(button, false);
    }
  }, { signal });

  // Replays: start one, then follow its progress until it ends.
  const replayForm = $('#replay-form', main, HTMLFormElement);
  const replayErrors = $('#replay-errors', main);
  const bar = $('#replay-bar', main, HTMLProgressElement);
  const text = $('#replay-text', main);
  /** @param {import('../lib/format.mjs').ReplayStatus} status */
  function renderReplay(status) {
    $('#replay-progress', main).hidden = false;
    bar.max = Math.max(Number(status.total) || 0, 1);
    bar.value = Math.min(status.folded, bar.max);
    text.textContent = replayLine(status);
    text.dataset.state = status.state;
  }
  /** @param {string} location the replay's URL */
  async function follow(location) {
    while (!signal.aborted) {
      await pause(REPLAY_POLL_MS, signal);
      if (signal.aborted) return;
      try {
        const { data } = await api(location, { signal });
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
    const projections = $$('input[name=projection]:checked', replayForm, HTMLInputElement).map((box) => box.value);
    if (!projections.length) {
      showProblem(replayErrors, clientProblem('Choose at least one projection'));
      return;
    }
    const button = $('#replay-submit', main, HTMLButtonElement);
    setBusy(button, true, 'Replaying…');
    try {
      // No signal: the replay runs on the server whether or not this page is still shown.
      const { data, headers } = await api('/api/replays', { method: 'POST', body: { projections } });
      renderReplay(data);
      await follow(headers.get('Location') || `/api/replays/${data.replay_id}`);
    } catch (err) {
      if (!signal.aborted) showProblem(replayErrors, err);
    } finally {
      setBusy(button, false);
    }
  }, { signal });

  await loadSummary();
}
