//! A real OpenID provider for the tests: the npm package `oidc-provider`, run by the fixture in
//! `tests/oidc/` (see its README), and the calls a client makes to it.
//!
//! [`Provider::start`] installs the fixture's packages on first use (`npm ci`, from its lock
//! file), starts it on a free port and reads its ready line: the issuer and every signing key,
//! private part included, so a test can also forge tokens the provider's keys sign but the
//! provider never would (another audience, an expired one). [`Provider::sign_in`] signs a user
//! in over HTTP the way a native app does: authorization code with PKCE, the provider's own
//! login form, the code exchanged at the token endpoint.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::{StatusCode, Url};
use serde::Deserialize;
use serde_json::Value;
use sha2::{Digest, Sha256};
use uuid::Uuid;

/// The web UI's client in the fixture; its redirect URIs are the fixture's arguments.
pub const WEB_CLIENT: &str = "orderflow-web";
/// The audience (and resource) the fixture's access tokens name unless told otherwise.
pub const AUDIENCE: &str = "api://orderflow";
/// The role map that turns the fixture's role names into orderflow's.
pub const ROLE_MAP: &str = "Orders.Operator=operator,Orders.Analyst=analyst";
/// Where the HTTP sign-in says it goes back to; never visited.
pub const NATIVE_REDIRECT: &str = "http://127.0.0.1:9/callback";
/// How long the fixture may take to start (node loads oidc-provider, makes RSA keys).
const START_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Deserialize)]
pub struct ProviderKey {
    pub kid: String,
    pub alg: String,
    pub private_pem: String,
    pub public_pem: String,
}

#[derive(Debug, Deserialize)]
struct Described {
    issuer: String,
    keys: Vec<ProviderKey>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Tokens {
    pub access_token: String,
    pub id_token: String,
    pub refresh_token: Option<String>,
    pub expires_in: u64,
}

pub struct Provider {
    pub issuer: String,
    pub keys: Vec<ProviderKey>,
    child: Child,
    /// Held open: the fixture exits when its standard input closes, so it dies with the test.
    _stdin: ChildStdin,
}

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("oidc")
}

/// `npm ci` once per test binary, when the packages are not there yet.
fn install() {
    static INSTALLED: OnceLock<()> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        let dir = fixture_dir();
        if dir.join("node_modules/oidc-provider/package.json").exists() {
            return;
        }
        let status = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
            .current_dir(&dir)
            .status()
            .expect("npm runs (Node.js 20 and npm are needed for the OpenID provider fixture)");
        assert!(status.success(), "npm ci in {} failed", dir.display());
    });
}

impl Provider {
    /// Starts the fixture with `args` (`--redirect-uri`, `--access-token-alg`, ...).
    pub fn start(args: &[&str]) -> Provider {
        install();
        let quiet = std::env::var_os("TEST_LOG").is_none();
        let mut child = Command::new("node")
            .arg(fixture_dir().join("provider.mjs"))
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(if quiet {
                Stdio::null()
            } else {
                Stdio::inherit()
            })
            .spawn()
            .expect("node starts the OpenID provider fixture");
        let stdin = child.stdin.take().expect("piped stdin");
        let stdout = child.stdout.take().expect("piped stdout");
        let (sender, receiver) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = sender.send(line);
        });
        let line = receiver
            .recv_timeout(START_TIMEOUT)
            .expect("the OpenID provider fixture prints its ready line");
        let described: Described = serde_json::from_str(&line).unwrap_or_else(|e| {
            panic!("the fixture's ready line is not its JSON ({e}): {line:?}; set TEST_LOG=1 to see its log")
        });
        Provider {
            issuer: described.issuer,
            keys: described.keys,
            child,
            _stdin: stdin,
        }
    }

    /// The fixture with the web client's redirect going nowhere: for tests that sign in over
    /// HTTP only.
    pub fn start_default() -> Provider {
        Self::start(&["--redirect-uri", NATIVE_REDIRECT])
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.issuer)
    }

    /// Signs `login` in as the web client with PKCE and returns the token endpoint's answer.
    pub async fn sign_in(&self, login: &str) -> Tokens {
        self.sign_in_as(login, WEB_CLIENT, NATIVE_REDIRECT).await
    }

    pub async fn sign_in_as(&self, login: &str, client_id: &str, redirect_uri: &str) -> Tokens {
        let client = reqwest::Client::builder()
            .cookie_store(true)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let verifier = format!("{}{}", Uuid::new_v4().simple(), Uuid::new_v4().simple());
        let challenge = B64.encode(Sha256::digest(verifier.as_bytes()));
        let state = Uuid::new_v4().simple().to_string();
        let mut authorize = Url::parse(&self.url("/auth")).unwrap();
        authorize
            .query_pairs_mut()
            .append_pair("client_id", client_id)
            .append_pair("response_type", "code")
            .append_pair("scope", "openid profile")
            .append_pair("redirect_uri", redirect_uri)
            .append_pair("code_challenge", &challenge)
            .append_pair("code_challenge_method", "S256")
            .append_pair("state", &state)
            .append_pair("nonce", &Uuid::new_v4().simple().to_string());
        // /auth → the interaction (login) page.
        let interaction = self.redirected(&client.get(authorize).send().await.unwrap());
        let page = client.get(interaction.clone()).send().await.unwrap();
        assert_eq!(page.status(), StatusCode::OK, "the login page");
        // The login form posts back to the interaction's own URL.
        let resume = self.redirected(
            &client
                .post(interaction)
                .form(&[("prompt", "login"), ("login", login), ("password", "x")])
                .send()
                .await
                .unwrap(),
        );
        let back = self.redirected(&client.get(resume).send().await.unwrap());
        let query: std::collections::HashMap<_, _> = back.query_pairs().into_owned().collect();
        assert_eq!(query.get("state"), Some(&state), "the state comes back");
        let code = query
            .get("code")
            .unwrap_or_else(|| panic!("no code in {back}"));
        let response = client
            .post(self.url("/token"))
            .form(&[
                ("grant_type", "authorization_code"),
                ("code", code),
                ("redirect_uri", redirect_uri),
                ("client_id", client_id),
                ("code_verifier", &verifier),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "the token endpoint");
        response.json().await.unwrap()
    }

    fn redirected(&self, response: &reqwest::Response) -> Url {
        assert_eq!(
            response.status(),
            StatusCode::SEE_OTHER,
            "a redirect from {}",
            response.url()
        );
        let location = response.headers()["location"].to_str().unwrap();
        response.url().join(location).unwrap()
    }

    /// A new signing key, first from now on; the old ones stay published.
    pub async fn rotate(&mut self) {
        self.control("/__fixture/rotate").await;
    }

    /// Keeps only the newest key.
    pub async fn retire(&mut self) {
        self.control("/__fixture/retire").await;
    }

    async fn control(&mut self, path: &str) {
        let response = reqwest::Client::new()
            .post(self.url(path))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let described: Described = response.json().await.unwrap();
        self.keys = described.keys;
    }

    /// How often the key set and the discovery document have been read.
    pub async fn reads(&self) -> (u64, u64) {
        let stats: Value = reqwest::get(self.url("/__fixture/stats"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        (
            stats["jwks"].as_u64().unwrap(),
            stats["discovery"].as_u64().unwrap(),
        )
    }

    pub fn key(&self, alg: &str) -> &ProviderKey {
        self.keys
            .iter()
            .find(|k| k.alg == alg)
            .unwrap_or_else(|| panic!("the provider has no {alg} key"))
    }

    /// The claims of a token the provider would issue to `sub` now, valid for five minutes.
    pub fn claims(&self, sub: &str) -> Value {
        let now = chrono::Utc::now().timestamp();
        serde_json::json!({
            "iss": self.issuer, "aud": AUDIENCE, "sub": sub,
            "iat": now, "exp": now + 300,
        })
    }

    /// A token signed with the provider's `alg` key, naming `kid`, carrying `claims`.
    pub fn forge(&self, alg: &str, kid: &str, claims: &Value) -> String {
        let key = self.key(alg);
        let algorithm: Algorithm = alg.parse().unwrap();
        let encoding = match algorithm {
            Algorithm::ES256 => EncodingKey::from_ec_pem(key.private_pem.as_bytes()),
            _ => EncodingKey::from_rsa_pem(key.private_pem.as_bytes()),
        }
        .unwrap();
        let mut header = Header::new(algorithm);
        header.kid = Some(kid.to_owned());
        jsonwebtoken::encode(&header, claims, &encoding).unwrap()
    }

    /// Stops the provider, as an outage would.
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Provider {
    fn drop(&mut self) {
        self.stop();
    }
}

/// orderflow's settings for tokens from `issuer` with the fixture's audience, role names and
/// web client; an unknown `kid` may refetch the keys every `refresh` (five seconds in
/// production, less in tests that rotate keys).
pub fn auth_settings(issuer: &str, refresh: Duration) -> services::config::AuthSettings {
    let mut verifier =
        services::api::auth::oidc::OidcSettings::new(issuer, vec![AUDIENCE.to_owned()]);
    verifier.role_map = ROLE_MAP
        .split(',')
        .map(|pair| {
            let (name, role) = pair.split_once('=').unwrap();
            (
                name.to_owned(),
                services::api::auth::Role::parse(role).unwrap(),
            )
        })
        .collect();
    verifier.refresh_min_interval = refresh;
    services::config::AuthSettings::Oidc(services::config::OidcClient {
        verifier,
        client_id: Some(WEB_CLIENT.into()),
        scope: "openid profile".into(),
    })
}

/// A JWT's header and claims, unchecked: for asserting what the provider issued.
pub fn peek(token: &str) -> (Value, Value) {
    let mut parts = token.split('.');
    let mut part = || -> Value {
        serde_json::from_slice(&B64.decode(parts.next().unwrap()).unwrap()).unwrap()
    };
    (part(), part())
}
