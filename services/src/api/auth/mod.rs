//! Who is calling: bearer tokens checked into a [`Caller`].
//!
//! Three ways a server checks tokens, one per deployment ([`Authenticator`]):
//! - development: HS256 with a key kept in the data directory, and `POST /api/dev/token`
//!   signs tokens for anyone ([`shared_secret`]);
//! - shared secret: HS256 with a configured secret of at least 32 bytes, for an identity
//!   service that signs with one ([`shared_secret`]);
//! - OpenID Connect: tokens from any provider (Entra ID, Auth0, Okta, Keycloak), RS256, PS256
//!   or ES256 with keys discovered from the issuer and kept fresh ([`oidc`]).
//!
//! Signatures and the registered claims are checked by `jsonwebtoken`; this module picks the
//! key and the algorithm, and maps claims to orderflow's customer id and roles.

pub mod oidc;
pub mod shared_secret;

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::Method;
use axum::http::request::Parts;
use jsonwebtoken::errors::ErrorKind;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::AppState;
use super::error::ApiError;
pub use shared_secret::{DEV_AUDIENCE, DEV_ISSUER, SharedSecret};

/// How far `exp` and `nbf` may be off, for clocks that drift between the provider and us.
pub const LEEWAY_SECONDS: u64 = 60;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Places orders and sees only their own.
    Customer,
    /// Ships, delivers, restocks; sees every order.
    Operator,
    /// Reads every order and its history.
    Analyst,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::Customer, Role::Operator, Role::Analyst];

    pub fn name(self) -> &'static str {
        match self {
            Role::Customer => "customer",
            Role::Operator => "operator",
            Role::Analyst => "analyst",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.name() == name)
    }

    fn bit(self) -> u8 {
        1 << self as u8
    }
}

/// The roles one caller has: a provider may grant a staff member several.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Roles(u8);

impl Roles {
    pub fn of(role: Role) -> Self {
        Self(role.bit())
    }

    pub fn with(self, role: Role) -> Self {
        Self(self.0 | role.bit())
    }

    pub fn has(self, role: Role) -> bool {
        self.0 & role.bit() != 0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub fn iter(self) -> impl Iterator<Item = Role> {
        Role::ALL.into_iter().filter(move |r| self.has(*r))
    }
}

/// The authenticated caller of a request.
#[derive(Debug, Clone)]
pub struct Caller {
    pub id: Uuid,
    pub roles: Roles,
    /// When the token stops being valid (Unix seconds); a live stream ends then.
    pub expires_at: i64,
}

impl Caller {
    /// Staff see every order; customers only their own.
    pub fn may_see(&self, owner: Uuid) -> bool {
        self.is_staff() || self.id == owner
    }

    pub fn is_staff(&self) -> bool {
        self.roles.has(Role::Operator) || self.roles.has(Role::Analyst)
    }

    pub fn has(&self, role: Role) -> bool {
        self.roles.has(role)
    }

    /// The role that names the caller in the log (`actor`): the most powerful one held.
    pub fn role(&self) -> Role {
        [Role::Operator, Role::Analyst]
            .into_iter()
            .find(|r| self.roles.has(*r))
            .unwrap_or(Role::Customer)
    }

    pub fn actor(&self) -> String {
        format!("{}:{}", self.role().name(), self.id)
    }

    /// Allowed when the caller holds any of `roles`.
    pub fn require(&self, roles: &[Role]) -> Result<(), ApiError> {
        if roles.iter().any(|r| self.roles.has(*r)) {
            Ok(())
        } else {
            Err(ApiError::Forbidden)
        }
    }
}

/// Why a token was refused; the client sees the sentence in a 401.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("send Authorization: Bearer <token>")]
    Missing,
    #[error("invalid token: not a JWT")]
    Malformed,
    #[error("invalid token: the signature does not match")]
    Signature,
    #[error("invalid token: expired")]
    Expired,
    #[error("invalid token: not valid yet")]
    NotYetValid,
    #[error("invalid token: issued by another issuer")]
    Issuer,
    #[error("invalid token: meant for another audience")]
    Audience,
    #[error("invalid token: its algorithm is not allowed for its key")]
    Algorithm,
    #[error("invalid token: signed with a key the issuer does not publish")]
    UnknownKey,
    #[error("invalid token: {0}")]
    Claims(String),
    /// No key was ever fetched: the provider has not answered since this server started.
    #[error("the identity provider does not answer, so tokens cannot be checked yet")]
    ProviderUnavailable,
}

impl From<jsonwebtoken::errors::Error> for AuthError {
    fn from(error: jsonwebtoken::errors::Error) -> Self {
        match error.kind() {
            ErrorKind::InvalidSignature => Self::Signature,
            ErrorKind::ExpiredSignature => Self::Expired,
            ErrorKind::ImmatureSignature => Self::NotYetValid,
            ErrorKind::InvalidIssuer => Self::Issuer,
            ErrorKind::InvalidAudience => Self::Audience,
            ErrorKind::InvalidAlgorithm
            | ErrorKind::InvalidAlgorithmName
            | ErrorKind::InvalidKeyFormat => Self::Algorithm,
            ErrorKind::MissingRequiredClaim(claim) => Self::Claims(format!("no `{claim}` claim")),
            _ => Self::Malformed,
        }
    }
}

impl From<AuthError> for ApiError {
    fn from(error: AuthError) -> Self {
        match error {
            // Not the client's fault: a 503 says retry, a 401 would send it to sign in again.
            // Busy, not Unavailable: the detail names the provider, and no engine is down.
            AuthError::ProviderUnavailable => ApiError::Busy(error.to_string()),
            _ => ApiError::Unauthenticated(error.to_string()),
        }
    }
}

/// How this server checks tokens.
pub enum Authenticator {
    /// Development auth: the dev login signs tokens with this key.
    Development(SharedSecret),
    SharedSecret(SharedSecret),
    Oidc(Arc<oidc::OidcVerifier>),
}

impl Authenticator {
    pub async fn verify(&self, token: &str) -> Result<Caller, AuthError> {
        match self {
            Self::Development(keys) | Self::SharedSecret(keys) => keys.verify(token),
            Self::Oidc(verifier) => verifier.verify(token).await,
        }
    }

    /// The key the development login signs with; `None` unless development auth is on.
    pub fn development(&self) -> Option<&SharedSecret> {
        match self {
            Self::Development(keys) => Some(keys),
            _ => None,
        }
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
        let token = header.or(query).ok_or(AuthError::Missing)?;
        let caller = state.auth.verify(token.trim()).await?;
        // Anything but a read is a command, and commands are rate-limited per customer.
        if !matches!(parts.method, Method::GET | Method::HEAD) {
            state.edge.command(caller.id)?;
        }
        Ok(caller)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_caller_with_several_roles_may_do_what_each_allows() {
        let caller = Caller {
            id: Uuid::new_v4(),
            roles: Roles::of(Role::Analyst).with(Role::Operator),
            expires_at: 0,
        };
        assert!(caller.require(&[Role::Analyst]).is_ok());
        assert!(caller.require(&[Role::Operator]).is_ok());
        assert!(caller.require(&[Role::Customer]).is_err());
        assert_eq!(caller.role(), Role::Operator);
        assert!(caller.may_see(Uuid::new_v4()));
    }

    #[test]
    fn a_customer_sees_only_their_own() {
        let caller = Caller {
            id: Uuid::new_v4(),
            roles: Roles::of(Role::Customer),
            expires_at: 0,
        };
        assert!(caller.may_see(caller.id));
        assert!(!caller.may_see(Uuid::new_v4()));
        assert_eq!(caller.actor(), format!("customer:{}", caller.id));
    }
}
