// @ts-check
/** Shipping an order: the form of the operations table's rows and of the order page. */
import { normalizeFieldPath } from './fields.mjs';

/** @typedef {import('./api.mjs').FieldError} FieldError */

/**
 * A ship form's two inputs, named carrier and tracking_number (the API's names).
 * @param {HTMLFormElement} form
 */
function inputs(form) {
  return {
    carrier: /** @type {HTMLInputElement} */ (form.elements.namedItem('carrier')),
    tracking_number: /** @type {HTMLInputElement} */ (form.elements.namedItem('tracking_number')),
  };
}

/** @param {HTMLFormElement} form */
export function shipFormBody(form) {
  const { carrier, tracking_number } = inputs(form);
  return { carrier: carrier.value.trim(), tracking_number: tracking_number.value.trim() };
}

/**
 * Client-side check of a ship form, reported like the server's field errors.
 * @param {HTMLFormElement} form
 * @returns {FieldError[]}
 */
export function shipFormErrors(form) {
  const { carrier, tracking_number } = shipFormBody(form);
  const missing = [];
  if (!carrier) missing.push({ field: 'carrier', message: 'Required.', input: inputs(form).carrier });
  if (!tracking_number) missing.push({ field: 'tracking_number', message: 'Required.', input: inputs(form).tracking_number });
  return missing;
}

/** @param {HTMLFormElement} form @returns {import('./problems.mjs').FieldResolver} */
export function shipFieldResolver(form) {
  return (field) => {
    const path = normalizeFieldPath(field);
    return path === 'carrier' || path === 'tracking_number' ? inputs(form)[path] : null;
  };
}

/**
 * The server's invalid_tracking problem has no field list: it is about both inputs.
 * @param {HTMLFormElement | null} form
 * @param {any} err
 */
export function markShipProblem(form, err) {
  if (!form || !err || !err.problem || err.problem.code !== 'invalid_tracking') return null;
  const { carrier, tracking_number } = inputs(form);
  carrier.setAttribute('aria-invalid', 'true');
  tracking_number.setAttribute('aria-invalid', 'true');
  return carrier;
}

/** Focus of the carrier input, when a ship form opens. @param {HTMLFormElement} form */
export function focusCarrier(form) {
  inputs(form).carrier.focus();
}
