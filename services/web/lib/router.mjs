// @ts-check
/**
 * Hash routes with role guards (routing.mjs decides), and one AbortController per route:
 * leaving a route aborts its signal, which cancels the route's reads, removes its listeners
 * and runs its cleanups (onLeave), so nothing of a left view touches the page again.
 */
import { isAbort } from './api.mjs';
import { renderChrome } from './chrome.mjs';
import { $, $maybe } from './dom.mjs';
import { resolve } from './routing.mjs';
import { session } from './session.mjs';
import { state } from './state.mjs';

/**
 * A view mounts its template into `main` synchronously (before its first await) and wires it
 * up; what it starts stops when `signal` aborts.
 * @typedef {{main: HTMLElement, signal: AbortSignal, params: string[]}} ViewContext
 * @typedef {(ctx: ViewContext) => void | Promise<void>} View
 * @typedef {import('./routing.mjs').Route<View>} Route
 */

/** @type {Route[]} */
let routes = [];
let controller = new AbortController();
let firstRoute = true;

/** @param {Route[]} table the app's routes (app.js), first match wins */
export function setRoutes(table) {
  routes = table;
}

/**
 * Go to `hash`; the same hash shows its route afresh.
 * @param {string} hash
 * @param {boolean} [replace] replace the history entry instead of adding one
 */
export function navigate(hash, replace = false) {
  if (location.hash === hash) {
    route();
  } else if (replace) {
    location.replace(hash);
  } else {
    location.hash = hash;
  }
}

/**
 * Runs `cleanup` when the route of `signal` is left (at once if it was).
 * @param {AbortSignal} signal
 * @param {() => void} cleanup
 */
export function onLeave(signal, cleanup) {
  if (signal.aborted) cleanup();
  else signal.addEventListener('abort', cleanup, { once: true });
}

/** Shows the route of location.hash, or sends the caller where the guards say. */
export function route() {
  const info = session.signedIn() ? session.info() : null;
  const target = resolve(routes, location.hash, info);
  if ('redirect' in target) {
    navigate(target.redirect, true);
    return;
  }

  controller.abort();
  controller = new AbortController();
  const { signal } = controller;

  if (state.keepOrderResult) state.keepOrderResult = false;
  else $('#order-result').hidden = true;

  renderChrome();
  document.title = `${target.route.title} · orderflow`;
  const main = $('#main');
  try {
    Promise.resolve(target.route.view({ main, signal, params: target.params }))
      .catch((err) => { if (!isAbort(err)) console.error('view failed', err); });
  } catch (err) {
    console.error('view failed', err);
  }
  // Move focus to the new page's heading (not on first load), so screen readers hear the change.
  if (!firstRoute) {
    const heading = $maybe('h1', main);
    if (heading) heading.focus();
  }
  firstRoute = false;
}
