// @ts-check
/** The app's routes: which view a hash shows, and to whom (first match wins). */
import { STAFF_ROLES } from '../lib/routing.mjs';
import { analystView } from './analyst.mjs';
import { loginView } from './login.mjs';
import { operatorView } from './operator.mjs';
import { orderDetailView } from './order.mjs';
import { ordersView } from './orders.mjs';
import { shopView } from './shop.mjs';

/** @type {import('../lib/router.mjs').Route[]} */
export const ROUTES = [
  { pattern: /^\/login$/, view: loginView, title: 'Sign in', public: true },
  { pattern: /^\/shop$/, view: shopView, title: 'Shop' },
  { pattern: /^\/orders$/, view: ordersView, title: 'Orders' },
  { pattern: /^\/orders\/([^/?#]+)$/, view: orderDetailView, title: 'Order' },
  { pattern: /^\/operator$/, view: operatorView, title: 'Operations', roles: STAFF_ROLES },
  { pattern: /^\/analyst$/, view: analystView, title: 'Analytics', roles: new Set(['analyst']) },
];
