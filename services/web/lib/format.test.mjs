// Unit tests of the UI's text formatting: `node --test services/web/`.
import assert from 'node:assert/strict';
import { test } from 'node:test';

import {
  byLifecycle, currencyDigits, formatMoney, formatTime, localToIso, newIdempotencyKey, orderHref,
  orderPath, queryString, reasonText, replayLine, sentence, shortId,
} from './format.mjs';

test('money is integer minor units, as many digits as the currency has', () => {
  assert.equal(formatMoney(1299, 'EUR'), '12.99 EUR');
  assert.equal(formatMoney(5, 'EUR'), '0.05 EUR');
  assert.equal(formatMoney(-250, 'EUR'), '-2.50 EUR');
  assert.equal(formatMoney(1299, 'JPY'), '1299 JPY');
  assert.equal(formatMoney(1299, 'BHD'), '1.299 BHD');
  assert.equal(formatMoney('450', 'USD'), '4.50 USD', 'a number in a string is a number');
  assert.equal(formatMoney(1299), '12.99', 'no currency: cents, and no code');
});

test('money that is no number is a dash, never NaN or 0', () => {
  for (const missing of [null, undefined, 'abc', Number.NaN, Infinity]) {
    assert.equal(formatMoney(missing, 'EUR'), '—', String(missing));
  }
  assert.equal(formatMoney(0, 'EUR'), '0.00 EUR');
});

test('an unknown currency code counts in cents', () => {
  assert.equal(currencyDigits('NOT-A-CODE'), 2);
  assert.equal(formatMoney(1234, 'NOT-A-CODE'), '12.34 NOT-A-CODE');
  assert.equal(currencyDigits(''), 2);
});

test('times: a dash when missing, the text itself when unreadable', () => {
  assert.equal(formatTime(''), '—');
  assert.equal(formatTime(null), '—');
  assert.equal(formatTime('not a time'), 'not a time');
  const iso = '2026-03-04T05:06:07Z';
  assert.equal(formatTime(iso), new Date(iso).toLocaleString());
});

test('a datetime-local value is sent as UTC, an empty or bad one not at all', () => {
  assert.equal(localToIso(''), '');
  assert.equal(localToIso('yesterday-ish'), '');
  assert.equal(localToIso('2026-01-02T03:04:05'), new Date(2026, 0, 2, 3, 4, 5).toISOString());
});

test('short ids are the last 8 hex digits of a UUID, in lower case', () => {
  // Two v7 ids of orders placed in the same millisecond differ only at the end.
  assert.equal(shortId('0190C3A2-7B1E-7000-8000-00000000ABCD'), '0000abcd');
  assert.equal(shortId('0190c3a27b1e70008000000000001234'), '00001234');
  assert.equal(shortId('customer-bea'), 'customer', 'not a UUID: its first 8 characters');
  assert.equal(shortId(undefined), '');
});

test('a message becomes a sentence: capital first, a stop at the end', () => {
  assert.equal(sentence('the request has invalid fields'), 'The request has invalid fields.');
  assert.equal(sentence('Done!'), 'Done!');
  assert.equal(sentence('  wait…  '), 'Wait…');
  assert.equal(sentence(''), '');
  assert.equal(sentence(null), '');
});

test('order URLs escape the id and ask for a version only when there is one', () => {
  assert.equal(orderHref('a/b c'), '#/orders/a%2Fb%20c');
  assert.equal(orderPath('o-1'), '/api/orders/o-1');
  assert.equal(orderPath('o-1', 0), '/api/orders/o-1');
  assert.equal(orderPath('o-1', 3), '/api/orders/o-1?min_version=3');
});

test('a query string holds only the parameters that have a value', () => {
  assert.equal(queryString({ type: 'OrderPlaced', since: '', cursor: null, limit: '50' }), '?type=OrderPlaced&limit=50');
  assert.equal(queryString({ as_of: '' }), '');
  assert.equal(queryString({ order_id: 'a&b' }), '?order_id=a%26b');
});

test('a reason is shown for rejected and cancelled orders only', () => {
  assert.equal(reasonText('rejected', 'out_of_stock'), 'Out of stock');
  assert.equal(reasonText('rejected', 'payment_declined'), 'Payment declined');
  assert.equal(reasonText('cancelled', 'changed my mind'), 'changed my mind');
  assert.equal(reasonText('confirmed', 'out_of_stock'), '');
  assert.equal(reasonText('rejected', ''), '');
});

test('statuses are counted in lifecycle order, unknown ones last', () => {
  const order = byLifecycle({ cancelled: 1, mystery: 9, placed: 2, delivered: 3, confirmed: 4 }).map(([name]) => name);
  assert.deepEqual(order, ['placed', 'confirmed', 'delivered', 'cancelled', 'mystery']);
  assert.deepEqual(byLifecycle(undefined), []);
});

test('a replay reads as its state, progress and rate', () => {
  assert.equal(replayLine({ state: 'running', folded: 40, total: 100, events_per_second: 12.4 }), 'Running: 40 of 100 events (12 events/s)');
  assert.equal(replayLine({ state: 'running', folded: 40, total: null }), 'Running: 40 events (0 events/s)');
  assert.equal(replayLine({ state: 'succeeded', folded: 100, total: 100, events_per_second: 50, generation: 3 }),
    'Done: 100 of 100 events (50 events/s); readers switched to generation 3');
  assert.equal(replayLine({ state: 'failed', folded: 7, total: 100, error: 'disk full' }), 'Failed: 7 of 100 events (0 events/s): disk full');
});

test('idempotency keys are v4 UUIDs, without randomUUID too (plain http)', () => {
  const v4 = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;
  assert.match(newIdempotencyKey(), v4);
  // Browsers offer randomUUID in secure contexts only.
  Object.defineProperty(crypto, 'randomUUID', { value: undefined, configurable: true });
  try {
    assert.equal(typeof crypto.randomUUID, 'undefined');
    const keys = new Set(Array.from({ length: 50 }, () => newIdempotencyKey()));
    assert.equal(keys.size, 50);
    for (const key of keys) assert.match(key, v4);
  } finally {
    delete crypto.randomUUID;
  }
  assert.equal(typeof crypto.randomUUID, 'function');
});
