//! User accounts: registration and login, shared by the HTTP routes and `catalogctl user create`.

use std::net::IpAddr;

use domain::user::{check_password_policy, user_id_for, Email, Username};
use domain::{Role, User, UserCommand, UserError, Violations};
use event_store::{CommandBus, CommandError, EventMetadata};
use http_api::problem::ApiError;
use http_api::tokens::TokenIssuer;
use uuid::Uuid;

use crate::auth::{LoginLimiter, PasswordHasher};
use crate::failures::store_failure;
use crate::sessions::{token_role, Sessions};

/// Why a registration did not happen. Not an HTTP type: `catalogctl user create` reports it
/// too (the API's answer for each is in [`crate::failures`]).
#[derive(Debug, thiserror::Error)]
pub enum RegistrationError {
    #[error("{0}")]
    Invalid(Violations),
    #[error("cannot hash the password: {0:#}")]
    Hashing(anyhow::Error),
    #[error("{0}")]
    Command(CommandError<UserError>),
}

/// Registers a user and grants `extra_roles`. Every field is validated before anything is
/// written, and all problems are reported together.
pub async fn register(
    bus: &CommandBus,
    hasher: &PasswordHasher,
    username: &str,
    email: &str,
    password: String,
    extra_roles: &[Role],
    metadata: EventMetadata,
) -> Result<Uuid, RegistrationError> {
    let mut violations = Violations::default();
    let parsed_username = violations.check(Username::parse(username));
    violations.check(Email::parse(email));
    violations.check(check_password_policy(&password));
    violations.into_result().map_err(RegistrationError::Invalid)?;
    let id = user_id_for(&parsed_username.expect("validated above"));
    let password_hash = hasher.hash(password).await.map_err(RegistrationError::Hashing)?;
    let register = || UserCommand::Register {
        username: username.into(),
        email: email.into(),
        password_hash: password_hash.clone(),
    };
    // No retry on conflict: a conflict here means someone registered the same name concurrently.
    bus.execute::<User>(&id.to_string(), register, metadata.clone(), false)
        .await
        .map_err(RegistrationError::Command)?;
    for role in extra_roles {
        bus.execute::<User>(&id.to_string(), || UserCommand::GrantRole { role: *role }, metadata.clone(), true)
            .await
            .map_err(RegistrationError::Command)?;
    }
    Ok(id)
}

/// What a login or a refresh hands out.
pub struct SessionTokens {
    pub access_token: String,
    pub refresh_token: String,
}

/// An access token and a new session's refresh token for `username` if the password matches
/// an active account. Unknown user, wrong password and deactivated account all get the same 401.
#[allow(clippy::too_many_arguments)] // each is a separate piece of state the route holds
pub async fn login(
    bus: &CommandBus,
    hasher: &PasswordHasher,
    limiter: &LoginLimiter,
    keys: &TokenIssuer,
    sessions: &Sessions,
    username: &str,
    password: String,
    client: Option<IpAddr>,
) -> Result<SessionTokens, ApiError> {
    limiter.check(username, client)?;
    let user = match Username::parse(username) {
        Ok(name) => Some(bus.load::<User>(&user_id_for(&name).to_string()).await.map_err(store_failure)?),
        Err(_) => None,
    };
    let user = user.filter(|u| u.id.is_some());
    let matches = hasher.verify(password, user.as_ref().map(|u| u.password_hash.clone())).await?;
    match user {
        Some(user) if matches && user.active => {
            let access_token = keys.issue(user.id.expect("registered"), token_role(&user))?;
            let refresh_token = sessions.start(&user).await?;
            Ok(SessionTokens { access_token, refresh_token })
        }
        _ => Err(ApiError::Unauthorized),
    }
}
