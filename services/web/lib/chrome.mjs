// @ts-check
/** The page's header: nav by role, #whoami, #live, the development banner. */
import { $, $$ } from './dom.mjs';
import { STAFF_ROLES, isCurrent, rolesOf } from './routing.mjs';
import { session } from './session.mjs';

export function renderChrome() {
  const info = session.signedIn() ? session.info() : null;
  const role = info ? info.role : '';
  for (const item of $$('#site-nav [data-roles]')) {
    item.hidden = !info || !(item.dataset.roles || '').split(' ').some((r) => rolesOf(info).includes(r));
  }
  $('#nav-orders').textContent = STAFF_ROLES.has(role) ? 'All orders' : 'My orders';

  const hash = location.hash;
  for (const link of $$('#site-nav a')) {
    if (isCurrent(hash, link.getAttribute('href') || '')) link.setAttribute('aria-current', 'page');
    else link.removeAttribute('aria-current');
  }

  const whoami = $('#whoami');
  whoami.textContent = info ? `${info.name} (${role})` : '';
  whoami.hidden = !info;
  $('#logout').hidden = !info;
  $('#live').hidden = !info;

  const banner = $('#dev-banner');
  banner.hidden = !(info && info.development);
  banner.textContent = (info && info.development && info.notice) || '';
}
