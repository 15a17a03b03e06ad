//! The user profiles read model. A profile holds no credential material: the events it is
//! folded from have already been redacted (see [`crate::event`]).

use std::collections::{BTreeSet, HashMap};

use chrono::{DateTime, Utc};
use domain::Role;
use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

use crate::projection::{ApplyError, ReadModel};
use event_store::CatalogEvent;

/// A user's profile as query-api serves it.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct UserView {
    pub id: Uuid,
    pub username: String,
    pub email: String,
    pub roles: Vec<String>,
    pub active: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub version: i64,
}

/// The user events as they arrive redacted: the same shapes as `domain::UserEvent` without
/// the password hash, so they cannot be decoded as the domain type.
#[derive(Deserialize)]
#[allow(clippy::enum_variant_names)] // the stored event names
enum ProfileEvent {
    UserRegistered { id: Uuid, username: String, email: String },
    UserEmailChanged { email: String },
    UserPasswordChanged {},
    UserRoleGranted { role: Role },
    UserRoleRevoked { role: Role },
    UserDeactivated {},
}

/// Folds one event into the profile. Pure: the projector, rebuild and verify all call this.
pub fn apply(current: Option<UserView>, event: &CatalogEvent) -> Result<UserView, ApplyError> {
    let decoded = ProfileEvent::deserialize(&event.payload)
        .map_err(|e| ApplyError::Malformed(format!("not a user event: {e}")))?;
    let at = event.recorded_at;
    let mut view = match (current, decoded) {
        (None, ProfileEvent::UserRegistered { id, username, email }) => {
            return Ok(UserView {
                id,
                username,
                email,
                roles: vec![Role::Customer.as_str().to_owned()],
                active: true,
                created_at: at,
                updated_at: at,
                version: event.sequence,
            })
        }
        (Some(mut view), ProfileEvent::UserEmailChanged { email }) => {
            view.email = email;
            view
        }
        (Some(view), ProfileEvent::UserPasswordChanged {}) => view,
        (Some(mut view), ProfileEvent::UserRoleGranted { role }) => {
            let mut roles: BTreeSet<String> = view.roles.into_iter().collect();
            roles.insert(role.as_str().to_owned());
            view.roles = roles.into_iter().collect();
            view
        }
        (Some(mut view), ProfileEvent::UserRoleRevoked { role }) => {
            view.roles.retain(|r| r != role.as_str());
            view
        }
        (Some(mut view), ProfileEvent::UserDeactivated {}) => {
            view.active = false;
            view
        }
        (current, _) => {
            return Err(ApplyError::Malformed(format!(
                "{} cannot follow {}",
                event.event_type,
                if current.is_some() { "an existing user" } else { "nothing" },
            )))
        }
    };
    view.updated_at = at;
    view.version = event.sequence;
    Ok(view)
}

pub async fn get<'e>(executor: impl PgExecutor<'e>, id: Uuid) -> Result<Option<UserView>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, username, email, roles, active, created_at, updated_at, version FROM users WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(executor)
    .await
}

/// One page of profiles for the admin listing, in username order (then id, for equal names):
/// those whose username or email starts with `prefix` (lower-cased, as both are stored), after
/// the keyset position `after`.
pub async fn search<'e>(
    executor: impl PgExecutor<'e>,
    prefix: Option<&str>,
    after: Option<(&str, Uuid)>,
    limit: i64,
) -> Result<Vec<UserView>, sqlx::Error> {
    // starts_with(), not LIKE: a `%` or `_` in the prefix is matched as itself.
    sqlx::query_as(
        "SELECT id, username, email, roles, active, created_at, updated_at, version FROM users
          WHERE ($1::text IS NULL OR starts_with(username, $1) OR starts_with(email, $1))
            AND ($2::text IS NULL OR (username, id) > ($2, $3))
          ORDER BY username, id
          LIMIT $4",
    )
    .bind(prefix.map(str::to_lowercase))
    .bind(after.map(|(username, _)| username))
    .bind(after.map(|(_, id)| id))
    .bind(limit)
    .fetch_all(executor)
    .await
}

pub struct Users;

impl ReadModel for Users {
    type View = UserView;
    const AGGREGATE_TYPE: &'static str = "User";
    const TABLE: &'static str = "users";

    fn version(view: &UserView) -> i64 {
        view.version
    }

    fn apply(current: Option<UserView>, event: &CatalogEvent) -> Result<UserView, ApplyError> {
        apply(current, event)
    }

    fn fields(view: &UserView) -> serde_json::Map<String, serde_json::Value> {
        crate::projection::serialized_fields(view)
    }

    async fn load(pool: &sqlx::PgPool, ids: &[Uuid]) -> Result<HashMap<Uuid, UserView>, sqlx::Error> {
        let rows: Vec<UserView> = sqlx::query_as(
            "SELECT id, username, email, roles, active, created_at, updated_at, version FROM users WHERE id = ANY($1)",
        )
        .bind(ids)
        .fetch_all(pool)
        .await?;
        Ok(rows.into_iter().map(|row| (row.id, row)).collect())
    }

    async fn load_for_update(
        connection: &mut PgConnection,
        ids: &[Uuid],
    ) -> Result<HashMap<Uuid, UserView>, sqlx::Error> {
        let rows: Vec<UserView> = sqlx::query_as(
            "SELECT id, username, email, roles, active, created_at, updated_at, version
               FROM users WHERE id = ANY($1) ORDER BY id FOR UPDATE",
        )
        .bind(ids)
        .fetch_all(connection)
        .await?;
        Ok(rows.into_iter().map(|row| (row.id, row)).collect())
    }

    async fn save(connection: &mut PgConnection, table: &str, views: &[&UserView]) -> Result<(), sqlx::Error> {
        // Roles travel as one comma-joined string per row: Postgres arrays cannot be ragged.
        sqlx::query(&format!(
            "INSERT INTO {table} (id, username, email, roles, active, created_at, updated_at, version)
             SELECT id, username, email, string_to_array(roles, ','), active, created_at, updated_at, version
               FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::text[], $5::bool[],
                           $6::timestamptz[], $7::timestamptz[], $8::bigint[])
                    AS t(id, username, email, roles, active, created_at, updated_at, version)
             ON CONFLICT (id) DO UPDATE
                SET username = EXCLUDED.username, email = EXCLUDED.email, roles = EXCLUDED.roles,
                    active = EXCLUDED.active, updated_at = EXCLUDED.updated_at, version = EXCLUDED.version
              WHERE {table}.version < EXCLUDED.version",
        ))
        .bind(views.iter().map(|v| v.id).collect::<Vec<_>>())
        .bind(views.iter().map(|v| v.username.as_str()).collect::<Vec<_>>())
        .bind(views.iter().map(|v| v.email.as_str()).collect::<Vec<_>>())
        .bind(views.iter().map(|v| v.roles.join(",")).collect::<Vec<_>>())
        .bind(views.iter().map(|v| v.active).collect::<Vec<_>>())
        .bind(views.iter().map(|v| v.created_at).collect::<Vec<_>>())
        .bind(views.iter().map(|v| v.updated_at).collect::<Vec<_>>())
        .bind(views.iter().map(|v| v.version).collect::<Vec<_>>())
        .execute(connection)
        .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event(sequence: i64, payload: serde_json::Value) -> CatalogEvent {
        let event_type = payload.as_object().unwrap().keys().next().unwrap().clone();
        let version = if event_type == "UserRegistered" { "2.0.0" } else { "1.0.0" };
        CatalogEvent::from_stored(
            Uuid::new_v4(),
            "User".into(),
            Uuid::nil().to_string(),
            sequence,
            event_type,
            version.into(),
            payload,
            json!({}),
            sequence,
            Utc::now(),
        )
    }

    fn registered() -> UserView {
        let e = event(
            1,
            json!({"UserRegistered": {"id": Uuid::nil(), "username": "ann", "email": "a@x.io", "password_hash": "h"}}),
        );
        apply(None, &e).unwrap()
    }

    #[test]
    fn a_registered_user_is_an_active_customer() {
        let view = registered();
        assert_eq!(view.roles, vec!["customer"]);
        assert!(view.active);
        assert_eq!(view.version, 1);
    }

    #[test]
    fn roles_email_and_deactivation_fold_in_order() {
        let view = apply(Some(registered()), &event(2, json!({"UserRoleGranted": {"role": "admin"}}))).unwrap();
        assert_eq!(view.roles, vec!["admin", "customer"]);
        let view = apply(Some(view), &event(3, json!({"UserEmailChanged": {"email": "b@x.io"}}))).unwrap();
        let view = apply(Some(view), &event(4, json!({"UserRoleRevoked": {"role": "customer"}}))).unwrap();
        let view = apply(Some(view), &event(5, json!({"UserPasswordChanged": {"password_hash": "x"}}))).unwrap();
        let view = apply(Some(view), &event(6, json!({"UserDeactivated": {}}))).unwrap();
        assert_eq!(
            (view.email.as_str(), view.roles.clone(), view.active, view.version),
            ("b@x.io", vec!["admin".to_owned()], false, 6)
        );
    }

    #[test]
    fn a_profile_never_carries_a_password_hash() {
        let json = serde_json::to_string(&registered()).unwrap();
        assert!(!json.contains("password") && !json.contains("\"h\""), "{json}");
    }
}
