// @ts-check
/**
 * The request contract's limits, from the served OpenAPI document: the server writes its own
 * constants there, so an input cannot drift from what the server accepts. Inputs name theirs
 * with data-limit="Schema.property" (e.g. "AddressBody.name"); texts get a maxlength, numbers
 * a max. When the document cannot be read the maps stay empty: the server still checks.
 */

/** maxLength by "Schema.property". @type {Map<string, number>} */
export const limits = new Map();
/** maximum by "Schema.property". @type {Map<string, number>} */
export const maxima = new Map();

/**
 * The limits an OpenAPI document states for its schemas' properties.
 * @param {any} doc the parsed /openapi.json
 * @returns {{limits: Map<string, number>, maxima: Map<string, number>}}
 */
export function limitsOf(doc) {
  const found = { limits: new Map(), maxima: new Map() };
  const schemas = ((doc && doc.components) || {}).schemas || {};
  for (const [schema, body] of Object.entries(schemas)) {
    for (const [property, rule] of Object.entries((body && body.properties) || {})) {
      if (rule && Number.isInteger(rule.maxLength)) found.limits.set(`${schema}.${property}`, rule.maxLength);
      if (rule && Number.isInteger(rule.maximum)) found.maxima.set(`${schema}.${property}`, rule.maximum);
    }
  }
  return found;
}

/** Reads /openapi.json (once, at boot) and applies its limits to the page. */
export async function loadLimits() {
  try {
    const res = await fetch('/openapi.json', { headers: { Accept: 'application/json' } });
    if (!res.ok) return;
    const found = limitsOf(await res.json());
    for (const [key, value] of found.limits) limits.set(key, value);
    for (const [key, value] of found.maxima) maxima.set(key, value);
  } catch (err) {
    console.warn('the request limits could not be read; the server still checks them', err);
  }
  applyLimits(document);
}

/**
 * Sets maxlength (and max) on `root` and the inputs under it that name a limit (data-limit).
 * @param {ParentNode} root
 */
export function applyLimits(root) {
  const named = root instanceof Element && root.matches('[data-limit]') ? [root] : [];
  const inputs = named.concat(Array.from(root.querySelectorAll('[data-limit]')));
  for (const input of inputs) {
    if (!(input instanceof HTMLInputElement)) continue;
    const name = input.dataset.limit || '';
    const max = limits.get(name);
    if (max !== undefined) input.maxLength = max;
    const maximum = maxima.get(name);
    if (maximum !== undefined) input.max = String(maximum);
  }
}
