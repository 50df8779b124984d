// Unit tests of reading the live feed's events: `node --test services/web/`.
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { listen, live, parseOrderEvent } from './live.mjs';

test('an order event needs an order and a status; its version is a number', () => {
  assert.deepEqual(parseOrderEvent('{"order_id":"o1","status":"confirmed","version":"3"}'), { order_id: 'o1', status: 'confirmed', version: 3 });
  assert.deepEqual(parseOrderEvent('{"order_id":"o1","status":"placed"}'), { order_id: 'o1', status: 'placed', version: 0 });
  for (const raw of ['', 'not json', 'null', '42', '{"order_id":"o1"}', '{"status":"placed"}']) {
    assert.equal(parseOrderEvent(raw), null, raw);
  }
});

test("a view hears order events until its route's signal aborts", () => {
  const controller = new AbortController();
  const heard = [];
  listen(controller.signal, (event) => heard.push(event.status));
  live.dispatch('{"order_id":"o1","status":"confirmed","version":2}');
  controller.abort();
  live.dispatch('{"order_id":"o1","status":"shipped","version":3}');
  assert.deepEqual(heard, ['confirmed']);
  assert.equal(live.listeners.size, 0, 'the listener is gone, not just muted');
});

test('one failing listener does not keep the event from the others', (t) => {
  t.mock.method(console, 'error', () => {});
  const controller = new AbortController();
  const heard = [];
  listen(controller.signal, () => { throw new Error('boom'); });
  listen(controller.signal, (event) => heard.push(event.order_id));
  live.dispatch('{"order_id":"o2","status":"placed"}');
  controller.abort();
  assert.deepEqual(heard, ['o2']);
});
