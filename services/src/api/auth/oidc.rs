//! Access tokens from an OpenID Connect provider (Entra ID, Auth0, Okta, Keycloak, ...).
//!
//! The provider is found by discovery (`{issuer}/.well-known/openid-configuration`), and its
//! signing keys come from the `jwks_uri` it names. A token is checked against the key its
//! `kid` names, with the algorithm that key allows: an RSA key verifies RS256 or PS256 (only
//! the one its `alg` says, when it says one), a P-256 key ES256, and nothing else: a provider's
//! symmetric key is never used, so a token cannot pass the public key off as an HMAC secret,
//! and `alg: none` never parses. `iss`, `aud` (a string or an array) and `exp` must be there and
//! right; `nbf` is checked when present; both times allow [`LEEWAY_SECONDS`].
//!
//! Keys are cached. They are fetched again when a token names a `kid` the cache lacks (a key
//! rotation needs no restart), at most once per [`OidcSettings::refresh_min_interval`] so a
//! flood of made-up `kid`s cannot hammer the provider, and in the background once the cache is
//! older than [`OidcSettings::max_key_age`]. While the provider is unreachable the cached keys
//! keep working; the failure is logged once, and its recovery once.
//!
//! Claims map to orderflow's caller: the customer is one claim (`sub` by default; Entra ID
//! users may prefer `oid`) turned into a UUID v5 of the issuer and that value, so it is stable
//! and no provider can name another provider's customer; roles come from a claim (`roles` by
//! default, as Entra ID's app roles arrive; `groups`, or a dotted path like
//! `realm_access.roles` for Keycloak) through a map from the provider's names to
//! `customer`/`operator`/`analyst`. No role claim, or none that maps, means customer.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use reqwest::Url;
use serde_json::{Map, Value};
use uuid::Uuid;

use super::{AuthError, Caller, LEEWAY_SECONDS, Role, Roles};

/// The algorithms a provider's token may use.
const ALGORITHMS: [Algorithm; 3] = [Algorithm::RS256, Algorithm::PS256, Algorithm::ES256];
/// Discovery documents and key sets are small; a provider that sends more is misbehaving.
const MAX_DOCUMENT_BYTES: usize = 1 << 20;
/// Customers named by an OpenID provider: UUID v5 of `issuer`, a newline, and the claim.
const OIDC_CUSTOMER_NAMESPACE: Uuid = Uuid::from_u128(0x6f72_6465_7266_6c6f_772d_6f69_6463_0001);

/// What `--oidc-*` configured.
#[derive(Debug, Clone)]
pub struct OidcSettings {
    /// Exactly as the provider writes it in `iss` (Auth0's ends in `/`, Entra ID's does not).
    pub issuer: String,
    /// Accepted `aud` values: a token must name at least one.
    pub audiences: Vec<String>,
    /// The claim that names the customer.
    pub customer_claim: String,
    /// The claim that carries roles: a string or an array of strings.
    pub roles_claim: String,
    /// The provider's role names to orderflow's roles; empty means the names `customer`,
    /// `operator` and `analyst` themselves.
    pub role_map: Vec<(String, Role)>,
    /// The least time between two fetches of the keys that a token's unknown `kid` causes.
    pub refresh_min_interval: Duration,
    /// Keys older than this are fetched again in the background.
    pub max_key_age: Duration,
}

impl OidcSettings {
    pub fn new(issuer: &str, audiences: Vec<String>) -> Self {
        Self {
            issuer: issuer.to_owned(),
            audiences,
            customer_claim: "sub".into(),
            roles_claim: "roles".into(),
            role_map: Vec::new(),
            refresh_min_interval: Duration::from_secs(5),
            max_key_age: Duration::from_secs(3600),
        }
    }

    /// The URL discovery reads; refuses plain `http://` except on a loopback host.
    pub fn discovery_url(&self) -> Result<Url, String> {
        let issuer = secure_url(&self.issuer, "--oidc-issuer")?;
        let base = issuer.as_str().trim_end_matches('/');
        Url::parse(&format!("{base}/.well-known/openid-configuration")).map_err(|e| e.to_string())
    }
}

/// `https://`, or `http://` on 127.0.0.0/8, `[::1]` or `localhost` (tests, a provider on the
/// same machine): a token key fetched in the clear could be swapped by anyone on the path.
pub fn secure_url(raw: &str, what: &str) -> Result<Url, String> {
    let url = Url::parse(raw).map_err(|e| format!("{what} {raw:?} is not a URL: {e}"))?;
    let loopback = match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(name)) => name.eq_ignore_ascii_case("localhost"),
        None => false,
    };
    match url.scheme() {
        "https" => Ok(url),
        "http" if loopback => Ok(url),
        "http" => Err(format!(
            "{what} {raw:?} must use https:// (http:// only for a loopback host)"
        )),
        other => Err(format!("{what} {raw:?}: unsupported scheme {other:?}")),
    }
}

/// One verifying key and the algorithms it allows.
struct Key {
    decoding: DecodingKey,
    algorithms: Vec<Algorithm>,
}

#[derive(Default)]
struct KeySet {
    by_kid: HashMap<String, Arc<Key>>,
    /// Keys published without a `kid`: usable only when the set holds exactly one key.
    unnamed: Vec<Arc<Key>>,
    fetched_at: Option<Instant>,
}

impl KeySet {
    fn find(&self, kid: Option<&str>) -> Option<Arc<Key>> {
        match kid {
            Some(kid) => self.by_kid.get(kid).cloned(),
            None if self.by_kid.len() + self.unnamed.len() == 1 => self
                .unnamed
                .first()
                .or_else(|| self.by_kid.values().next())
                .cloned(),
            None => None,
        }
    }

    fn len(&self) -> usize {
        self.by_kid.len() + self.unnamed.len()
    }
}

#[derive(Default)]
struct RefreshState {
    last_attempt: Option<Instant>,
    jwks_uri: Option<Url>,
    /// The last fetch failed: the next failure is not logged again.
    failing: bool,
}

pub struct OidcVerifier {
    settings: OidcSettings,
    discovery: Url,
    validations: Vec<(Algorithm, Validation)>,
    claims: ClaimMap,
    http: reqwest::Client,
    keys: RwLock<Arc<KeySet>>,
    refresh: tokio::sync::Mutex<RefreshState>,
}

impl OidcVerifier {
    /// Checks the settings and fetches the provider's keys once; a provider that does not
    /// answer yet is logged, and asked again when the first token arrives.
    pub async fn start(settings: OidcSettings) -> Result<Arc<Self>, String> {
        let discovery = settings.discovery_url()?;
        if settings.audiences.iter().all(|a| a.trim().is_empty()) {
            return Err("--oidc-audience is required with --oidc-issuer: the `aud` your provider puts in access tokens for this API".into());
        }
        let validations = ALGORITHMS
            .into_iter()
            .map(|alg| {
                let mut validation = Validation::new(alg);
                validation.set_issuer(&[&settings.issuer]);
                validation.set_audience(&settings.audiences);
                validation.set_required_spec_claims(&["exp", "iss", "aud"]);
                validation.validate_nbf = true;
                validation.leeway = LEEWAY_SECONDS;
                (alg, validation)
            })
            .collect();
        let claims = ClaimMap::new(&settings);
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(10))
            // A redirect could lead off https; providers serve these documents directly.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| format!("building the HTTP client for the identity provider: {e}"))?;
        let verifier = Arc::new(Self {
            settings,
            discovery,
            validations,
            claims,
            http,
            keys: RwLock::new(Arc::default()),
            refresh: tokio::sync::Mutex::default(),
        });
        verifier.refresh_keys().await;
        Ok(verifier)
    }

    pub fn issuer(&self) -> &str {
        &self.settings.issuer
    }

    /// Fetches the discovery document and the keys now, for `orderflow doctor`: how many
    /// signing keys the provider lists, or what is wrong.
    pub async fn check(&self) -> Result<usize, String> {
        self.fetch_keys(&mut RefreshState::default())
            .await
            .map(|keys| keys.len())
    }

    pub async fn verify(self: &Arc<Self>, token: &str) -> Result<Caller, AuthError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| AuthError::Malformed)?;
        let Some((_, validation)) = self.validations.iter().find(|(a, _)| *a == header.alg) else {
            return Err(AuthError::Algorithm);
        };
        let key = match self.find(header.kid.as_deref()) {
            Some(key) => key,
            None => {
                self.refresh_keys().await;
                self.find(header.kid.as_deref()).ok_or_else(|| {
                    if self.current().fetched_at.is_none() {
                        AuthError::ProviderUnavailable
                    } else {
                        AuthError::UnknownKey
                    }
                })?
            }
        };
        if !key.algorithms.contains(&header.alg) {
            return Err(AuthError::Algorithm);
        }
        let data = jsonwebtoken::decode::<Map<String, Value>>(token, &key.decoding, validation)?;
        self.claims.caller(&data.claims)
    }

    fn current(&self) -> Arc<KeySet> {
        self.keys
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// The key for `kid`, starting a background refresh when the cache has grown old.
    fn find(self: &Arc<Self>, kid: Option<&str>) -> Option<Arc<Key>> {
        let keys = self.current();
        if keys
            .fetched_at
            .is_some_and(|at| at.elapsed() > self.settings.max_key_age)
        {
            let verifier = self.clone();
            tokio::spawn(async move { verifier.refresh_keys().await });
        }
        keys.find(kid)
    }

    /// Fetches the keys again unless that was tried within `refresh_min_interval`; callers
    /// that arrive while a fetch runs wait for it and use its result.
    async fn refresh_keys(&self) {
        let mut state = self.refresh.lock().await;
        if state
            .last_attempt
            .is_some_and(|at| at.elapsed() < self.settings.refresh_min_interval)
        {
            return;
        }
        state.last_attempt = Some(Instant::now());
        match self.fetch_keys(&mut state).await {
            Ok(keys) => {
                if state.failing {
                    tracing::info!(issuer = %self.settings.issuer, "the identity provider answers again");
                }
                state.failing = false;
                tracing::debug!(keys = keys.len(), "identity provider keys fetched");
                *self
                    .keys
                    .write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(keys);
            }
            Err(error) => {
                // The next discovery may name another key URL.
                state.jwks_uri = None;
                if !state.failing {
                    tracing::warn!(issuer = %self.settings.issuer, %error,
                        "cannot fetch the identity provider's keys; the cached keys keep working, \
                         and this is logged again only once it recovers");
                }
                state.failing = true;
            }
        }
    }

    async fn fetch_keys(&self, state: &mut RefreshState) -> Result<KeySet, String> {
        let jwks_uri = match &state.jwks_uri {
            Some(uri) => uri.clone(),
            None => {
                let uri = self.discover().await?;
                state.jwks_uri = Some(uri.clone());
                uri
            }
        };
        let jwks = self.get_json(&jwks_uri).await?;
        let listed = jwks
            .get("keys")
            .and_then(Value::as_array)
            .ok_or_else(|| format!("{jwks_uri} has no `keys` array"))?;
        let mut keys = KeySet {
            fetched_at: Some(Instant::now()),
            ..KeySet::default()
        };
        for raw in listed {
            // One key of a kind we do not use (an encryption key, Ed25519) must not hide the rest.
            let Ok(jwk) = serde_json::from_value::<Jwk>(raw.clone()) else {
                continue;
            };
            let Some(key) = verifying_key(&jwk) else {
                continue;
            };
            match jwk.common.key_id {
                Some(kid) => {
                    keys.by_kid.insert(kid, Arc::new(key));
                }
                None => keys.unnamed.push(Arc::new(key)),
            }
        }
        if keys.len() == 0 {
            return Err(format!(
                "{jwks_uri} lists no RS256, PS256 or ES256 signing key"
            ));
        }
        Ok(keys)
    }

    /// Reads the discovery document: its `issuer` must be the configured one exactly (OpenID
    /// Connect Discovery §4.3), and it names the key set.
    async fn discover(&self) -> Result<Url, String> {
        let document = self.get_json(&self.discovery).await?;
        let issuer = document.get("issuer").and_then(Value::as_str);
        if issuer != Some(self.settings.issuer.as_str()) {
            return Err(format!(
                "{} says the issuer is {issuer:?}, not {:?}: set --oidc-issuer to exactly what the provider says",
                self.discovery, self.settings.issuer
            ));
        }
        let jwks_uri = document
            .get("jwks_uri")
            .and_then(Value::as_str)
            .ok_or_else(|| format!("{} names no jwks_uri", self.discovery))?;
        secure_url(jwks_uri, "the provider's jwks_uri")
    }

    async fn get_json(&self, url: &Url) -> Result<Value, String> {
        let mut response = self
            .http
            .get(url.clone())
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| format!("GET {url}: {e}"))?;
        if !response.status().is_success() {
            return Err(format!("GET {url}: {}", response.status()));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| format!("GET {url}: {e}"))?
        {
            body.extend_from_slice(&chunk);
            if body.len() > MAX_DOCUMENT_BYTES {
                return Err(format!("GET {url}: more than {MAX_DOCUMENT_BYTES} bytes"));
            }
        }
        serde_json::from_slice(&body).map_err(|e| format!("GET {url}: not JSON: {e}"))
    }
}

/// How a token's claims name the caller.
struct ClaimMap {
    issuer: String,
    customer_claim: String,
    roles_claim: String,
    role_map: HashMap<String, Role>,
}

impl ClaimMap {
    fn new(settings: &OidcSettings) -> Self {
        let role_map = if settings.role_map.is_empty() {
            Role::ALL
                .iter()
                .map(|r| (r.name().to_owned(), *r))
                .collect()
        } else {
            settings.role_map.iter().cloned().collect()
        };
        Self {
            issuer: settings.issuer.clone(),
            customer_claim: settings.customer_claim.clone(),
            roles_claim: settings.roles_claim.clone(),
            role_map,
        }
    }

    /// The caller a token's claims name.
    fn caller(&self, claims: &Map<String, Value>) -> Result<Caller, AuthError> {
        let claim = &self.customer_claim;
        let subject = match lookup(claims, claim) {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Number(n)) => n.to_string(),
            _ => {
                return Err(AuthError::Claims(format!(
                    "no `{claim}` claim to name the customer"
                )));
            }
        };
        if subject.is_empty() || subject.len() > 255 {
            return Err(AuthError::Claims(format!(
                "the `{claim}` claim must be 1-255 characters"
            )));
        }
        let id = Uuid::new_v5(
            &OIDC_CUSTOMER_NAMESPACE,
            format!("{}\n{subject}", self.issuer).as_bytes(),
        );
        let names: Vec<&str> = match lookup(claims, &self.roles_claim) {
            Some(Value::String(one)) => vec![one.as_str()],
            Some(Value::Array(many)) => many.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        };
        let mut roles = Roles::default();
        for name in names {
            if let Some(role) = self.role_map.get(name) {
                roles = roles.with(*role);
            }
        }
        if roles.is_empty() {
            roles = Roles::of(Role::Customer);
        }
        let expires_at = claims.get("exp").and_then(Value::as_i64).unwrap_or(0);
        Ok(Caller {
            id,
            roles,
            expires_at,
        })
    }
}

/// A claim by its name, or, when no claim has that name, by a dotted path into nested
/// objects (`realm_access.roles`). Names with dots, like Auth0's URL-named claims, match first.
fn lookup<'a>(claims: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    claims.get(name).or_else(|| {
        let mut parts = name.split('.');
        let first = claims.get(parts.next()?)?;
        parts.try_fold(first, |value, part| value.get(part))
    })
}

/// The key a JWK describes, if it is a signing key orderflow accepts.
fn verifying_key(jwk: &Jwk) -> Option<Key> {
    if jwk
        .common
        .public_key_use
        .as_ref()
        .is_some_and(|u| *u != PublicKeyUse::Signature)
    {
        return None;
    }
    let named = jwk.common.key_algorithm;
    let (decoding, algorithms) = match &jwk.algorithm {
        AlgorithmParameters::RSA(rsa) => {
            let algorithms = match named {
                None => vec![Algorithm::RS256, Algorithm::PS256],
                Some(KeyAlgorithm::RS256) => vec![Algorithm::RS256],
                Some(KeyAlgorithm::PS256) => vec![Algorithm::PS256],
                Some(_) => return None,
            };
            (
                DecodingKey::from_rsa_components(&rsa.n, &rsa.e).ok()?,
                algorithms,
            )
        }
        AlgorithmParameters::EllipticCurve(ec) if ec.curve == EllipticCurve::P256 => {
            if named.is_some_and(|a| a != KeyAlgorithm::ES256) {
                return None;
            }
            (
                DecodingKey::from_ec_components(&ec.x, &ec.y).ok()?,
                vec![Algorithm::ES256],
            )
        }
        // Symmetric keys, other curves, Ed25519: never.
        _ => return None,
    };
    Some(Key {
        decoding,
        algorithms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_http_issuers_are_refused_except_on_loopback() {
        assert!(secure_url("https://login.example.com/t/v2.0", "x").is_ok());
        assert!(secure_url("http://127.0.0.1:4000", "x").is_ok());
        assert!(secure_url("http://[::1]:4000", "x").is_ok());
        assert!(secure_url("http://localhost:4000", "x").is_ok());
        let error = secure_url("http://login.example.com", "--oidc-issuer").unwrap_err();
        assert!(error.contains("https://"), "{error}");
        assert!(secure_url("http://127.0.0.1.example.com", "x").is_err());
        assert!(secure_url("ftp://127.0.0.1", "x").is_err());
    }

    #[test]
    fn discovery_sits_under_the_issuer_with_or_without_its_slash() {
        let auth0 = OidcSettings::new("https://shop.eu.auth0.com/", vec!["api".into()]);
        assert_eq!(
            auth0.discovery_url().unwrap().as_str(),
            "https://shop.eu.auth0.com/.well-known/openid-configuration"
        );
        let entra = OidcSettings::new(
            "https://login.microsoftonline.com/tenant/v2.0",
            vec!["api".into()],
        );
        assert_eq!(
            entra.discovery_url().unwrap().as_str(),
            "https://login.microsoftonline.com/tenant/v2.0/.well-known/openid-configuration"
        );
    }

    #[test]
    fn claims_are_found_by_name_first_then_by_dotted_path() {
        let claims: Map<String, Value> = serde_json::from_value(serde_json::json!({
            "realm_access": {"roles": ["operator"]},
            "https://shop.example/roles": ["analyst"],
        }))
        .unwrap();
        assert_eq!(
            lookup(&claims, "realm_access.roles"),
            Some(&serde_json::json!(["operator"]))
        );
        assert_eq!(
            lookup(&claims, "https://shop.example/roles"),
            Some(&serde_json::json!(["analyst"]))
        );
        assert_eq!(lookup(&claims, "realm_access.groups"), None);
    }

    fn claims(value: Value) -> Map<String, Value> {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn the_customer_is_a_stable_uuid_of_the_issuer_and_the_claim() {
        let mut settings = OidcSettings::new("https://id.example", vec!["api".into()]);
        let map = ClaimMap::new(&settings);
        let alice = map
            .caller(&claims(serde_json::json!({"sub": "alice"})))
            .unwrap();
        let again = map
            .caller(&claims(serde_json::json!({"sub": "alice"})))
            .unwrap();
        let bob = map
            .caller(&claims(serde_json::json!({"sub": "bob"})))
            .unwrap();
        assert_eq!(alice.id, again.id);
        assert_ne!(alice.id, bob.id);
        settings.issuer = "https://other.example".into();
        let elsewhere = ClaimMap::new(&settings)
            .caller(&claims(serde_json::json!({"sub": "alice"})))
            .unwrap();
        assert_ne!(
            alice.id, elsewhere.id,
            "another provider's alice is someone else"
        );
        assert!(matches!(
            map.caller(&claims(serde_json::json!({"oid": "x"}))),
            Err(AuthError::Claims(_))
        ));
    }

    #[test]
    fn roles_map_from_the_configured_claim_and_none_means_customer() {
        let mut settings = OidcSettings::new("https://id.example", vec!["api".into()]);
        settings.customer_claim = "oid".into();
        settings.roles_claim = "realm_access.roles".into();
        settings.role_map = vec![
            ("Orders.Operator".into(), Role::Operator),
            ("Orders.Analyst".into(), Role::Analyst),
        ];
        let map = ClaimMap::new(&settings);
        let caller = |value: Value| map.caller(&claims(value)).unwrap();
        let both = caller(serde_json::json!({"oid": "1", "exp": 99,
            "realm_access": {"roles": ["Orders.Analyst", "Orders.Operator", "Other"]}}));
        assert!(both.has(Role::Operator) && both.has(Role::Analyst) && !both.has(Role::Customer));
        assert_eq!(both.expires_at, 99);
        let one =
            caller(serde_json::json!({"oid": "1", "realm_access": {"roles": "Orders.Analyst"}}));
        assert_eq!(one.roles, Roles::of(Role::Analyst));
        // Unmapped names grant nothing, not even the names orderflow uses itself.
        let unmapped =
            caller(serde_json::json!({"oid": "1", "realm_access": {"roles": ["operator"]}}));
        assert_eq!(unmapped.roles, Roles::of(Role::Customer));
        assert_eq!(
            caller(serde_json::json!({"oid": "1"})).roles,
            Roles::of(Role::Customer)
        );
        let default = ClaimMap::new(&OidcSettings::new("https://id.example", vec!["api".into()]));
        let named = default
            .caller(&claims(
                serde_json::json!({"sub": "s", "roles": ["analyst"]}),
            ))
            .unwrap();
        assert_eq!(named.roles, Roles::of(Role::Analyst));
    }

    #[test]
    fn only_rsa_and_p256_signing_keys_are_used() {
        let key = |value: Value| verifying_key(&serde_json::from_value(value).unwrap());
        let n = "sXchDaQebHnPiGvyDOAT4saGEUetSyo9MKLOoWFsueri23bOdgWp4Dy1WlUzewbgBHod5pcM9H95GQRV3JDXboIRROSBigeC5yjU1hGzHHyXss8UDprecbAYxknTcQkhslANGRUZmdTOQ5qTRsLAt6BTYuyvVRdhS8exSZEy_c4gs_7svlJJQ4H9_NxsiIoLwAEk7-Q3UXERGYw_75IDrGA84-lA_-Ct4eTlXHBIY2EaV7t7LjJaynVJCpkv4LKjTTAumiGUIuQhrNhZLuF_RJLqHpM2kgWFLU7-VTdL1VbC2tejvcI2BlMkEpk1BzBZI0KQB0GaDWFLN-aEAw3vRw";
        let rsa = key(serde_json::json!({"kty": "RSA", "kid": "r", "n": n, "e": "AQAB"})).unwrap();
        assert_eq!(rsa.algorithms, [Algorithm::RS256, Algorithm::PS256]);
        let ps =
            key(serde_json::json!({"kty": "RSA", "alg": "PS256", "n": n, "e": "AQAB"})).unwrap();
        assert_eq!(ps.algorithms, [Algorithm::PS256]);
        assert!(
            key(serde_json::json!({"kty": "RSA", "use": "enc", "n": n, "e": "AQAB"})).is_none()
        );
        assert!(
            key(serde_json::json!({"kty": "RSA", "alg": "RS512", "n": n, "e": "AQAB"})).is_none()
        );
        assert!(key(serde_json::json!({"kty": "oct", "k": "c2VjcmV0"})).is_none());
    }
}
