// Unit tests of the routes' guards: `node --test services/web/`.
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { homeFor, isCurrent, matchRoute, resolve, rolesOf, showsOrders } from './routing.mjs';
import { ROUTES } from '../views/routes.mjs';

const customer = { name: 'Bea', role: 'customer', customer_id: 'bea' };
const operator = { name: 'Olga', role: 'operator' };
const analyst = { name: 'Ann', role: 'analyst' };

/** @param {string} hash @param {any} info */
const shown = (hash, info) => {
  const target = resolve(ROUTES, hash, info);
  return 'redirect' in target ? `→ ${target.redirect}` : target.route.view.name;
};

test('each role has its home', () => {
  assert.equal(homeFor('customer'), '#/shop');
  assert.equal(homeFor('operator'), '#/operator');
  assert.equal(homeFor('analyst'), '#/analyst');
  assert.equal(homeFor(''), '#/shop');
});

test('signed out, only the login is shown', () => {
  assert.equal(shown('#/login', null), 'loginView');
  for (const hash of ['#/shop', '#/orders', '#/orders/abc', '#/operator', '#/analyst', '#/nowhere', '']) {
    assert.equal(shown(hash, null), '→ #/login', hash);
  }
});

test('an unknown route goes to the caller’s home', () => {
  assert.equal(shown('#/nowhere', customer), '→ #/shop');
  assert.equal(shown('', operator), '→ #/operator');
  assert.equal(shown('#/orders/a/b', analyst), '→ #/analyst');
});

test('staff pages refuse customers; the analytics page refuses operators', () => {
  assert.equal(shown('#/operator', customer), '→ #/shop');
  assert.equal(shown('#/analyst', customer), '→ #/shop');
  assert.equal(shown('#/operator', operator), 'operatorView');
  assert.equal(shown('#/analyst', operator), '→ #/operator');
  assert.equal(shown('#/operator', analyst), 'operatorView');
  assert.equal(shown('#/analyst', analyst), 'analystView');
  assert.equal(shown('#/orders', customer), 'ordersView');
});

test('a provider may grant several roles, and any of them opens a page', () => {
  const both = { name: 'Max', role: 'customer', roles: ['customer', 'analyst'] };
  assert.deepEqual(rolesOf(both), ['customer', 'analyst']);
  assert.equal(shown('#/analyst', both), 'analystView');
  assert.equal(shown('#/operator', both), 'operatorView', 'an analyst sees the operations page read-only');
  assert.deepEqual(rolesOf({ role: 'operator', roles: [] }), ['operator']);
  assert.deepEqual(rolesOf(null), ['']);
});

test("an order's id is decoded; a malformed escape matches nothing", () => {
  const match = matchRoute(ROUTES, '/orders/a%20b');
  assert.equal(match?.route.view.name, 'orderDetailView');
  assert.deepEqual(match?.params, ['a b']);
  assert.equal(matchRoute(ROUTES, '/orders/%E0%A4%A'), null);
  assert.equal(shown('#/orders/%E0%A4%A', customer), '→ #/shop');
});

test('an order page counts as the orders page in the nav', () => {
  assert.ok(isCurrent('#/orders', '#/orders'));
  assert.ok(isCurrent('#/orders/abc', '#/orders'));
  assert.ok(!isCurrent('#/orders/abc', '#/shop'));
  assert.ok(!isCurrent('#/operator', '#/orders'));
});

test('a missed update re-reads order pages, never the shop with its form', () => {
  assert.ok(showsOrders('#/orders'));
  assert.ok(showsOrders('#/orders/abc'));
  assert.ok(showsOrders('#/operator'));
  assert.ok(!showsOrders('#/shop'));
  assert.ok(!showsOrders('#/analyst'));
});
