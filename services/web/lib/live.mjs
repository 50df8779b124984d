// @ts-check
/**
 * The live feed: one EventSource per signed-in session; views subscribe to its "order" events
 * for as long as their route is shown.
 */
import { session } from './session.mjs';

const LIVE_RETRY_MS = 15000;

/** @typedef {{order_id: string, status: string, version: number, reason?: string}} OrderEvent */
/** @typedef {(event: OrderEvent) => void} Listener */

/**
 * An "order" event's data, or null when it is not one (unreadable, no order or status).
 * @param {string} raw
 * @returns {OrderEvent | null}
 */
export function parseOrderEvent(raw) {
  let event;
  try { event = JSON.parse(raw); } catch { return null; }
  if (!event || typeof event !== 'object' || !event.order_id || !event.status) return null;
  event.version = Number(event.version) || 0;
  return event;
}

/** @param {boolean} connected */
function setLiveIndicator(connected) {
  const indicator = /** @type {HTMLElement} */ (document.querySelector('#live'));
  indicator.textContent = connected ? 'live' : 'offline';
  indicator.dataset.state = connected ? 'live' : 'offline';
}

export const live = {
  /** @type {EventSource | null} */
  source: null,
  /** @type {Set<Listener>} */
  listeners: new Set(),
  retryTimer: 0,
  /** Re-reads what the page shows after updates were missed (the router sets it). */
  resync: () => {},

  /** Open the session's one EventSource (no-op when already open or signed out). */
  start() {
    const token = session.token();
    if (this.source || !token) return;
    // EventSource cannot send headers; the server accepts the token as a query parameter here only.
    const source = new EventSource(`/api/notifications/stream?access_token=${encodeURIComponent(token)}`);
    let dropped = false;
    source.addEventListener('open', () => {
      setLiveIndicator(true);
      // Updates sent while we were away are not replayed: re-read what is on screen.
      if (dropped) this.resync();
      dropped = false;
    });
    source.addEventListener('error', () => {
      dropped = true;
      setLiveIndicator(false);
      // EventSource reconnects by itself after network errors. It gives up (CLOSED) only when
      // the server answers with an error status; then try once more later with a fresh source.
      if (source.readyState === EventSource.CLOSED && this.source === source) {
        this.source = null;
        clearTimeout(this.retryTimer);
        this.retryTimer = window.setTimeout(() => this.start(), LIVE_RETRY_MS);
      }
    });
    source.addEventListener('order', (event) => this.dispatch(event.data));
    // The server skipped updates this (slow) client could not take: re-read.
    source.addEventListener('resync', () => this.resync());
    this.source = source;
  },

  stop() {
    clearTimeout(this.retryTimer);
    if (this.source) this.source.close();
    this.source = null;
    setLiveIndicator(false);
  },

  /** Subscribe to order events; returns the unsubscribe function. @param {Listener} listener */
  on(listener) {
    this.listeners.add(listener);
    return () => { this.listeners.delete(listener); };
  },

  /** @param {string} raw */
  dispatch(raw) {
    const event = parseOrderEvent(raw);
    if (!event) return;
    for (const listener of Array.from(this.listeners)) {
      try { listener(event); } catch (err) { console.error('order event listener failed', err); }
    }
  },
};

/**
 * Subscribe a view to order events until its route is left.
 * @param {AbortSignal} signal the route's
 * @param {Listener} listener
 */
export function listen(signal, listener) {
  if (signal.aborted) return;
  const off = live.on((event) => { if (!signal.aborted) listener(event); });
  signal.addEventListener('abort', off, { once: true });
}
