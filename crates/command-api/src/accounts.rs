//! User accounts: registration and login, shared by the HTTP routes and `catalogctl user create`.

use std::net::IpAddr;

use domain::user::{check_password_policy, user_id_for, Email, Username};
use domain::{Role, User, UserCommand, UserError, Violations};
use uuid::Uuid;

use crate::auth::{LoginLimiter, PasswordHasher, TokenKeys};
use crate::commands::{CommandBus, CommandError};
use crate::problem::ApiError;
use crate::routes::store_failure;

/// Registers a user and grants `extra_roles`. Every field is validated before anything is
/// written, and all problems are reported together.
pub async fn register(
    bus: &CommandBus,
    hasher: &PasswordHasher,
    username: &str,
    email: &str,
    password: String,
    extra_roles: &[Role],
    metadata: std::collections::HashMap<String, String>,
) -> Result<Uuid, ApiError> {
    let mut violations = Violations::default();
    let parsed_username = violations.check(Username::parse(username));
    violations.check(Email::parse(email));
    violations.check(check_password_policy(&password));
    violations.into_result().map_err(ApiError::Invalid)?;
    let id = user_id_for(&parsed_username.expect("validated above"));
    let password_hash = hasher.hash(password).await?;
    let register =
        || UserCommand::Register { username: username.into(), email: email.into(), password_hash: password_hash.clone() };
    // No retry on conflict: a conflict here means someone registered the same name concurrently.
    bus.execute::<User>(&id.to_string(), register, metadata.clone(), false).await.map_err(user_failure)?;
    for role in extra_roles {
        bus.execute::<User>(&id.to_string(), || UserCommand::GrantRole { role: *role }, metadata.clone(), true)
            .await
            .map_err(user_failure)?;
    }
    Ok(id)
}

/// A bearer token for `username` if the password matches an active account.
/// Unknown user, wrong password and deactivated account all get the same 401.
pub async fn login(
    bus: &CommandBus,
    hasher: &PasswordHasher,
    limiter: &LoginLimiter,
    keys: &TokenKeys,
    username: &str,
    password: String,
    client: Option<IpAddr>,
) -> Result<String, ApiError> {
    limiter.check(username, client)?;
    let user = match Username::parse(username) {
        Ok(name) => Some(bus.load::<User>(&user_id_for(&name).to_string()).await.map_err(store_failure)?),
        Err(_) => None,
    };
    let user = user.filter(|u| u.id.is_some());
    let matches = hasher.verify(password, user.as_ref().map(|u| u.password_hash.clone())).await?;
    match user {
        Some(user) if matches && user.active => {
            let role = if user.roles.contains(&Role::Admin) { Role::Admin } else { Role::Customer };
            Ok(keys.issue(user.id.expect("registered"), role)?)
        }
        _ => Err(ApiError::Unauthorized),
    }
}

fn user_failure(error: CommandError<UserError>) -> ApiError {
    match error {
        CommandError::Rejected(UserError::Invalid(violations)) => ApiError::Invalid(violations),
        CommandError::Rejected(UserError::UsernameTaken) | CommandError::Conflict => {
            ApiError::Conflict("username is already taken".into())
        }
        CommandError::Rejected(UserError::NotFound) => ApiError::NotFound("user"),
        CommandError::Rejected(UserError::Deactivated) => ApiError::Conflict("user is deactivated".into()),
        CommandError::Store(e) => store_failure(e),
    }
}
