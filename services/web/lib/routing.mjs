// @ts-check
/**
 * Which route a hash shows and who may see it: the pure half of the router (router.mjs has the
 * DOM half), so the guards are checked by `node --test` (routing.test.mjs).
 */

/** Roles that see every order and the operations page. */
export const STAFF_ROLES = new Set(['operator', 'analyst']);

/**
 * @typedef {{name?: string, role: string, roles?: string[], customer_id?: string,
 *   development?: boolean, notice?: string, provider?: boolean, expires_at?: number,
 *   id_token?: string}} SessionInfo
 */

/**
 * Every role the caller holds: a provider may grant several (the dev login one).
 * @param {SessionInfo | null} info
 * @returns {string[]}
 */
export function rolesOf(info) {
  return info && Array.isArray(info.roles) && info.roles.length ? info.roles : [info ? info.role : ''];
}

/** @param {string} role */
export function homeFor(role) {
  if (role === 'analyst') return '#/analyst';
  return STAFF_ROLES.has(role) ? '#/operator' : '#/shop';
}

/**
 * @template V
 * @typedef {{pattern: RegExp, view: V, title: string, public?: boolean, roles?: Set<string>}} Route
 */

/**
 * The route a path ("/orders/abc") matches, with its decoded parameters; null when none
 * matches or a parameter is a malformed %-escape.
 * @template V
 * @param {Route<V>[]} routes
 * @param {string} path
 * @returns {{route: Route<V>, params: string[]} | null}
 */
export function matchRoute(routes, path) {
  for (const candidate of routes) {
    const match = candidate.pattern.exec(path);
    if (!match) continue;
    try {
      return { route: candidate, params: match.slice(1).map(decodeURIComponent) };
    } catch {
      return null;
    }
  }
  return null;
}

/**
 * What a hash leads to for this caller: the route to show, or where to go instead (unknown
 * routes go home, private ones to the login, ones of another role to the caller's home).
 * @template V
 * @param {Route<V>[]} routes
 * @param {string} hash
 * @param {SessionInfo | null} info the signed-in caller, or null
 * @returns {{redirect: string} | {route: Route<V>, params: string[]}}
 */
export function resolve(routes, hash, info) {
  const match = matchRoute(routes, hash.replace(/^#/, ''));
  if (!match) return { redirect: info ? homeFor(info.role) : '#/login' };
  if (!match.route.public && !info) return { redirect: '#/login' };
  const { roles } = match.route;
  if (roles && !rolesOf(info).some((r) => roles.has(r))) return { redirect: info ? homeFor(info.role) : '#/login' };
  return match;
}

/**
 * Whether a nav link's href is the page the hash shows (an order's page is under "Orders").
 * @param {string} hash
 * @param {string} href
 */
export function isCurrent(hash, href) {
  return hash === href || (href === '#/orders' && hash.startsWith('#/orders/'));
}

/**
 * Views that show orders are re-read after the live feed missed updates; never the shop,
 * whose form may hold the user's input.
 * @param {string} hash
 */
export function showsOrders(hash) {
  return /^#\/(orders|operator)/.test(hash);
}
