// @ts-check
/**
 * orderflow web UI: ES modules without a build step or dependencies, same origin only. This is
 * the entry (index.html loads it as <script type="module">): the routes, the wiring between
 * modules, and boot. docs/architecture.md lists the modules.
 */
import { onSessionExpired } from './lib/api.mjs';
import { expireSession, finishProviderSignIn, loadAuthConfig, logout, scheduleRenewal, startProviderSignIn } from './lib/auth.mjs';
import { $ } from './lib/dom.mjs';
import { loadLimits } from './lib/limits.mjs';
import { live } from './lib/live.mjs';
import { route, setRoutes } from './lib/router.mjs';
import { STAFF_ROLES, showsOrders } from './lib/routing.mjs';
import { session } from './lib/session.mjs';
import { analystView } from './views/analyst.mjs';
import { loginView } from './views/login.mjs';
import { operatorView } from './views/operator.mjs';
import { orderDetailView } from './views/order.mjs';
import { ordersView } from './views/orders.mjs';
import { shopView } from './views/shop.mjs';

setRoutes([
  { pattern: /^\/login$/, view: loginView, title: 'Sign in', public: true },
  { pattern: /^\/shop$/, view: shopView, title: 'Shop' },
  { pattern: /^\/orders$/, view: ordersView, title: 'Orders' },
  { pattern: /^\/orders\/([^/?#]+)$/, view: orderDetailView, title: 'Order' },
  { pattern: /^\/operator$/, view: operatorView, title: 'Operations', roles: STAFF_ROLES },
  { pattern: /^\/analyst$/, view: analystView, title: 'Analytics', roles: new Set(['analyst']) },
]);

// These modules do not import the router or the sign-in flow (that would be a cycle): the
// entry tells them what to do.
onSessionExpired(expireSession);
live.resync = () => { if (showsOrders(location.hash)) route(); };

async function boot() {
  $('#logout').addEventListener('click', logout);
  $('#skip-link').addEventListener('click', (event) => {
    event.preventDefault(); // a plain #main would be taken for a route
    $('#main').focus();
  });
  $('#session-renew').addEventListener('click', () => {
    startProviderSignIn().catch((err) => { $('#session-banner-text').textContent = err.message; });
  });
  window.addEventListener('hashchange', route);
  await Promise.all([loadAuthConfig(), loadLimits()]);
  await finishProviderSignIn();
  if (session.signedIn()) {
    live.start();
    scheduleRenewal();
  }
  route();
}

// Module scripts run after the document is parsed, like the deferred script this was.
boot();
