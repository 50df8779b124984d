// @ts-check
/**
 * The catalog: cached for the session, re-read every few seconds while the shop or operator
 * page is shown, and shortly after live order events (stock moves with every order).
 */
import { api } from './api.mjs';
import { listen } from './live.mjs';
import { onLeave } from './router.mjs';

const CATALOG_REFRESH_MS = 5000;

/**
 * @typedef {{sku: string, name?: string, unit_price: number, currency: string,
 *   available?: number | null, on_hand?: number | null, reserved?: number | null}} CatalogItem
 */

/** GET /api/catalog (public), cached for the session; load(true) re-reads it. */
export const catalogCache = {
  /** @type {CatalogItem[] | null} */
  items: null,
  /** One read for every caller while it runs, so it takes no route's signal. @type {Promise<CatalogItem[]> | null} */
  pending: null,
  /** @returns {Promise<CatalogItem[]>} */
  load(fresh = false) {
    if (this.items && !fresh) return Promise.resolve(this.items);
    if (!this.pending) {
      this.pending = api('/api/catalog')
        .then(({ data }) => {
          this.items = Array.isArray(data) ? data : [];
          return this.items;
        })
        .finally(() => { this.pending = null; });
    }
    return this.pending;
  },
  /** @param {string} sku @returns {CatalogItem | null} */
  find(sku) {
    return (this.items || []).find((item) => item.sku === sku) || null;
  },
  clear() {
    this.items = null;
  },
};

/**
 * While the route is shown, re-read the catalog every CATALOG_REFRESH_MS and shortly after every
 * live order event, and hand it to update(). Returns a function that refreshes at once.
 * @param {AbortSignal} signal the route's
 * @param {(items: CatalogItem[]) => void} update
 */
export function watchCatalog(signal, update) {
  let running = false;
  let again = false;
  let soon = 0;

  async function refresh() {
    if (running) { again = true; return; }
    running = true;
    try {
      do {
        again = false;
        try {
          const items = await catalogCache.load(true);
          if (!signal.aborted) update(items);
        } catch {
          // A passing failure: the next tick tries again (a lost session is handled by api()).
        }
      } while (again && !signal.aborted);
    } finally {
      running = false;
    }
  }

  const timer = window.setInterval(() => { if (!document.hidden) refresh(); }, CATALOG_REFRESH_MS);
  listen(signal, () => {
    clearTimeout(soon);
    soon = window.setTimeout(refresh, 300); // several events in a burst cause one read
  });
  onLeave(signal, () => {
    clearInterval(timer);
    clearTimeout(soon);
  });
  return refresh;
}
