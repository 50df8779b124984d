// Self-check of provider.mjs: starts it as a child process and drives it over plain HTTP the way
// orderflow's Rust tests will (manual redirects, manual cookies), so that the README's steps are
// proven, not guessed. Run: node tests/oidc/smoke.mjs  (exit 0 = all good).

import { spawn } from 'node:child_process';
import * as crypto from 'node:crypto';
import { fileURLToPath } from 'node:url';

const PROVIDER = fileURLToPath(new URL('./provider.mjs', import.meta.url));
const SPA = 'http://127.0.0.1:9999'; // an origin other than the provider's, as the browser SPA
const WEB_REDIRECT = `${SPA}/callback`;
const WEB_LOGOUT = `${SPA}/signed-out`;
const MOBILE_REDIRECT = 'http://127.0.0.1:54321/callback'; // port not registered on purpose

let passed = 0;
function check(condition, message, detail) {
  if (!condition) {
    const extra = detail === undefined ? '' : `\n  got: ${typeof detail === 'string' ? detail : JSON.stringify(detail)}`;
    throw new Error(`${message}${extra}`);
  }
  passed += 1;
}

// ---- the fixture as a child process -----------------------------------------------------------

const children = new Set();

async function startFixture(...extraArgs) {
  // stdin is a pipe never written to, as the Rust tests will do.
  const child = spawn(process.execPath, [PROVIDER, ...extraArgs], { stdio: ['pipe', 'pipe', 'pipe'] });
  children.add(child);
  child.stderrText = '';
  child.stderr.on('data', (d) => { child.stderrText += d; });
  child.stdoutText = '';
  child.exited = new Promise((resolve) => child.on('exit', (code, signal) => {
    children.delete(child);
    resolve({ code, signal });
  }));
  const ready = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no ready line within 15s; stderr:\n${child.stderrText}`)), 15000);
    child.stdout.on('data', (d) => {
      child.stdoutText += d;
      if (child.stdoutText.includes('\n')) {
        clearTimeout(timer);
        resolve(child.stdoutText.slice(0, child.stdoutText.indexOf('\n')));
      }
    });
    child.exited.then(({ code }) => reject(new Error(`fixture exited (${code}) before ready; stderr:\n${child.stderrText}`)));
  });
  return { child, ...JSON.parse(ready) };
}

async function waitExit(child, what) {
  const timeout = new Promise((resolve) => { setTimeout(() => resolve('timeout'), 5000); });
  const result = await Promise.race([child.exited, timeout]);
  check(result !== 'timeout', `fixture should exit on ${what}`);
  check(result.code === 0, `fixture should exit 0 on ${what}`, result);
}

// ---- HTTP with a hand-made cookie jar ---------------------------------------------------------

class CookieJar {
  #cookies = new Map(); // name -> { value, path }

  store(response) {
    for (const line of response.headers.getSetCookie()) {
      const [pair, ...attributes] = line.split(';').map((s) => s.trim());
      const name = pair.slice(0, pair.indexOf('='));
      const value = pair.slice(pair.indexOf('=') + 1);
      let path = '/';
      let expired = value === '';
      for (const attribute of attributes) {
        const [key, v = ''] = attribute.split('=');
        if (key.toLowerCase() === 'path') path = v;
        if (key.toLowerCase() === 'expires' && Date.parse(v) < Date.now()) expired = true;
        if (key.toLowerCase() === 'max-age' && Number(v) <= 0) expired = true;
      }
      if (expired) this.#cookies.delete(name);
      else this.#cookies.set(name, { value, path });
    }
  }

  header(url) {
    const { pathname } = new URL(url);
    return [...this.#cookies]
      .filter(([, c]) => pathname === c.path || pathname.startsWith(c.path.endsWith('/') ? c.path : `${c.path}/`))
      .map(([name, c]) => `${name}=${c.value}`)
      .join('; ');
  }

  names() { return [...this.#cookies.keys()]; }
}

async function http(url, { method = 'GET', form, headers = {}, jar } = {}) {
  const h = { ...headers };
  if (jar) {
    const cookie = jar.header(url);
    if (cookie) h.cookie = cookie;
  }
  let body;
  if (form) {
    body = new URLSearchParams(form).toString();
    h['content-type'] = 'application/x-www-form-urlencoded';
  }
  const response = await fetch(url, { method, headers: h, body, redirect: 'manual' });
  jar?.store(response);
  const text = await response.text();
  return { status: response.status, headers: response.headers, text, json: () => JSON.parse(text) };
}

// ---- OIDC helpers -----------------------------------------------------------------------------

const b64url = (buf) => Buffer.from(buf).toString('base64url');
const decodeJwt = (jwt) => {
  const [header, payload] = jwt.split('.').slice(0, 2).map((p) => JSON.parse(Buffer.from(p, 'base64url')));
  return { header, payload };
};

// Checks the signature with the private key the ready line (or a control endpoint) handed out,
// which proves that key really is the one behind the kid.
function verifyJwt(jwt, keys) {
  const { header } = decodeJwt(jwt);
  const key = keys.find((k) => k.kid === header.kid);
  check(key, `JWT kid ${header.kid} should be one of the fixture's keys`);
  check(key.alg === header.alg, `JWT alg ${header.alg} should be its key's alg ${key.alg}`);
  const publicKey = crypto.createPublicKey(crypto.createPrivateKey(key.private_pem));
  const [h, p, s] = jwt.split('.');
  const options = { key: publicKey };
  if (header.alg === 'PS256') Object.assign(options, { padding: crypto.constants.RSA_PKCS1_PSS_PADDING, saltLength: 32 });
  if (header.alg === 'ES256') options.dsaEncoding = 'ieee-p1363';
  check(crypto.verify('sha256', Buffer.from(`${h}.${p}`), options, Buffer.from(s, 'base64url')), `JWT signature should verify with kid ${header.kid}`);
}

// The sign-in of README.md, step by step, as a browser or native app would do it.
async function signIn(issuer, { clientId = 'orderflow-web', redirectUri = WEB_REDIRECT, login, scope = 'openid profile', origin }) {
  const jar = new CookieJar();
  const verifier = b64url(crypto.randomBytes(32));
  const challenge = b64url(crypto.createHash('sha256').update(verifier).digest());
  const state = b64url(crypto.randomBytes(8));
  const nonce = b64url(crypto.randomBytes(8));

  // 1. authorization request -> 303 to the login page, sets the interaction cookies
  const authUrl = `${issuer}/auth?${new URLSearchParams({
    client_id: clientId, response_type: 'code', scope, redirect_uri: redirectUri,
    code_challenge: challenge, code_challenge_method: 'S256', state, nonce,
  })}`;
  const r1 = await http(authUrl, { jar });
  check(r1.status === 303, `${login}/${clientId}: GET /auth should answer 303`, `${r1.status} ${r1.text}`);
  const loginPage = new URL(r1.headers.get('location'), issuer).href;
  check(/\/interaction\/[^/]+$/.test(loginPage), 'GET /auth should redirect to /interaction/<uid>', loginPage);
  check(jar.names().includes('_interaction') && jar.names().includes('_interaction_resume'), 'GET /auth should set _interaction and _interaction_resume', jar.names());

  // 2. the login page (needs the _interaction cookie) -> 200 HTML with the form
  const r2 = await http(loginPage, { jar });
  check(r2.status === 200, 'GET /interaction/<uid> should answer 200', `${r2.status} ${r2.text}`);
  const action = r2.text.match(/<form[^>]*action="([^"]+)"[^>]*method="post"/)?.[1];
  check(action === loginPage, 'login form should post back to the interaction URL', action);
  check(/name="prompt" value="login"/.test(r2.text) && /name="login"/.test(r2.text) && /name="password"/.test(r2.text),
    'login form should have fields prompt=login, login, password');
  check(!r2.text.includes('fonts.googleapis.com'), 'pages should not load anything from the internet');

  // 3. post the form -> 303 back to /auth/<uid>
  const r3 = await http(action, { method: 'POST', jar, form: { prompt: 'login', login, password: 'any' } });
  check(r3.status === 303, 'POST of the login form should answer 303', `${r3.status} ${r3.text}`);
  const resume = new URL(r3.headers.get('location'), issuer).href;
  check(resume.startsWith(`${issuer}/auth/`), 'login should redirect to /auth/<uid>', resume);

  // 4. resume (needs the _interaction_resume cookie) -> 303 to redirect_uri with code (no consent page)
  const r4 = await http(resume, { jar });
  check(r4.status === 303, 'GET /auth/<uid> should answer 303', `${r4.status} ${r4.text}`);
  const back = new URL(r4.headers.get('location'));
  check(`${back.origin}${back.pathname}` === redirectUri, 'resume should redirect to the redirect_uri (no consent page)', back.href);
  check(back.searchParams.get('state') === state, 'redirect should carry the state');
  check(back.searchParams.get('iss') === issuer, 'redirect should carry iss (RFC 9207)', back.href);
  const code = back.searchParams.get('code');
  check(code, 'redirect should carry a code', back.href);
  check(jar.names().includes('_session'), 'a _session cookie should now be set', jar.names());

  // 5. code exchange
  const headers = origin ? { origin } : {};
  const r5 = await http(`${issuer}/token`, {
    method: 'POST', headers,
    form: { grant_type: 'authorization_code', code, redirect_uri: redirectUri, client_id: clientId, code_verifier: verifier },
  });
  check(r5.status === 200, 'token exchange should answer 200', `${r5.status} ${r5.text}`);
  const tokens = r5.json();
  for (const field of ['access_token', 'id_token', 'refresh_token', 'expires_in']) {
    check(tokens[field] !== undefined, `token response should have ${field}`, tokens);
  }
  check(tokens.token_type === 'Bearer', 'token_type should be Bearer', tokens.token_type);
  check(decodeJwt(tokens.id_token).payload.nonce === nonce, 'ID token should carry the nonce');
  return { tokens, jar, tokenResponse: r5 };
}

function checkAccessToken(token, { issuer, keys, sub, roles, aud = 'api://orderflow', ttl = 300, alg = 'RS256', kid = keys[0].kid }) {
  const { header, payload } = decodeJwt(token);
  check(header.alg === alg && header.kid === kid, `access token should be signed ${alg} by kid ${kid}`, header);
  check(header.typ === 'at+jwt', 'access token typ should be at+jwt', header);
  verifyJwt(token, keys);
  check(payload.iss === issuer, 'access token iss', payload);
  check(payload.aud === aud, `access token aud should be ${aud}`, payload);
  check(payload.sub === sub, `access token sub should be ${sub}`, payload);
  check(payload.exp - payload.iat === ttl, `access token should live ${ttl}s`, payload);
  check(payload.client_id && payload.jti, 'access token should have client_id and jti', payload);
  check(payload.preferred_username === sub, 'access token preferred_username', payload);
  check(payload.name === sub[0].toUpperCase() + sub.slice(1), 'access token name', payload);
  if (roles) check(JSON.stringify(payload.roles) === JSON.stringify(roles), `access token roles should be ${roles}`, payload);
  else check(!('roles' in payload), 'access token should have no roles claim', payload);
  return payload;
}

async function refresh(issuer, refreshToken, clientId = 'orderflow-web') {
  const r = await http(`${issuer}/token`, {
    method: 'POST', form: { grant_type: 'refresh_token', refresh_token: refreshToken, client_id: clientId },
  });
  check(r.status === 200, 'refresh should answer 200', `${r.status} ${r.text}`);
  const tokens = r.json();
  check(tokens.refresh_token && tokens.refresh_token !== refreshToken, 'refresh should rotate the refresh token', tokens);
  return tokens;
}

const jwksKids = async (issuer) => (await http(`${issuer}/jwks`)).json().keys.map((k) => k.kid);

// ---- the checks -------------------------------------------------------------------------------

async function main() {
  const fx = await startFixture('--redirect-uri', WEB_REDIRECT, '--post-logout-redirect-uri', WEB_LOGOUT);
  const { issuer } = fx;
  let { keys } = fx;
  check(/^http:\/\/127\.0\.0\.1:\d+$/.test(issuer), 'issuer should be http://127.0.0.1:<port>', issuer);
  check(JSON.stringify(keys.map((k) => k.alg)) === '["RS256","PS256","ES256"]', 'start keys: RS256, PS256, ES256', keys);
  check(new Set(keys.map((k) => k.kid)).size === 3, 'kids should be unique');
  check(keys.every((k) => k.private_pem.startsWith('-----BEGIN PRIVATE KEY-----')), 'keys should be PKCS#8 PEM');

  // discovery and JWKS
  const discovery = await http(`${issuer}/.well-known/openid-configuration`, { headers: { origin: SPA } });
  check(discovery.status === 200, 'discovery should answer 200');
  check(discovery.headers.get('access-control-allow-origin') === SPA, 'discovery should allow CORS', discovery.headers.get('access-control-allow-origin'));
  const meta = discovery.json();
  check(meta.issuer === issuer, 'discovery issuer', meta.issuer);
  check(meta.authorization_endpoint === `${issuer}/auth`, 'authorization_endpoint should be /auth', meta.authorization_endpoint);
  check(meta.token_endpoint === `${issuer}/token`, 'token_endpoint should be /token', meta.token_endpoint);
  check(meta.end_session_endpoint === `${issuer}/session/end`, 'end_session_endpoint should be /session/end', meta.end_session_endpoint);
  check(meta.revocation_endpoint === `${issuer}/token/revocation`, 'revocation_endpoint should be listed', meta.revocation_endpoint);
  check(meta.jwks_uri === `${issuer}/jwks`, 'jwks_uri', meta.jwks_uri);
  const jwks = await http(meta.jwks_uri, { headers: { origin: SPA } });
  check(jwks.headers.get('access-control-allow-origin') === SPA, 'JWKS should allow CORS');
  const published = jwks.json().keys;
  check(published.every((k) => k.alg && k.use === 'sig' && k.kid && !k.d), 'every JWK should have alg, use=sig, kid and no private part', published);
  check(JSON.stringify(published.map((k) => k.kid)) === JSON.stringify(keys.map((k) => k.kid)), 'JWKS kids should be the ready line kids');

  // CORS on the token endpoint: preflight, then the real exchange below with an Origin
  const preflight = await http(`${issuer}/token`, {
    method: 'OPTIONS', headers: { origin: SPA, 'access-control-request-method': 'POST', 'access-control-request-headers': 'content-type' },
  });
  check(preflight.status === 204 && preflight.headers.get('access-control-allow-origin') === SPA, 'token preflight should allow the SPA origin', preflight.status);
  const evil = await http(`${issuer}/token`, { method: 'POST', headers: { origin: 'http://evil.example' }, form: { grant_type: 'refresh_token', refresh_token: 'x', client_id: 'orderflow-web' } });
  check(evil.status === 400 && !evil.headers.get('access-control-allow-origin'), 'a non-loopback origin should be refused', `${evil.status} ${evil.text}`);

  // olga through the web client, from the SPA origin
  const olga = await signIn(issuer, { login: 'olga', origin: SPA });
  check(olga.tokenResponse.headers.get('access-control-allow-origin') === SPA, 'token response should carry Access-Control-Allow-Origin for the SPA');
  check(olga.tokens.expires_in === 300, 'expires_in should be 300', olga.tokens.expires_in);
  checkAccessToken(olga.tokens.access_token, { issuer, keys, sub: 'olga', roles: ['Orders.Operator'] });
  verifyJwt(olga.tokens.id_token, keys);
  const idToken = decodeJwt(olga.tokens.id_token).payload;
  check(idToken.aud === 'orderflow-web' && idToken.sub === 'olga' && idToken.name === 'Olga', 'ID token claims', idToken);

  // alice: no roles at all
  const alice = await signIn(issuer, { login: 'alice' });
  checkAccessToken(alice.tokens.access_token, { issuer, keys, sub: 'alice' });

  // refresh, with rotation of the refresh token
  const refreshed = await refresh(issuer, olga.tokens.refresh_token);
  checkAccessToken(refreshed.access_token, { issuer, keys, sub: 'olga', roles: ['Orders.Operator'] });

  // mobile: native client, loopback redirect on a port that was never registered
  const mobile = await signIn(issuer, { clientId: 'orderflow-mobile', redirectUri: MOBILE_REDIRECT, login: 'sam' });
  checkAccessToken(mobile.tokens.access_token, { issuer, keys, sub: 'sam', roles: ['Orders.Operator', 'Orders.Analyst'] });

  // control endpoints
  check((await http(`${issuer}/__fixture/rotate`)).status === 405, 'GET /__fixture/rotate should be refused');
  const oldKids = keys.map((k) => k.kid);
  const rotated = await http(`${issuer}/__fixture/rotate`, { method: 'POST' });
  check(rotated.status === 200, 'rotate should answer 200', `${rotated.status} ${rotated.text}`);
  const afterRotate = rotated.json();
  check(afterRotate.issuer === issuer, 'rotate should answer the issuer');
  keys = afterRotate.keys;
  const newKid = keys[0].kid;
  check(keys.length === 4 && !oldKids.includes(newKid) && keys[0].alg === 'RS256', 'rotate should put a new RS256 key first', keys.map((k) => k.kid));
  check(JSON.stringify(await jwksKids(issuer)) === JSON.stringify([newKid, ...oldKids]), 'JWKS after rotate: new kid first, old kids kept');
  const olga2 = await signIn(issuer, { login: 'olga' });
  checkAccessToken(olga2.tokens.access_token, { issuer, keys, sub: 'olga', roles: ['Orders.Operator'], kid: newKid });
  check(decodeJwt(olga2.tokens.id_token).header.kid === newKid, 'ID token after rotate should use the new kid');
  // tokens from before the swap still refresh (shared in-memory store), now signed by the new key
  const refreshedAfterRotate = await refresh(issuer, refreshed.refresh_token);
  checkAccessToken(refreshedAfterRotate.access_token, { issuer, keys, sub: 'olga', roles: ['Orders.Operator'], kid: newKid });
  // rotation of refresh tokens: a spent one is refused (and revokes its grant)
  const spent = await http(`${issuer}/token`, {
    method: 'POST', form: { grant_type: 'refresh_token', refresh_token: refreshed.refresh_token, client_id: 'orderflow-web' },
  });
  check(spent.status === 400 && spent.json().error === 'invalid_grant', 'a spent refresh token should be refused', `${spent.status} ${spent.text}`);

  const retired = await http(`${issuer}/__fixture/retire`, { method: 'POST' });
  check(retired.status === 200, 'retire should answer 200', `${retired.status} ${retired.text}`);
  keys = retired.json().keys;
  check(keys.length === 1 && keys[0].kid === newKid, 'retire should keep only the first key', keys.map((k) => k.kid));
  const kidsAfterRetire = await jwksKids(issuer);
  check(JSON.stringify(kidsAfterRetire) === JSON.stringify([newKid]), 'JWKS after retire: only the new kid', kidsAfterRetire);
  check(!kidsAfterRetire.includes(decodeJwt(olga.tokens.access_token).header.kid), 'the old token kid should be gone after retire');
  const anna = await signIn(issuer, { login: 'anna' });
  checkAccessToken(anna.tokens.access_token, { issuer, keys, sub: 'anna', roles: ['Orders.Analyst'], kid: newKid });

  // RP-initiated logout with the confirmation form
  const logoutUrl = `${meta.end_session_endpoint}?${new URLSearchParams({
    id_token_hint: anna.tokens.id_token, post_logout_redirect_uri: WEB_LOGOUT, state: 'bye',
  })}`;
  const l1 = await http(logoutUrl, { jar: anna.jar });
  check(l1.status === 200, 'GET /session/end should answer 200 with the confirmation form', `${l1.status} ${l1.text}`);
  const logoutAction = l1.text.match(/<form id="op.logoutForm" method="post" action="([^"]+)">/)?.[1];
  check(logoutAction === `${issuer}/session/end/confirm`, 'logout form should post to /session/end/confirm', logoutAction);
  const xsrf = l1.text.match(/name="xsrf" value="([^"]+)"/)?.[1];
  check(xsrf && /name="logout"/.test(l1.text), 'logout form should have xsrf and a logout=yes button');
  const l2 = await http(logoutAction, { method: 'POST', jar: anna.jar, form: { xsrf, logout: 'yes' } });
  check(l2.status === 303, 'logout confirm should answer 303', `${l2.status} ${l2.text}`);
  check(l2.headers.get('location') === `${WEB_LOGOUT}?state=bye`, 'logout should go to post_logout_redirect_uri with state', l2.headers.get('location'));
  check(!anna.jar.names().includes('_session'), 'logout should clear the _session cookie', anna.jar.names());

  // the other options, on a second instance
  const es = await startFixture('--access-token-alg', 'ES256', '--access-token-ttl', '120', '--audience', 'urn:example:other');
  check(es.keys[0].alg === 'ES256', 'with --access-token-alg ES256 the first key should be ES256', es.keys.map((k) => k.alg));
  const gus = await signIn(es.issuer, { login: 'gus', redirectUri: 'http://127.0.0.1:8080/' });
  check(gus.tokens.expires_in === 120, 'expires_in should follow --access-token-ttl');
  checkAccessToken(gus.tokens.access_token, {
    issuer: es.issuer, keys: es.keys, sub: 'gus', roles: ['Some.Other.Role'], aud: 'urn:example:other', ttl: 120, alg: 'ES256',
  });
  verifyJwt(gus.tokens.id_token, es.keys);
  es.child.kill('SIGTERM');
  await waitExit(es.child, 'SIGTERM');

  // stdout held exactly the ready line; then closing stdin ends the fixture
  check(fx.child.stdoutText.split('\n').filter(Boolean).length === 1, 'stdout should hold only the ready line', fx.child.stdoutText.slice(0, 500));
  fx.child.stdin.end();
  await waitExit(fx.child, 'stdin closing');
}

try {
  await main();
  console.log(`smoke: ${passed} passed, 0 failed`);
} catch (err) {
  console.error(`oidc fixture smoke FAILED: ${err.message}`);
  console.log(`smoke: ${passed} passed, 1 failed`);
  for (const child of children) {
    console.error(`--- fixture stderr ---\n${child.stderrText}`);
    child.kill('SIGTERM');
  }
  process.exitCode = 1;
}
