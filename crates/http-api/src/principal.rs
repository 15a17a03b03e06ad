//! [`Principal`]: who is calling, from a valid bearer token.

use axum::extract::{FromRef, FromRequestParts};
use axum::http::header;
use axum::http::request::Parts;
use domain::Role;
use uuid::Uuid;

use crate::problem::ApiError;
use crate::tokens::TokenVerifier;

/// The caller, proven by a valid bearer token.
#[derive(Debug, Clone)]
pub struct Principal {
    pub user_id: Uuid,
    pub role: Role,
}

impl Principal {
    /// 403 unless the caller holds `role`.
    pub fn require(&self, role: Role) -> Result<(), ApiError> {
        if self.role == role {
            Ok(())
        } else {
            Err(ApiError::Forbidden(role.as_str()))
        }
    }
}

impl<S> FromRequestParts<S> for Principal
where
    S: Send + Sync,
    TokenVerifier: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let token = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
            .ok_or(ApiError::Unauthorized)?;
        let claims = TokenVerifier::from_ref(state).verify(token.trim()).map_err(|error| {
            tracing::debug!(%error, "rejected bearer token");
            ApiError::Unauthorized
        })?;
        Ok(Principal { user_id: claims.sub, role: claims.role })
    }
}
