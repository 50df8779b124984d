// @ts-check
/**
 * Problems on the page: a problem (the server's or one built in the browser) rendered into an
 * alert region, and the inputs its field errors point at marked aria-invalid. Fields are named
 * by their human label; the path is only a title.
 */
import { isAbort } from './api.mjs';
import { $$, el } from './dom.mjs';
import { afterLabel, humanField } from './fields.mjs';
import { sentence } from './format.mjs';

/** @typedef {import('./api.mjs').FieldError} FieldError */
/** @typedef {(field: string) => HTMLElement | null} FieldResolver maps a field path onto an input */

/**
 * An input's label without hints: "Country (2 letters, e.g. DE)" → "Country".
 * @param {HTMLElement} input
 */
function labelText(input) {
  const labels = 'labels' in input ? /** @type {HTMLInputElement} */ (input).labels : null;
  const label = labels && labels[0];
  const name = /** @type {HTMLInputElement} */ (input).name || input.id;
  if (!label) return humanField(name);
  const copy = /** @type {HTMLElement} */ (label.cloneNode(true));
  for (const node of $$('input, select, textarea, .muted, .hint', copy)) node.remove();
  return copy.textContent.replace(/\s+/g, ' ').replace(/\s*\([^)]*\)\s*$/, '').trim() || humanField(name);
}

/** @param {ParentNode} root */
export function clearInvalid(root) {
  for (const node of $$('[aria-invalid]', root)) node.removeAttribute('aria-invalid');
}

/**
 * Typing into an input marked invalid unmarks it.
 * @param {HTMLElement} root
 * @param {AbortSignal} signal
 */
export function unmarkOnInput(root, signal) {
  root.addEventListener('input', (event) => /** @type {Element} */ (event.target).removeAttribute('aria-invalid'), { signal });
}

/**
 * Render a problem (or nothing, when err is null) into an alert region. Field errors are listed;
 * the ones resolveField() maps to an input mark it aria-invalid and get a button that focuses it.
 * Returns the first such input. A request the route cancelled, or one that ended the session
 * (the login page says so), shows nothing.
 * @param {HTMLElement} box
 * @param {any} err an ApiError, or any thrown value
 * @param {FieldResolver} [resolveField]
 * @returns {HTMLElement | null}
 */
export function showProblem(box, err, resolveField) {
  box.replaceChildren();
  if (!err || err.sessionExpired || isAbort(err)) {
    box.hidden = true;
    return null;
  }
  const problem = err.problem || { title: err.message || String(err) };
  box.append(el('p', { class: 'problem-title' }, el('strong', { text: problem.title || 'Something went wrong' })));
  if (problem.detail && problem.detail !== problem.title) box.append(el('p', { text: sentence(problem.detail) }));
  if (problem.retry_after) box.append(el('p', { text: `Try again after ${problem.retry_after}${/^\d+$/.test(problem.retry_after) ? ' s' : ''}.` }));

  let first = null;
  /** @type {FieldError[]} */
  const errors = Array.isArray(problem.errors) ? problem.errors : [];
  if (errors.length) {
    const list = el('ul');
    for (const fieldError of errors) {
      const input = fieldError.input || (resolveField && fieldError.field ? resolveField(String(fieldError.field)) : null);
      if (input) {
        input.setAttribute('aria-invalid', 'true');
        first = first || input;
      }
      list.append(fieldErrorItem(fieldError, input));
    }
    box.append(list);
  }
  box.hidden = false;
  return first;
}

/**
 * One field error in words: "Name is required", "Quantity of Stoneware mug: Enter a whole number…".
 * The label links to the input when there is one; the machine path is kept only as a tooltip.
 * @param {FieldError} fieldError
 * @param {HTMLElement | null} input
 */
function fieldErrorItem(fieldError, input) {
  const message = String(fieldError.message || 'is not valid').trim();
  const label = input ? labelText(input) : fieldError.label || humanField(fieldError.field);
  const item = el('li', { 'data-field': fieldError.field || undefined, title: fieldError.field || undefined });
  if (!label) {
    item.append(sentence(message));
    return item;
  }
  const rest = afterLabel(message);
  if (input) {
    item.append(el('button', { type: 'button', class: 'link', text: label, onclick: () => input.focus() }), rest);
  } else {
    item.append(label, rest);
  }
  return item;
}
