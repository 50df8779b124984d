//! Bearer tokens: HS256 JWTs checked for signature, expiry, issuer and audience.
//!
//! Only HS256 is accepted (the header's `alg` must say so, which closes the `none` and
//! algorithm-confusion holes). In development the key is generated once per data directory and
//! `POST /api/dev/token` signs tokens for anyone; in production the key, issuer and audience
//! come from configuration and there is no development login.

use std::path::Path;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use chrono::Utc;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use uuid::Uuid;

use super::AppState;
use super::error::ApiError;

pub const DEV_ISSUER: &str = "orderflow-dev";
pub const DEV_AUDIENCE: &str = "orderflow";
const DEV_TOKEN_HOURS: i64 = 12;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Places orders and sees only their own.
    Customer,
    /// Ships, delivers, restocks; sees every order.
    Operator,
    /// Reads every order and its history.
    Analyst,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    /// The customer (or staff member) id.
    pub sub: Uuid,
    pub role: Role,
    #[serde(default)]
    pub name: String,
    pub iss: String,
    pub aud: String,
    pub exp: i64,
    pub iat: i64,
}

/// The authenticated caller of a request.
#[derive(Debug, Clone)]
pub struct Caller {
    pub id: Uuid,
    pub role: Role,
}

impl Caller {
    /// Staff see every order; customers only their own.
    pub fn may_see(&self, owner: Uuid) -> bool {
        self.role != Role::Customer || self.id == owner
    }

    pub fn actor(&self) -> String {
        let kind = match self.role {
            Role::Customer => "customer",
            Role::Operator => "operator",
            Role::Analyst => "analyst",
        };
        format!("{kind}:{}", self.id)
    }

    pub fn require(&self, roles: &[Role]) -> Result<(), ApiError> {
        if roles.contains(&self.role) {
            Ok(())
        } else {
            Err(ApiError::Forbidden)
        }
    }
}

/// Signs and verifies tokens with one key, for one issuer and audience.
#[derive(Clone)]
pub struct TokenKeys {
    key: Vec<u8>,
    issuer: String,
    audience: String,
}

impl TokenKeys {
    pub fn new(key: Vec<u8>, issuer: &str, audience: &str) -> Self {
        Self {
            key,
            issuer: issuer.to_owned(),
            audience: audience.to_owned(),
        }
    }

    /// The development key of a data directory, created on first use.
    pub fn development(data_dir: &Path) -> std::io::Result<Self> {
        let path = data_dir.join("dev-signing-key");
        let key = match std::fs::read_to_string(&path) {
            Ok(hex) if hex.trim().len() >= 64 => hex.trim().to_owned(),
            _ => {
                let fresh = format!("{}{}", Uuid::new_v4().simple(), Uuid::new_v4().simple());
                std::fs::write(&path, &fresh)?;
                fresh
            }
        };
        Ok(Self::new(key.into_bytes(), DEV_ISSUER, DEV_AUDIENCE))
    }

    pub fn issue(&self, sub: Uuid, role: Role, name: &str) -> String {
        let now = Utc::now().timestamp();
        let claims = Claims {
            sub,
            role,
            name: name.to_owned(),
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            exp: now + DEV_TOKEN_HOURS * 3600,
            iat: now,
        };
        let header = B64.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
        let body = B64.encode(serde_json::to_vec(&claims).unwrap_or_default());
        let signing_input = format!("{header}.{body}");
        let signature = B64.encode(self.mac(signing_input.as_bytes()).finalize().into_bytes());
        format!("{signing_input}.{signature}")
    }

    pub fn verify(&self, token: &str) -> Result<Claims, ApiError> {
        let bad = |why: &str| ApiError::Unauthenticated(format!("invalid token: {why}"));
        let mut parts = token.split('.');
        let (Some(header_b64), Some(body), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(bad("not a JWT"));
        };
        let header: serde_json::Value = B64
            .decode(header_b64)
            .ok()
            .and_then(|h| serde_json::from_slice(&h).ok())
            .ok_or_else(|| bad("unreadable header"))?;
        if header.get("alg").and_then(|a| a.as_str()) != Some("HS256") {
            return Err(bad("only HS256 is accepted"));
        }
        let signature = B64
            .decode(signature)
            .map_err(|_| bad("unreadable signature"))?;
        self.mac(format!("{header_b64}.{body}").as_bytes())
            .verify_slice(&signature)
            .map_err(|_| bad("signature does not match"))?;
        let claims: Claims = B64
            .decode(body)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or_else(|| bad("unreadable claims"))?;
        if claims.exp <= Utc::now().timestamp() {
            return Err(bad("expired"));
        }
        if claims.iss != self.issuer || claims.aud != self.audience {
            return Err(bad("wrong issuer or audience"));
        }
        Ok(claims)
    }

    fn mac(&self, data: &[u8]) -> Hmac<Sha256> {
        // HMAC takes a key of any length, so this cannot fail.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.key)
            .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
        mac.update(data);
        mac
    }
}

/// The one endpoint browsers reach with `EventSource`, which cannot send headers: it may carry
/// the token as `?access_token=`.
const QUERY_TOKEN_PATH: &str = "/api/notifications/stream";

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let header = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().split_once(' '))
            // The scheme is case-insensitive (RFC 9110 §11.1).
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim().to_owned());
        let query = (parts.uri.path() == QUERY_TOKEN_PATH)
            .then(|| {
                parts.uri.query().and_then(|q| {
                    q.split('&')
                        .find_map(|pair| pair.strip_prefix("access_token="))
                        .map(str::to_owned)
                })
            })
            .flatten();
        let token = header.or(query).ok_or_else(|| {
            ApiError::Unauthenticated("send Authorization: Bearer <token>".into())
        })?;
        let claims = state.keys.verify(token.trim())?;
        Ok(Caller {
            id: claims.sub,
            role: claims.role,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> TokenKeys {
        TokenKeys::new(b"k".repeat(32), DEV_ISSUER, DEV_AUDIENCE)
    }

    #[test]
    fn an_issued_token_verifies() {
        let id = Uuid::new_v4();
        let claims = keys()
            .verify(&keys().issue(id, Role::Operator, "op"))
            .unwrap();
        assert_eq!((claims.sub, claims.role), (id, Role::Operator));
    }

    #[test]
    fn a_token_signed_with_another_key_is_refused() {
        let other = TokenKeys::new(b"x".repeat(32), DEV_ISSUER, DEV_AUDIENCE);
        let token = other.issue(Uuid::new_v4(), Role::Customer, "");
        assert!(keys().verify(&token).is_err());
    }

    #[test]
    fn a_tampered_token_is_refused() {
        let token = keys().issue(Uuid::new_v4(), Role::Customer, "");
        let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
        let mut claims: serde_json::Value =
            serde_json::from_slice(&B64.decode(&parts[1]).unwrap()).unwrap();
        claims["role"] = "operator".into();
        parts[1] = B64.encode(serde_json::to_vec(&claims).unwrap());
        assert!(keys().verify(&parts.join(".")).is_err());
    }

    #[test]
    fn alg_none_is_refused() {
        let token = keys().issue(Uuid::new_v4(), Role::Customer, "");
        let body = token.split('.').nth(1).unwrap();
        let header = B64.encode(br#"{"alg":"none"}"#);
        assert!(keys().verify(&format!("{header}.{body}.")).is_err());
    }

    #[test]
    fn another_audience_is_refused() {
        let other = TokenKeys::new(b"k".repeat(32), DEV_ISSUER, "someone-else");
        let token = other.issue(Uuid::new_v4(), Role::Customer, "");
        assert!(keys().verify(&token).is_err());
    }
}
