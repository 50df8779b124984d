// Unit tests of the browser's OpenID Connect helpers: `node --test services/web/`.
import assert from 'node:assert/strict';
import { test } from 'node:test';

import {
  authorizeUrl, base64url, callbackParams, challengeOf, decodeJwt, discover, endSessionUrl,
  idTokenProblem, randomString, renewDelay, requestTokens, tokenForm,
} from './oidc.mjs';

const DOC = {
  issuer: 'https://id.example/tenant/v2.0',
  authorization_endpoint: 'https://id.example/tenant/oauth2/v2.0/authorize',
  token_endpoint: 'https://id.example/tenant/oauth2/v2.0/token',
  end_session_endpoint: 'https://id.example/tenant/oauth2/v2.0/logout',
};

const jsonResponse = (status, body) => new Response(JSON.stringify(body), { status, headers: { 'content-type': 'application/json' } });

test('the S256 challenge is the RFC 7636 appendix B example', async () => {
  assert.equal(
    await challengeOf('dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk'),
    'E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM',
  );
});

test('random strings are URL-safe and differ', () => {
  const a = randomString();
  assert.match(a, /^[A-Za-z0-9_-]{43}$/);
  assert.notEqual(a, randomString());
  assert.equal(base64url(new Uint8Array([251, 255])), '-_8');
});

test('the authorization request asks for a code with PKCE', () => {
  const url = new URL(authorizeUrl(DOC, {
    clientId: 'spa', scope: 'openid profile', redirectUri: 'https://shop.example/',
    challenge: 'C', state: 'S', nonce: 'N',
  }));
  assert.equal(url.origin + url.pathname, DOC.authorization_endpoint);
  assert.deepEqual(Object.fromEntries(url.searchParams), {
    client_id: 'spa', response_type: 'code', scope: 'openid profile',
    redirect_uri: 'https://shop.example/', code_challenge: 'C', code_challenge_method: 'S256',
    state: 'S', nonce: 'N',
  });
});

test('a callback is recognised by its code or error, nothing else', () => {
  assert.equal(callbackParams(''), null);
  assert.equal(callbackParams('?foo=1'), null);
  assert.deepEqual(callbackParams('?code=abc&state=xyz&iss=x'), { code: 'abc', state: 'xyz', error: null, errorDescription: null });
  assert.equal(callbackParams('?error=access_denied&error_description=no&state=s').error, 'access_denied');
});

test('token forms: a code with its verifier, or a refresh token', () => {
  const code = tokenForm({ clientId: 'spa', code: 'c', redirectUri: 'https://shop.example/', verifier: 'v' });
  assert.equal(code.toString(), 'client_id=spa&grant_type=authorization_code&code=c&redirect_uri=https%3A%2F%2Fshop.example%2F&code_verifier=v');
  const refresh = tokenForm({ clientId: 'spa', refreshToken: 'r' });
  assert.equal(refresh.toString(), 'client_id=spa&grant_type=refresh_token&refresh_token=r');
});

test('discovery refuses a document naming another issuer', async () => {
  const ok = await discover(DOC.issuer, async () => jsonResponse(200, DOC));
  assert.equal(ok.token_endpoint, DOC.token_endpoint);
  await assert.rejects(discover(DOC.issuer, async () => jsonResponse(200, { ...DOC, issuer: 'https://evil.example' })), /another|not/);
  await assert.rejects(discover(DOC.issuer, async () => jsonResponse(404, {})), /404/);
});

test('the token endpoint\'s refusal is a readable error', async () => {
  await assert.rejects(
    requestTokens(DOC, tokenForm({ clientId: 'spa', refreshToken: 'r' }), async () => jsonResponse(400, { error: 'invalid_grant', error_description: 'grant request is invalid' })),
    /grant request is invalid/,
  );
  const answer = await requestTokens(DOC, new URLSearchParams(), async () => jsonResponse(200, { access_token: 'a', expires_in: 300 }));
  assert.equal(answer.access_token, 'a');
});

test('ID tokens are checked for issuer, audience, nonce and expiry', () => {
  const now = 1_800_000_000;
  const expected = { issuer: DOC.issuer, clientId: 'spa', nonce: 'n1', nowSeconds: now };
  const good = { iss: DOC.issuer, aud: ['spa', 'other'], nonce: 'n1', exp: now + 300 };
  assert.equal(idTokenProblem(good, expected), null);
  assert.match(idTokenProblem({ ...good, iss: 'x' }, expected), /issuer/);
  assert.match(idTokenProblem({ ...good, aud: 'other' }, expected), /client/);
  assert.match(idTokenProblem({ ...good, nonce: 'n2' }, expected), /another sign-in/);
  assert.match(idTokenProblem({ ...good, exp: now - 120 }, expected), /expired/);
  assert.match(idTokenProblem(null, expected), /unreadable/);
});

test('JWT claims decode, UTF-8 included', () => {
  const payload = base64url(new TextEncoder().encode(JSON.stringify({ name: 'Zoë', sub: '1' })));
  assert.deepEqual(decodeJwt(`e30.${payload}.sig`), { name: 'Zoë', sub: '1' });
  assert.equal(decodeJwt('garbage'), null);
});

test('renewal comes a minute early, or at 80% of a short life, never in under 5 s', () => {
  const now = 1_000_000;
  assert.equal(renewDelay(now + 3_600_000, now), 3_540_000);
  assert.equal(renewDelay(now + 100_000, now), 80_000);
  assert.equal(renewDelay(now + 30_000, now), 24_000);
  assert.equal(renewDelay(now + 6_000, now), 5_000);
  assert.equal(renewDelay(now - 1, now), 5_000);
});

test('sign-out goes to the provider with the ID token hint and the way back', () => {
  const url = new URL(endSessionUrl(DOC, { idToken: 'id', postLogoutRedirectUri: 'https://shop.example/', clientId: 'spa' }));
  assert.equal(url.origin + url.pathname, DOC.end_session_endpoint);
  assert.equal(url.searchParams.get('id_token_hint'), 'id');
  assert.equal(url.searchParams.get('post_logout_redirect_uri'), 'https://shop.example/');
  assert.equal(endSessionUrl({ ...DOC, end_session_endpoint: undefined }, { postLogoutRedirectUri: 'x', clientId: 'spa' }), null);
});
