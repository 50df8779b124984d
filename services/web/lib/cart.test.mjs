// Unit tests of the shop's arithmetic and checks: `node --test services/web/`.
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { addressError, cartTotal, quantityError, readQuantity } from './cart.mjs';

test('an empty quantity is 0; anything else is read as typed', () => {
  assert.equal(readQuantity(''), 0);
  assert.equal(readQuantity('  '), 0);
  assert.equal(readQuantity(' 3 '), 3);
  assert.equal(readQuantity('2.5'), 2.5);
  assert.ok(Number.isNaN(readQuantity('two')));
});

test("quantities are whole numbers from 0 to the server's most", () => {
  for (const fine of [0, 1, 99]) assert.equal(quantityError(fine, 99), '', String(fine));
  assert.equal(quantityError(100, 99), 'Enter a whole number from 0 to 99.');
  assert.equal(quantityError(-1, 99), 'Enter a whole number from 0 to 99.');
  assert.equal(quantityError(1.5, 99), 'Enter a whole number from 0 to 99.');
  assert.equal(quantityError(Number.NaN, 99), 'Enter a whole number from 0 to 99.');
});

test('without the OpenAPI document there is no most (the server still checks)', () => {
  assert.equal(quantityError(1_000_000, undefined), '');
  assert.equal(quantityError(-1, undefined), 'Enter a whole number, 0 or more.');
});

test('required address fields, and a two-letter country', () => {
  assert.equal(addressError('city', '', true), 'Required.');
  assert.equal(addressError('line2', '', false), '');
  assert.equal(addressError('country', 'de', true), '');
  assert.equal(addressError('country', 'DEU', true), 'Use a two-letter country code, e.g. DE.');
  assert.equal(addressError('country', 'D1', true), 'Use a two-letter country code, e.g. DE.');
  assert.equal(addressError('country', '', true), 'Required.');
});

const CATALOG = [
  { sku: 'TEA', unit_price: 450, currency: 'EUR' },
  { sku: 'MUG', unit_price: '1299', currency: 'EUR' },
  { sku: 'YEN', unit_price: 500, currency: 'JPY' },
];

test('the cart total sums per currency, in minor units', () => {
  assert.equal(cartTotal([{ sku: 'TEA', quantity: 2 }, { sku: 'MUG', quantity: 1 }], CATALOG), '21.99 EUR');
  assert.equal(cartTotal([{ sku: 'TEA', quantity: 1 }, { sku: 'YEN', quantity: 3 }], CATALOG), '4.50 EUR + 1500 JPY');
});

test('an empty cart, or one of SKUs no longer listed, totals a dash', () => {
  assert.equal(cartTotal([], CATALOG), '—');
  assert.equal(cartTotal([{ sku: 'GONE', quantity: 2 }], CATALOG), '—');
  assert.equal(cartTotal([{ sku: 'GONE', quantity: 2 }, { sku: 'TEA', quantity: 1 }], CATALOG), '4.50 EUR');
});
