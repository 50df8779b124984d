// Unit tests of reading the contract's limits: `node --test services/web/`.
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { limitsOf } from './limits.mjs';

test("limits are read by schema and property from the document's components", () => {
  const doc = {
    components: {
      schemas: {
        AddressBody: { properties: { name: { type: 'string', maxLength: 80 }, country: { type: 'string', minLength: 2 } } },
        LineBody: { properties: { quantity: { type: 'integer', minimum: 1, maximum: 999 } } },
        Empty: {},
        Odd: { properties: { ratio: { type: 'number', maximum: 0.5 }, label: { maxLength: '12' }, gone: null } },
      },
    },
  };
  const { limits, maxima } = limitsOf(doc);
  assert.deepEqual([...limits], [['AddressBody.name', 80]]);
  assert.deepEqual([...maxima], [['LineBody.quantity', 999]], 'only whole numbers count');
});

test('a document without schemas states no limits', () => {
  for (const doc of [null, {}, { components: {} }, { components: { schemas: null } }]) {
    const { limits, maxima } = limitsOf(doc);
    assert.equal(limits.size + maxima.size, 0, JSON.stringify(doc));
  }
});
