// @ts-check
/** What the views hand each other across route changes (in memory: a reload forgets it). */

/** @typedef {{order_id: string, version: number}} Placed */

export const state = {
  /** Shown once on the login page, e.g. after a 401. */
  loginNotice: '',
  /** The order just placed: #/orders reads it back even before the list's projection has it. @type {Placed | null} */
  lastPlaced: null,
  /** An Idempotency-Key is reused only to retry the same body. @type {{key: string, body: string} | null} */
  orderAttempt: null,
  /** Keep #order-result visible across the next route change. */
  keepOrderResult: false,
};
