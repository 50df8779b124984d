// @ts-check
/**
 * orderflow web UI: ES modules without a build step or dependencies, same origin only. This is
 * the entry, which index.html loads as <script type="module">: it wires the modules together
 * and boots. The routes are in views/routes.mjs; docs/architecture.md lists the modules.
 */
import { onSessionExpired } from './lib/api.mjs';
import { expireSession, finishProviderSignIn, loadAuthConfig, logout, scheduleRenewal, startProviderSignIn } from './lib/auth.mjs';
import { $ } from './lib/dom.mjs';
import { loadLimits } from './lib/limits.mjs';
import { live } from './lib/live.mjs';
import { route, setRoutes } from './lib/router.mjs';
import { showsOrders } from './lib/routing.mjs';
import { session } from './lib/session.mjs';
import { ROUTES } from './views/routes.mjs';

setRoutes(ROUTES);

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
