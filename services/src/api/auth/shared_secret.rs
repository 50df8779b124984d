//! HS256 tokens signed with a shared secret: the development login's, and the optional
//! shared-secret mode for an identity service that can sign with one (no OpenID provider).
//!
//! The claims are orderflow's own: `sub` is the customer's UUID and `role` one role. Signing
//! and checking are `jsonwebtoken`'s; only HS256 is accepted, whatever the header says, so
//! `alg: none` and a public key passed off as an HMAC secret are refused.

use std::path::Path;

use chrono::Utc;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{AuthError, Caller, Role, Roles};

pub const DEV_ISSUER: &str = "orderflow-dev";
pub const DEV_AUDIENCE: &str = "orderflow";
const DEV_TOKEN_HOURS: i64 = 12;
/// RFC 7518 §3.2: an HS256 key must be at least as long as the hash, 256 bits.
pub const MIN_SECRET_BYTES: usize = 32;

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

/// Signs and checks tokens with one secret, for one issuer and audience.
#[derive(Clone)]
pub struct SharedSecret {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    issuer: String,
    audience: String,
}

impl SharedSecret {
    /// Refuses a secret shorter than [`MIN_SECRET_BYTES`]: a short HMAC key can be guessed
    /// offline from any one token.
    pub fn new(secret: &[u8], issuer: &str, audience: &str) -> Result<Self, String> {
        if secret.len() < MIN_SECRET_BYTES {
            return Err(format!(
                "the JWT secret is {} bytes; it must be at least {MIN_SECRET_BYTES} (generate one with `openssl rand -hex 32`)",
                secret.len()
            ));
        }
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[issuer]);
        validation.set_audience(&[audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.validate_nbf = true;
        validation.leeway = super::LEEWAY_SECONDS;
        Ok(Self {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
            issuer: issuer.to_owned(),
            audience: audience.to_owned(),
        })
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
        Self::new(key.as_bytes(), DEV_ISSUER, DEV_AUDIENCE).map_err(std::io::Error::other)
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
        // Encoding HMAC claims that serialize cannot fail.
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .unwrap_or_default()
    }

    pub fn verify(&self, token: &str) -> Result<Caller, AuthError> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map_err(AuthError::from)?;
        let claims = data.claims;
        Ok(Caller {
            id: claims.sub,
            roles: Roles::of(claims.role),
            expires_at: claims.exp,
        })
    }
}

#[cfg(test)]
mod tests {
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;

    use super::*;

    fn keys() -> SharedSecret {
        SharedSecret::new(&b"k".repeat(32), DEV_ISSUER, DEV_AUDIENCE).unwrap()
    }

    #[test]
    fn an_issued_token_verifies() {
        let id = Uuid::new_v4();
        let caller = keys()
            .verify(&keys().issue(id, Role::Operator, "op"))
            .unwrap();
        assert_eq!((caller.id, caller.role()), (id, Role::Operator));
    }

    #[test]
    fn a_secret_shorter_than_32_bytes_is_refused() {
        let error = SharedSecret::new(&b"k".repeat(31), "i", "a").err().unwrap();
        assert!(error.contains("at least 32"), "{error}");
    }

    #[test]
    fn a_token_signed_with_another_key_is_refused() {
        let other = SharedSecret::new(&b"x".repeat(32), DEV_ISSUER, DEV_AUDIENCE).unwrap();
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
        let other = SharedSecret::new(&b"k".repeat(32), DEV_ISSUER, "someone-else").unwrap();
        let token = other.issue(Uuid::new_v4(), Role::Customer, "");
        assert!(matches!(keys().verify(&token), Err(AuthError::Audience)));
    }
}
