// @ts-check
/**
 * DOM helpers. Data only ever reaches the DOM through textContent / createElement; innerHTML
 * is never used.
 */
import { applyLimits } from './limits.mjs';
import { formatTime } from './format.mjs';

/**
 * @typedef {{new (): Element, prototype: Element}} ElementType
 */

/**
 * The element matching `selector` under `root`, which must be there (a template's element):
 * a view whose template lost it fails here, by name, instead of somewhere later.
 * @overload
 * @param {string} selector
 * @param {ParentNode} [root]
 * @returns {HTMLElement}
 */
/**
 * @template {Element} T
 * @overload
 * @param {string} selector
 * @param {ParentNode} root
 * @param {{new (): T, prototype: T}} type what it must be (HTMLInputElement, ...)
 * @returns {T}
 */
/**
 * @param {string} selector
 * @param {ParentNode} [root]
 * @param {ElementType} [type]
 * @returns {Element}
 */
export function $(selector, root = document, type = HTMLElement) {
  const node = $maybe(selector, root, type);
  if (!node) throw new TypeError(`no ${selector} on this page`);
  return node;
}

/**
 * The first element matching `selector` under `root`, or null when there is none.
 * @overload
 * @param {string} selector
 * @param {ParentNode} [root]
 * @returns {HTMLElement | null}
 */
/**
 * @template {Element} T
 * @overload
 * @param {string} selector
 * @param {ParentNode} root
 * @param {{new (): T, prototype: T}} type what it must be when it is there
 * @returns {T | null}
 */
/**
 * @param {string} selector
 * @param {ParentNode} [root]
 * @param {ElementType} [type]
 * @returns {Element | null}
 */
export function $maybe(selector, root = document, type = HTMLElement) {
  const node = root.querySelector(selector);
  if (node && !(node instanceof type)) throw new TypeError(`${selector} is not a ${type.name}`);
  return node;
}

/**
 * Every element matching `selector` (all of the same kind, HTMLElement unless told).
 * @overload
 * @param {string} selector
 * @param {ParentNode} [root]
 * @returns {HTMLElement[]}
 */
/**
 * @template {Element} T
 * @overload
 * @param {string} selector
 * @param {ParentNode} root
 * @param {{new (): T, prototype: T}} type
 * @returns {T[]}
 */
/**
 * @param {string} selector
 * @param {ParentNode} [root]
 * @param {ElementType} [type]
 * @returns {Element[]}
 */
export function $$(selector, root = document, type = HTMLElement) {
  const nodes = Array.from(root.querySelectorAll(selector));
  if (!nodes.every((node) => node instanceof type)) throw new TypeError(`${selector} matches more than ${type.name}s`);
  return nodes;
}

/** @typedef {Node | string | null | undefined | false} Child one child; arrays of them are flattened */

/**
 * createElement with attributes; children are Nodes or strings (strings become text nodes).
 * `text` sets textContent, `class` the class name, `on<event>` a listener; true is an empty
 * attribute, and null, undefined and false leave the attribute off.
 * @template {keyof HTMLElementTagNameMap} K
 * @param {K} tag
 * @param {Record<string, unknown>} [attrs]
 * @param {...(Child | Child[])} children
 * @returns {HTMLElementTagNameMap[K]}
 */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === 'text') node.textContent = String(value);
    else if (key === 'class') node.className = String(value);
    else if (key.startsWith('on') && typeof value === 'function') node.addEventListener(key.slice(2), /** @type {EventListener} */ (value));
    else node.setAttribute(key, value === true ? '' : String(value));
  }
  if (node.dataset.limit) applyLimits(node);
  for (const child of children.flat()) {
    if (child !== null && child !== undefined && child !== false) node.append(/** @type {Node | string} */ (child));
  }
  return node;
}

/**
 * Replace <main>'s content with a clone of a <template> from index.html.
 * @param {HTMLElement} main
 * @param {string} templateId
 */
export function mount(main, templateId) {
  const template = /** @type {HTMLTemplateElement} */ (document.getElementById(templateId));
  main.replaceChildren(template.content.cloneNode(true));
  applyLimits(main);
}

/**
 * Disables a button while its request runs, optionally with a label saying so.
 * @param {HTMLButtonElement | null | undefined} button
 * @param {boolean} busy
 * @param {string} [label]
 */
export function setBusy(button, busy, label) {
  if (!button) return;
  if (busy) {
    if (!button.dataset.label) button.dataset.label = button.textContent;
    if (label) button.textContent = label;
  } else if (button.dataset.label) {
    button.textContent = button.dataset.label;
    delete button.dataset.label;
  }
  button.disabled = busy;
  button.setAttribute('aria-busy', String(busy));
}

/** @param {string} message said by screen readers (the polite #announcer region) */
export function announce(message) {
  const region = $('#announcer');
  region.textContent = '';
  // Setting the text a moment after clearing it makes screen readers repeat identical messages too.
  setTimeout(() => { region.textContent = message; }, 50);
}

/** @param {HTMLElement} node briefly tinted: its value just changed */
export function highlight(node) {
  if (typeof node.animate !== 'function') return;
  if (typeof window.matchMedia === 'function' && matchMedia('(prefers-reduced-motion: reduce)').matches) return;
  node.animate([{ backgroundColor: '#fff1b8' }, { backgroundColor: 'rgba(255, 241, 184, 0)' }], { duration: 1600 });
}

/** @param {string | null | undefined} iso */
export function timeEl(iso) {
  return el('time', { datetime: iso || undefined, text: formatTime(iso) });
}

/**
 * Sets a cell's text; returns true (and highlights the cell) when the value changed.
 * @param {HTMLElement | null} node
 * @param {string} text
 */
export function updateText(node, text, flash = true) {
  if (!node || node.textContent === text) return false;
  node.textContent = text;
  if (flash) highlight(node);
  return true;
}

/**
 * Focus a status word (not focusable by Tab; it only takes focus so the place is not lost).
 * @param {HTMLElement | null} node
 */
export function focusStatus(node) {
  if (!node) return;
  node.tabIndex = -1;
  node.focus();
}

/**
 * The element an event happened on (events here come from elements, never text nodes).
 * @param {Event} event
 */
export function targetOf(event) {
  return /** @type {HTMLElement} */ (event.target);
}

/**
 * The table row `node` is in: what a tbody's delegated events act on.
 * @param {Element} node
 */
export function rowOf(node) {
  const row = node.closest('tr');
  if (!row) throw new TypeError('not inside a table row');
  return row;
}
