//! User accounts: registration and login (shared by the HTTP routes and `catalogctl user create`),
//! and what users and admins change on an account afterwards.

use std::net::IpAddr;

use domain::user::{check_password_policy, user_id_for, Email, Username};
use domain::{Role, User, UserCommand, UserError, Violations};
use event_store::{CommandBus, CommandError, EventMetadata};
use http_api::problem::ApiError;
use http_api::tokens::TokenIssuer;
use uuid::Uuid;

use crate::auth::{HashError, LoginLimiter, PasswordHasher};
use crate::failures::{store_failure, user_failure};
use crate::sessions::{token_role, Sessions};

/// Why a registration did not happen. Not an HTTP type: `catalogctl user create` reports it
/// too (the API's answer for each is in [`crate::failures`]).
#[derive(Debug, thiserror::Error)]
pub enum RegistrationError {
    #[error("{0}")]
    Invalid(Violations),
    #[error("cannot hash the password: {0:#}")]
    Hashing(HashError),
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
            limiter.record(username, client, true);
            let access_token = keys.issue(user.id.expect("registered"), token_role(&user))?;
            let refresh_token = sessions.start(&user).await?;
            Ok(SessionTokens { access_token, refresh_token })
        }
        _ => {
            limiter.record(username, client, false);
            Err(ApiError::Unauthorized)
        }
    }
}

/// Loads the active account behind a valid token. A token outlives its account's deactivation
/// by at most its lifetime: such a token (or one for an account that does not exist) is 401.
async fn active_account(bus: &CommandBus, id: Uuid) -> Result<User, ApiError> {
    let user = bus.load::<User>(&id.to_string()).await.map_err(store_failure)?;
    if user.id.is_none() || !user.active {
        return Err(ApiError::Unauthorized);
    }
    Ok(user)
}

/// Changes the caller's own email; answers the user's new version.
pub async fn change_email(bus: &CommandBus, id: Uuid, email: &str, metadata: EventMetadata) -> Result<u64, ApiError> {
    active_account(bus, id).await?;
    let version = bus
        .execute::<User>(&id.to_string(), || UserCommand::ChangeEmail { email: email.to_owned() }, metadata, true)
        .await
        .map_err(own_account_failure)?;
    Ok(version.unwrap_or_default())
}

/// Changes the caller's own password after checking the current one. The check goes through the
/// login throttling (a stolen token must not become a fast way to guess the password) and both
/// hashes through the hashing slots.
#[allow(clippy::too_many_arguments)]
pub async fn change_password(
    bus: &CommandBus,
    hasher: &PasswordHasher,
    limiter: &LoginLimiter,
    id: Uuid,
    current_password: String,
    new_password: String,
    client: Option<IpAddr>,
    metadata: EventMetadata,
) -> Result<(), ApiError> {
    check_password_policy(&new_password).map_err(|mut violation| {
        violation.field = "new_password".into();
        violation.message = format!("new_{}", violation.message);
        ApiError::Invalid(Violations(vec![violation]))
    })?;
    let user = active_account(bus, id).await?;
    limiter.check(&user.username, client)?;
    let matches = hasher.verify(current_password, Some(user.password_hash.clone())).await?;
    limiter.record(&user.username, client, matches);
    if !matches {
        return Err(ApiError::Invalid(Violations(vec![domain::FieldViolation::new(
            "current_password",
            "incorrect",
            "current_password is not the account's password",
        )])));
    }
    let password_hash = hasher.hash(new_password).await?;
    bus.execute::<User>(
        &id.to_string(),
        || UserCommand::ChangePassword { password_hash: password_hash.clone() },
        metadata,
        true,
    )
    .await
    .map_err(own_account_failure)?;
    Ok(())
}

/// An admin grants (`granted`) or revokes a role. Admins cannot revoke their own admin role, so
/// the last admin cannot lock everyone out by mistake.
pub async fn set_role(
    bus: &CommandBus,
    admin: Uuid,
    id: Uuid,
    role: Role,
    granted: bool,
    metadata: EventMetadata,
) -> Result<(), ApiError> {
    if !granted && role == Role::Admin && id == admin {
        return Err(ApiError::Conflict("admins cannot revoke their own admin role".into()));
    }
    let command = || if granted { UserCommand::GrantRole { role } } else { UserCommand::RevokeRole { role } };
    bus.execute::<User>(&id.to_string(), command, metadata, true).await.map_err(user_failure)?;
    Ok(())
}

/// An admin deactivates an account (for good: it can no longer log in). Deactivating a
/// deactivated account changes nothing and succeeds; admins cannot deactivate themselves.
pub async fn deactivate(bus: &CommandBus, admin: Uuid, id: Uuid, metadata: EventMetadata) -> Result<(), ApiError> {
    if id == admin {
        return Err(ApiError::Conflict("admins cannot deactivate their own account".into()));
    }
    match bus.execute::<User>(&id.to_string(), || UserCommand::Deactivate, metadata, true).await {
        Ok(_) | Err(CommandError::Rejected(UserError::Deactivated)) => Ok(()),
        Err(error) => Err(user_failure(error)),
    }
}

/// A command on the caller's own account: an account that is gone or deactivated meanwhile
/// makes the token worthless (401), like at load.
fn own_account_failure(error: CommandError<UserError>) -> ApiError {
    match error {
        CommandError::Rejected(UserError::NotFound | UserError::Deactivated) => ApiError::Unauthorized,
        error => user_failure(error),
    }
}
