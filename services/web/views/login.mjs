// @ts-check
/** #/login: the development login form, or the button to the OpenID provider. */
import { ApiError, api, clientProblem } from '../lib/api.mjs';
import { auth, signIn, startProviderSignIn } from '../lib/auth.mjs';
import { $, mount, setBusy } from '../lib/dom.mjs';
import { clearInvalid, showProblem, unmarkOnInput } from '../lib/problems.mjs';
import { session } from '../lib/session.mjs';
import { state } from '../lib/state.mjs';

/** @param {import('../lib/router.mjs').ViewContext} ctx */
export function loginView({ main, signal }) {
  mount(main, 'tpl-login');
  const mode = auth.config.mode;
  $('#login-dev', main).hidden = mode !== 'development';
  $('#login-provider', main).hidden = mode !== 'oidc';
  $('#login-external', main).hidden = mode !== 'shared_secret';
  const providerButton = $('#login-provider-button', main, HTMLButtonElement);
  providerButton.addEventListener('click', async () => {
    setBusy(providerButton, true, 'Opening sign-in…');
    try {
      await startProviderSignIn();
    } catch (err) {
      if (signal.aborted) return;
      setBusy(providerButton, false);
      showProblem($('#login-errors', main), new ApiError({ title: 'Cannot sign in here', status: 0, detail: err instanceof Error ? err.message : String(err) }));
    }
  }, { signal });
  const form = $('#login-form', main, HTMLFormElement);
  const nameInput = $('#login-name', main, HTMLInputElement);
  const roleSelect = $('#login-role', main, HTMLSelectElement);
  const errors = $('#login-errors', main);
  const info = $('#login-info', main);

  if (state.loginNotice) {
    info.textContent = state.loginNotice;
    info.hidden = false;
    state.loginNotice = '';
  }
  const current = session.info();
  if (current) {
    nameInput.value = current.name || '';
    roleSelect.value = current.role || 'customer';
  }

  unmarkOnInput(form, signal);
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    clearInvalid(form);
    showProblem(errors, null);
    const name = nameInput.value.trim();
    const role = roleSelect.value;
    if (!name) {
      showProblem(errors, clientProblem('Enter a name to sign in', [{ field: 'customer_id', message: 'Required.', input: nameInput }]));
      nameInput.focus();
      return;
    }
    const button = $('#login-submit', main, HTMLButtonElement);
    setBusy(button, true, 'Signing in…');
    try {
      const { data } = await api('/api/dev/token', { method: 'POST', body: { customer_id: name, role }, anonymous: true });
      if (!data || !data.token) throw new ApiError({ title: 'Unexpected response', status: 200, detail: 'The server did not return a token.' });
      signIn(data, name, role);
    } catch (err) {
      if (signal.aborted) return;
      if (err instanceof ApiError && err.status === 404) err.problem.detail = 'The development login is not enabled on this server.';
      showProblem(errors, err);
      errors.focus();
    } finally {
      if (!signal.aborted) setBusy(button, false);
    }
  }, { signal });
}
