// Unit tests of field paths in words: `node --test services/web/`.
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { afterLabel, humanField, normalizeFieldPath } from './fields.mjs';

test('every spelling of a field path normalizes to dotted segments', () => {
  const city = 'shipping_address.city';
  for (const spelling of ['shipping_address.city', '/shipping_address/city', '$.shipping_address.city', '$shipping_address.city', 'body.shipping_address.city', '  shipping_address.city ']) {
    assert.equal(normalizeFieldPath(spelling), city, spelling);
  }
  assert.equal(normalizeFieldPath('lines[0].quantity'), 'lines.0.quantity');
  assert.equal(normalizeFieldPath('/lines/12/sku'), 'lines.12.sku');
  assert.equal(normalizeFieldPath(undefined), '');
});

test('known paths have their labels', () => {
  assert.equal(humanField('shipping_address.postal_code'), 'Postal code');
  assert.equal(humanField('/shipping_address/line1'), 'Address line 1');
  assert.equal(humanField('customer_id'), 'Name');
  assert.equal(humanField('tracking_number'), 'Tracking number');
});

test('order lines are counted from 1, with their field', () => {
  assert.equal(humanField('lines[0]'), 'Item 1');
  assert.equal(humanField('lines[1].quantity'), 'Quantity of item 2');
  assert.equal(humanField('/lines/9/sku'), 'SKU of item 10');
  assert.equal(humanField('lines'), 'Items');
});

test('unknown paths are their last segment spelled out', () => {
  assert.equal(humanField('shipping_address.door_code'), 'Door code');
  assert.equal(humanField('as_of'), 'As of');
  assert.equal(humanField(''), '');
});

test("the server's messages continue the label; the browser's stand alone", () => {
  assert.equal(`Name${afterLabel('is required')}`, 'Name is required.');
  assert.equal(`Name${afterLabel('must be at most 80 characters.')}`, 'Name must be at most 80 characters.');
  assert.equal(`Quantity${afterLabel('Enter a whole number.')}`, 'Quantity: Enter a whole number.');
  assert.equal(`Country${afterLabel('Required.')}`, 'Country: Required.');
});
