// A real OpenID provider (oidc-provider 8.8.1) for orderflow's tests.
// Contract (arguments, ready line, users, clients, control endpoints): see README.md here.

import * as http from 'node:http';
import * as crypto from 'node:crypto';
import { parseArgs } from 'node:util';

// oidc-provider prints its NOTICEs with console.info, i.e. to stdout, and stdout is reserved
// for the single ready line the tests parse. So every console method goes to stderr, and
// oidc-provider is imported only after that (a static import would run before this line).
for (const method of ['log', 'info', 'debug']) console[method] = console.error;

const { default: Provider, errors, interactionPolicy } = await import('oidc-provider');

const { values: args } = parseArgs({
  options: {
    port: { type: 'string', default: '0' },
    'redirect-uri': { type: 'string', multiple: true, default: [] },
    'post-logout-redirect-uri': { type: 'string', multiple: true, default: [] },
    audience: { type: 'string', default: 'api://orderflow' },
    'access-token-ttl': { type: 'string', default: '300' },
    'access-token-alg': { type: 'string', default: 'RS256' },
    // For a script that runs the fixture in the background (stdin is /dev/null there).
    'ignore-stdin': { type: 'boolean', default: false },
  },
});

const PORT = Number(args.port);
const AUDIENCE = args.audience;
const TTL = Number(args['access-token-ttl']);
const ALG = args['access-token-alg'];
// The README's local run (a SPA served on 8080) works without any argument.
const REDIRECT_URIS = args['redirect-uri'].length ? args['redirect-uri'] : ['http://127.0.0.1:8080/'];
const POST_LOGOUT_URIS = args['post-logout-redirect-uri'].length
  ? args['post-logout-redirect-uri'] : ['http://127.0.0.1:8080/'];

function fail(message) {
  console.error(`provider.mjs: ${message}`);
  process.exit(2);
}
if (!Number.isInteger(PORT) || PORT < 0 || PORT > 65535) fail(`bad --port ${args.port}`);
if (!Number.isInteger(TTL) || TTL <= 0) fail(`bad --access-token-ttl ${args['access-token-ttl']}`);
if (!['RS256', 'PS256', 'ES256'].includes(ALG)) fail(`bad --access-token-alg ${ALG}`);
// The audience doubles as the RFC 8707 resource indicator, which oidc-provider requires to be an
// absolute URI; failing here beats an invalid_target at the first sign-in.
if (!URL.canParse(AUDIENCE)) fail(`--audience must be an absolute URI, got ${AUDIENCE}`);

// ---- keys -------------------------------------------------------------------------------------

function newKey(alg) {
  const { privateKey } = alg === 'ES256'
    ? crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' })
    : crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
  return { kid: crypto.randomUUID(), alg, privateKey };
}

// The access-token alg's key comes first so that "retire" (keep only the first key) always
// leaves a key that can still sign access tokens and ID tokens.
let keys = [ALG, ...['RS256', 'PS256', 'ES256'].filter((a) => a !== ALG)].map(newKey);

const toJwk = ({ kid, alg, privateKey }) => ({ ...privateKey.export({ format: 'jwk' }), kid, alg, use: 'sig' });

function describe() {
  return {
    issuer: ISSUER,
    keys: keys.map(({ kid, alg, privateKey }) => ({
      kid, alg, private_pem: privateKey.export({ type: 'pkcs8', format: 'pem' }),
      // For tests that forge an HS256 token keyed with the public key (algorithm confusion).
      public_pem: crypto.createPublicKey(privateKey).export({ type: 'spki', format: 'pem' }),
    })),
  };
}

// ---- users ------------------------------------------------------------------------------------

const ROLES = {
  olga: ['Orders.Operator'],
  anna: ['Orders.Analyst'],
  sam: ['Orders.Operator', 'Orders.Analyst'],
  gus: ['Some.Other.Role'],
};

// devInteractions accepts any login and password; the login becomes the subject.
function claimsOf(login) {
  const claims = {
    sub: login,
    name: login.charAt(0).toUpperCase() + login.slice(1),
    preferred_username: login,
    email: `${login}@example.test`,
  };
  // No roles means no claim at all, not an empty array: the API must cope with its absence.
  if (ROLES[login]) claims.roles = ROLES[login];
  return claims;
}

// ---- provider configuration -------------------------------------------------------------------

// One cookie key for the life of the process, so cookies signed by a Provider instance stay
// valid after /__fixture/rotate swaps in a new one.
const COOKIE_KEYS = [crypto.randomBytes(32).toString('base64url')];
const HOUR = 60 * 60;
const LOOPBACK = new Set(['127.0.0.1', 'localhost', '[::1]']);

function configuration() {
  // Built afresh for each Provider: oidc-provider mutates parts of what it is given.
  const policy = interactionPolicy.base();
  // oidc-provider always asks native clients for consent; orderflow-mobile is first-party.
  policy.get('consent').checks.remove('native_client_prompt');

  return {
    jwks: { keys: keys.map(toJwk) },
    clients: [
      {
        client_id: 'orderflow-web',
        token_endpoint_auth_method: 'none',
        grant_types: ['authorization_code', 'refresh_token'],
        response_types: ['code'],
        redirect_uris: REDIRECT_URIS,
        post_logout_redirect_uris: POST_LOGOUT_URIS,
      },
      {
        client_id: 'orderflow-mobile',
        application_type: 'native',
        token_endpoint_auth_method: 'none',
        grant_types: ['authorization_code', 'refresh_token'],
        response_types: ['code'],
        // Loopback http redirects of native clients match on any port (RFC 8252 §7.3):
        // oidc-provider 8 does that itself (Client#redirectUriAllowed).
        redirect_uris: ['http://127.0.0.1/callback', 'com.example.orderflow:/callback'],
      },
    ],
    // ID tokens use the access-token alg too, so that any key set the control endpoints leave
    // (always headed by a key of that alg) can sign both.
    clientDefaults: { id_token_signed_response_alg: ALG },
    claims: {
      acr: null, sid: null, auth_time: null, iss: null,
      openid: ['sub'],
      profile: ['name', 'preferred_username', 'roles'],
      email: ['email'],
    },
    async findAccount(ctx, id) {
      return { accountId: id, claims: async () => claimsOf(id) };
    },
    features: {
      devInteractions: { enabled: true },
      revocation: { enabled: true },
      rpInitiatedLogout: { enabled: true },
      resourceIndicators: {
        enabled: true,
        // Without these two a code exchange lacking `resource` yields an opaque token meant
        // for userinfo; the API needs a JWT with its audience.
        defaultResource: async () => AUDIENCE,
        useGrantedResource: async () => true,
        async getResourceServerInfo(ctx, resourceIndicator) {
          if (resourceIndicator !== AUDIENCE) throw new errors.InvalidTarget();
          return {
            scope: 'openid profile email offline_access',
            audience: AUDIENCE,
            accessTokenTTL: TTL,
            accessTokenFormat: 'jwt',
            jwt: { sign: { alg: ALG } },
          };
        },
      },
    },
    async extraTokenClaims(ctx, token) {
      if (!token.accountId) return undefined;
      const { name, preferred_username, roles } = claimsOf(token.accountId);
      return { name, preferred_username, ...(roles && { roles }) };
    },
    // Default: only with offline_access, which oidc-provider drops unless prompt=consent.
    async issueRefreshToken(ctx, client) {
      return client.grantTypeAllowed('refresh_token');
    },
    // The recipe "skip consent" (recipes/skip_consent.md), extended to top up an existing grant:
    // every first-party request is granted what it asks for, so no consent page ever shows.
    async loadExistingGrant(ctx) {
      const grantId = ctx.oidc.result?.consent?.grantId
        || ctx.oidc.session.grantIdFor(ctx.oidc.client.clientId);
      const grant = (grantId && await ctx.oidc.provider.Grant.find(grantId))
        || new ctx.oidc.provider.Grant({
          clientId: ctx.oidc.client.clientId,
          accountId: ctx.oidc.session.accountId,
        });
      grant.addOIDCScope([...ctx.oidc.requestParamOIDCScopes].join(' '));
      grant.addOIDCClaims([...ctx.oidc.requestParamClaims]);
      for (const [indicator, server] of Object.entries(ctx.oidc.resourceServers)) {
        const wanted = [...ctx.oidc.requestParamScopes].filter((s) => server.scopes.has(s));
        grant.addResourceScope(indicator, wanted.join(' '));
      }
      await grant.save();
      return grant;
    },
    // Default (false for every cross-origin request) would block the SPA served on another
    // loopback port from the token, userinfo and revocation endpoints. Discovery and JWKS are
    // open to any origin already. Loopback only, since this fixture listens on 127.0.0.1 only.
    clientBasedCORS(ctx, origin) {
      try {
        const { protocol, hostname } = new URL(origin);
        return protocol === 'http:' && LOOPBACK.has(hostname);
      } catch {
        return false;
      }
    },
    cookies: {
      keys: COOKIE_KEYS,
      // SameSite=None without Secure is refused by browsers over plain http; the SPA and the
      // provider are on the same site (127.0.0.1), so Lax is enough.
      long: { httpOnly: true, sameSite: 'lax' },
      short: { httpOnly: true, sameSite: 'lax' },
    },
    interactions: { policy },
    // PKCE: left at 8.8.1's defaults, S256 only and required of every client.
    // Explicit TTLs: the defaults log a notice each, and a test run never needs days.
    ttl: {
      AccessToken: (ctx, token) => token.resourceServer?.accessTokenTTL || TTL,
      AuthorizationCode: 60,
      ClientCredentials: TTL,
      DeviceCode: 10 * 60,
      BackchannelAuthenticationRequest: 10 * 60,
      Grant: HOUR,
      IdToken: HOUR,
      Interaction: HOUR,
      RefreshToken: 24 * HOUR,
      Session: HOUR,
    },
  };
}

function buildProvider() {
  const provider = new Provider(ISSUER, configuration());
  // The built-in pages @import a Google font; a headless browser in a test must not try to
  // reach the internet, so the import is cut from every HTML page.
  provider.use(async (ctx, next) => {
    await next();
    if (typeof ctx.body === 'string' && ctx.response.is('html')) {
      ctx.body = ctx.body.replace(/@import url\(https:[^)]*\);?/g, '');
    }
  });
  provider.on('server_error', (ctx, err) => console.error('oidc-provider server_error:', err));
  return provider;
}

// ---- HTTP -------------------------------------------------------------------------------------

function answer(res, status, body) {
  res.writeHead(status, { 'content-type': 'application/json', 'cache-control': 'no-store' });
  res.end(JSON.stringify(body));
}

// A Provider's keys are fixed when it is constructed, so changing keys means a new Provider.
// Its in-memory store is module-wide, and the cookie keys are shared, so sessions and tokens
// usually survive the swap; tests must not rely on that.
function swapKeys(newKeys) {
  keys = newKeys;
  handler = buildProvider().callback();
}

const control = {
  // New key first (so it signs from now on), old keys still published.
  '/__fixture/rotate': () => swapKeys([newKey(ALG), ...keys]),
  // Drops every key except the first (the newest rotated one, or the --access-token-alg key).
  '/__fixture/retire': () => swapKeys(keys.slice(0, 1)),
};

// How often the keys and the discovery document were read: a test checks that a flood of
// tokens naming unknown keys does not turn into a flood of fetches.
const reads = { jwks: 0, discovery: 0 };

let ISSUER;
let handler = (req, res) => answer(res, 503, { error: 'starting' });

const server = http.createServer((req, res) => {
  const path = req.url.split('?')[0];
  if (path === '/__fixture/stats') return answer(res, 200, reads);
  if (req.method === 'GET' && path === '/jwks') reads.jwks += 1;
  if (req.method === 'GET' && path === '/.well-known/openid-configuration') reads.discovery += 1;
  if (Object.hasOwn(control, path)) {
    if (req.method !== 'POST') return answer(res, 405, { error: 'use POST' });
    control[path]();
    return answer(res, 200, describe());
  }
  return handler(req, res);
});

server.listen(PORT, '127.0.0.1', () => {
  // The issuer needs the real port, known only once listening.
  ISSUER = `http://127.0.0.1:${server.address().port}`;
  handler = buildProvider().callback();
  process.stdout.write(`${JSON.stringify(describe())}\n`);
});
server.on('error', (err) => fail(err.message));

// ---- shutdown ---------------------------------------------------------------------------------

// A test that dies closes our stdin (it never writes to it); that must not leave node running.
function shutdown(why) {
  console.error(`provider.mjs: exiting (${why})`);
  process.exit(0);
}
process.on('SIGTERM', () => shutdown('SIGTERM'));
process.on('SIGINT', () => shutdown('SIGINT'));
if (!args['ignore-stdin']) {
  process.stdin.on('end', () => shutdown('stdin closed'));
  process.stdin.on('error', () => shutdown('stdin error'));
  process.stdin.resume();
}
