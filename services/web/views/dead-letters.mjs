// @ts-check
/** The dead-letter section of the operator page (operators only: the API refuses anyone else). */
import { api, clientProblem } from '../lib/api.mjs';
import { $, $$, el, focusStatus, rowOf, setBusy, targetOf, timeEl } from '../lib/dom.mjs';
import { normalizeFieldPath } from '../lib/fields.mjs';
import { orderHref, shortId } from '../lib/format.mjs';
import { showProblem, unmarkOnInput } from '../lib/problems.mjs';

/**
 * @typedef {{subscription: string, order_id?: string, dead_at?: string, attempts: number,
 *   reason?: string, event?: {event_id?: string, event_type?: string}}} DeadLetter
 */

/** @param {DeadLetter} letter */
function deadRow(letter) {
  const event = letter.event || {};
  const key = `${letter.subscription}/${event.event_id}`;
  const formId = `discard-${letter.subscription}-${event.event_id}`;
  const label = `${event.event_type} ${shortId(event.event_id)} for ${letter.subscription}`;
  return el('tr', { 'data-key': key, 'data-subscription': letter.subscription, 'data-event-id': event.event_id },
    el('td', {}, el('code', { text: letter.subscription })),
    el('td', {},
      el('span', { text: event.event_type }), ' ',
      el('code', { title: event.event_id, text: shortId(event.event_id) }),
      letter.order_id ? [' ', el('a', { href: orderHref(letter.order_id), text: `order ${shortId(letter.order_id)}` })] : null),
    el('td', { class: 'wide-only' }, letter.dead_at ? timeEl(letter.dead_at) : el('span', { class: 'muted', text: 'not recorded' })),
    el('td', { class: 'num wide-only', text: String(letter.attempts) }),
    el('td', { class: 'dead-reason', text: letter.reason || '—' }),
    el('td', { class: 'actions' },
      el('button', { type: 'button', class: 'redrive', 'aria-label': `Re-drive ${label}`, text: 'Re-drive' }),
      el('button', { type: 'button', class: 'discard ghost-dark', 'aria-expanded': 'false', 'aria-controls': formId, 'aria-label': `Discard ${label}`, text: 'Discard' }),
      el('form', { id: formId, class: 'discard-form', hidden: true, novalidate: true, 'aria-label': `Discard ${label}` },
        el('label', {}, 'Why discard it? ', el('input', { name: 'reason', type: 'text', required: true, 'data-limit': 'DiscardBody.reason', autocomplete: 'off' })),
        el('span', { class: 'ship-buttons' },
          el('button', { type: 'submit', class: 'primary', text: 'Discard for good' }),
          el('button', { type: 'button', class: 'discard-close ghost-dark', text: 'Close' })),
        el('div', { class: 'problem row-errors', role: 'alert', tabindex: -1, hidden: true }))));
}

/** A discard form's reason input. @param {HTMLFormElement} form */
function reasonInput(form) {
  return /** @type {HTMLInputElement} */ (form.elements.namedItem('reason'));
}

/**
 * Wires the section up: list, re-drive, discard. Returns its first load.
 * @param {HTMLElement} main
 * @param {AbortSignal} signal the route's
 */
export function deadLetterSection(main, signal) {
  const section = $('#dead-letters', main);
  const tbody = $('#dead-table tbody', section);
  const errors = $('#dead-errors', section);
  const message = $('#dead-message', section);
  const counts = $('#dead-counts', section);
  const empty = $('#dead-empty', section);
  const subscription = $('#dead-subscription', section, HTMLSelectElement);
  const redriveShown = $('#dead-redrive-shown', section, HTMLButtonElement);
  section.hidden = false;

  function clear() {
    message.textContent = '';
    showProblem(errors, null);
    for (const box of $$('.row-errors', tbody)) showProblem(box, null);
  }

  async function load() {
    try {
      const filter = subscription.value ? `?subscription=${encodeURIComponent(subscription.value)}&limit=1000` : '?limit=1000';
      const { data } = await api(`/api/dead-letters${filter}`, { signal });
      if (signal.aborted) return;
      const hadFocus = tbody.contains(document.activeElement);
      tbody.replaceChildren(...data.items.map(deadRow));
      empty.hidden = data.items.length > 0;
      redriveShown.disabled = data.items.length === 0;
      counts.textContent = data.subscriptions.map((/** @type {{subscription: string, dead_letters: number}} */ c) => `${c.subscription}: ${c.dead_letters}`).join(' · ')
        + (data.total > data.items.length ? ` (showing ${data.items.length} of ${data.total})` : '');
      if (hadFocus) focusStatus($('#dead-title', main));
    } catch (err) {
      if (!signal.aborted) showProblem(errors, err);
    }
  }

  /**
   * @param {string} path
   * @param {object} body
   * @param {HTMLButtonElement} button
   * @param {(count: number) => string} done what happened, in words
   */
  async function act(path, body, button, done) {
    clear();
    setBusy(button, true);
    try {
      const { data } = await api(path, { method: 'POST', body });
      if (signal.aborted) return;
      message.textContent = done(data.count);
      await load();
    } catch (err) {
      if (signal.aborted) return;
      const row = button.closest('tr');
      const box = row ? $('.row-errors', row) : null;
      if (row && box && !box.closest('[hidden]')) {
        const form = $('form.discard-form', row, HTMLFormElement);
        const first = showProblem(box, err, (field) => (normalizeFieldPath(field) === 'reason' && form ? reasonInput(form) : null));
        (first || box).focus();
      } else {
        showProblem(errors, err);
        errors.focus();
      }
    } finally {
      if (button.isConnected) setBusy(button, false);
    }
  }

  /** @param {HTMLTableRowElement} row */
  const one = (row) => ({ all: false, subscription: row.dataset.subscription, event_ids: [row.dataset.eventId] });
  /** @param {number} n */
  const plural = (n) => (n === 1 ? '' : 's');

  /** @param {HTMLTableRowElement} row @param {boolean} open */
  function toggleDiscard(row, open) {
    const toggle = $('button.discard', row);
    const form = $('form.discard-form', row, HTMLFormElement);
    form.hidden = !open;
    toggle.setAttribute('aria-expanded', String(open));
    if (open) reasonInput(form).focus(); else toggle.focus();
  }

  tbody.addEventListener('click', (event) => {
    const button = targetOf(event).closest('button');
    if (!button || button.disabled) return;
    const row = rowOf(button);
    if (button.classList.contains('redrive')) {
      act('/api/dead-letters/redrive', one(row), button, (n) => (n ? `Re-driven: ${row.dataset.subscription} gets it again.` : 'It was no longer dead: nothing to re-drive.'));
    } else if (button.classList.contains('discard')) {
      toggleDiscard(row, $('form.discard-form', row).hidden);
    } else if (button.classList.contains('discard-close')) {
      toggleDiscard(row, false);
    }
  }, { signal });
  unmarkOnInput(tbody, signal);
  tbody.addEventListener('keydown', (event) => {
    const form = targetOf(event).closest('form.discard-form');
    if (form && event.key === 'Escape') toggleDiscard(rowOf(form), false);
  }, { signal });
  tbody.addEventListener('submit', (event) => {
    const form = targetOf(event).closest('form.discard-form');
    if (!(form instanceof HTMLFormElement)) return;
    event.preventDefault();
    const button = $('button[type="submit"]', form, HTMLButtonElement);
    if (button.disabled) return;
    const reason = reasonInput(form).value.trim();
    if (!reason) {
      clear();
      showProblem($('.row-errors', form), clientProblem('Say why it is discarded: the reason is logged', [{ field: 'reason', message: 'Enter a reason.', input: reasonInput(form) }]));
      reasonInput(form).focus();
      return;
    }
    act('/api/dead-letters/discard', { ...one(rowOf(form)), reason }, button, (n) => (n ? 'Discarded; the reason is in the log.' : 'It was no longer dead: nothing to discard.'));
  }, { signal });

  subscription.addEventListener('change', () => { clear(); load(); }, { signal });
  $('#dead-refresh', section).addEventListener('click', () => { clear(); load(); }, { signal });
  redriveShown.addEventListener('click', () => {
    const body = subscription.value ? { all: true, subscription: subscription.value } : { all: true };
    act('/api/dead-letters/redrive', body, redriveShown, (n) => `Re-driven: ${n} dead letter${plural(n)}.`);
  }, { signal });
  return { load };
}
