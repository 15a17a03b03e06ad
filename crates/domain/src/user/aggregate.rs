use std::collections::BTreeSet;

use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::values::{user_id_for, Email, Username};
use super::{Role, UserCommand, UserEvent};
use crate::validation::{FieldViolation, Violations};

/// A user account as its event history defines it.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct User {
    /// `None` until `UserRegistered`.
    pub id: Option<Uuid>,
    pub username: String,
    pub email: String,
    /// argon2id PHC string; never leaves the write side except inside events.
    pub password_hash: String,
    pub roles: BTreeSet<Role>,
    pub active: bool,
    pub version: u64,
    /// The version of the last event that changed how the user signs in or what they may do
    /// (registration, password, roles, deactivation): sessions issued before it are void.
    /// `default`: snapshots from before this field read as 0, consistently for every load.
    #[serde(default)]
    pub credentials_version: u64,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum UserError {
    #[error("{0}")]
    Invalid(Violations),
    #[error("username is already taken")]
    UsernameTaken,
    #[error("user not found")]
    NotFound,
    #[error("user is deactivated")]
    Deactivated,
}

impl User {
    fn ensure_active(&self) -> Result<(), UserError> {
        match (self.id, self.active) {
            (None, _) => Err(UserError::NotFound),
            (Some(_), false) => Err(UserError::Deactivated),
            (Some(_), true) => Ok(()),
        }
    }

    fn decide(&self, command: UserCommand) -> Result<Vec<UserEvent>, UserError> {
        if !matches!(command, UserCommand::Register { .. }) {
            self.ensure_active()?;
        }
        let events = match command {
            UserCommand::Register { username, email, password_hash } => {
                if self.id.is_some() {
                    return Err(UserError::UsernameTaken);
                }
                let mut violations = Violations::default();
                let username = violations.check(Username::parse(&username));
                let email = violations.check(Email::parse(&email));
                if password_hash.is_empty() {
                    violations.push(FieldViolation::new("password", "required", "password is required"));
                }
                violations.into_result().map_err(UserError::Invalid)?;
                let username = username.unwrap();
                vec![UserEvent::UserRegistered {
                    id: user_id_for(&username),
                    username: username.as_str().to_owned(),
                    email: email.unwrap().as_str().to_owned(),
                    password_hash,
                }]
            }
            UserCommand::ChangeEmail { email } => {
                let email = Email::parse(&email).map_err(|v| UserError::Invalid(Violations(vec![v])))?;
                vec![UserEvent::UserEmailChanged { email: email.as_str().to_owned() }]
            }
            UserCommand::ChangePassword { password_hash } => {
                vec![UserEvent::UserPasswordChanged { password_hash }]
            }
            // Granting a held role or revoking a missing one is a no-op, not an error: the
            // outcome the caller asked for already holds.
            UserCommand::GrantRole { role } if self.roles.contains(&role) => vec![],
            UserCommand::GrantRole { role } => vec![UserEvent::UserRoleGranted { role }],
            UserCommand::RevokeRole { role } if !self.roles.contains(&role) => vec![],
            UserCommand::RevokeRole { role } => vec![UserEvent::UserRoleRevoked { role }],
            UserCommand::Deactivate => vec![UserEvent::UserDeactivated {}],
        };
        Ok(events)
    }
}

impl Aggregate for User {
    const TYPE: &'static str = "User";
    type Command = UserCommand;
    type Event = UserEvent;
    type Error = UserError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _services: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        for event in self.decide(command)? {
            sink.write(event, self).await;
        }
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        self.version += 1;
        // Every event but an email change touches how the user signs in or what they may do.
        let touches_credentials = !matches!(event, UserEvent::UserEmailChanged { .. });
        match event {
            UserEvent::UserRegistered { id, username, email, password_hash } => {
                self.id = Some(id);
                self.username = username;
                self.email = email;
                self.password_hash = password_hash;
                // Every account starts as a customer; admin is granted explicitly.
                self.roles = BTreeSet::from([Role::Customer]);
                self.active = true;
            }
            UserEvent::UserEmailChanged { email } => self.email = email,
            UserEvent::UserPasswordChanged { password_hash } => self.password_hash = password_hash,
            UserEvent::UserRoleGranted { role } => {
                self.roles.insert(role);
            }
            UserEvent::UserRoleRevoked { role } => {
                self.roles.remove(&role);
            }
            UserEvent::UserDeactivated {} => self.active = false,
        }
        if touches_credentials {
            self.credentials_version = self.version;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cqrs_es::test::TestFramework;

    type UserTest = TestFramework<User>;

    fn alice_id() -> Uuid {
        user_id_for(&Username::parse("alice").unwrap())
    }

    fn registered() -> UserEvent {
        UserEvent::UserRegistered {
            id: alice_id(),
            username: "alice".into(),
            email: "alice@example.com".into(),
            password_hash: "$argon2id$stub".into(),
        }
    }

    fn register(username: &str, email: &str) -> UserCommand {
        UserCommand::Register { username: username.into(), email: email.into(), password_hash: "$argon2id$stub".into() }
    }

    #[test]
    fn registering_normalises_username_and_email_and_derives_the_id() {
        UserTest::with(())
            .given_no_previous_events()
            .when(register(" Alice ", "Alice@Example.com"))
            .then_expect_events(vec![registered()]);
    }

    #[test]
    fn registering_a_taken_username_is_rejected() {
        UserTest::with(())
            .given(vec![registered()])
            .when(register("alice", "other@example.com"))
            .then_expect_error(UserError::UsernameTaken);
    }

    #[test]
    fn registering_with_bad_fields_reports_each_field() {
        let error = UserTest::with(())
            .given_no_previous_events()
            .when(UserCommand::Register { username: "a!".into(), email: "nope".into(), password_hash: String::new() })
            .inspect_result()
            .unwrap_err();
        let UserError::Invalid(violations) = error else { panic!("expected validation error") };
        let fields: Vec<_> = violations.0.iter().map(|v| v.field.as_str()).collect();
        assert_eq!(fields, ["username", "email", "password"]);
    }

    #[test]
    fn credentials_version_follows_password_role_and_deactivation_but_not_email() {
        let mut user = User::default();
        user.apply(registered());
        assert_eq!(user.credentials_version, 1);
        user.apply(UserEvent::UserEmailChanged { email: "new@example.com".into() });
        assert_eq!((user.version, user.credentials_version), (2, 1));
        user.apply(UserEvent::UserPasswordChanged { password_hash: "$argon2id$new".into() });
        assert_eq!(user.credentials_version, 3);
        user.apply(UserEvent::UserRoleGranted { role: Role::Admin });
        assert_eq!(user.credentials_version, 4);
        user.apply(UserEvent::UserRoleRevoked { role: Role::Admin });
        assert_eq!(user.credentials_version, 5);
        user.apply(UserEvent::UserDeactivated {});
        assert_eq!(user.credentials_version, 6);
    }

    #[test]
    fn changing_email_records_the_normalised_address() {
        UserTest::with(())
            .given(vec![registered()])
            .when(UserCommand::ChangeEmail { email: "NEW@example.com".into() })
            .then_expect_events(vec![UserEvent::UserEmailChanged { email: "new@example.com".into() }]);
    }

    #[test]
    fn changing_email_to_garbage_is_rejected() {
        let result = UserTest::with(())
            .given(vec![registered()])
            .when(UserCommand::ChangeEmail { email: "garbage".into() })
            .inspect_result();
        assert!(matches!(result, Err(UserError::Invalid(_))));
    }

    #[test]
    fn changing_password_records_the_new_hash() {
        UserTest::with(())
            .given(vec![registered()])
            .when(UserCommand::ChangePassword { password_hash: "$argon2id$new".into() })
            .then_expect_events(vec![UserEvent::UserPasswordChanged { password_hash: "$argon2id$new".into() }]);
    }

    #[test]
    fn granting_admin_records_it_once() {
        UserTest::with(())
            .given(vec![registered()])
            .when(UserCommand::GrantRole { role: Role::Admin })
            .then_expect_events(vec![UserEvent::UserRoleGranted { role: Role::Admin }]);
        UserTest::with(())
            .given(vec![registered(), UserEvent::UserRoleGranted { role: Role::Admin }])
            .when(UserCommand::GrantRole { role: Role::Admin })
            .then_expect_events(vec![]);
    }

    #[test]
    fn revoking_a_held_role_records_it_and_a_missing_one_is_a_no_op() {
        UserTest::with(())
            .given(vec![registered()])
            .when(UserCommand::RevokeRole { role: Role::Customer })
            .then_expect_events(vec![UserEvent::UserRoleRevoked { role: Role::Customer }]);
        UserTest::with(())
            .given(vec![registered()])
            .when(UserCommand::RevokeRole { role: Role::Admin })
            .then_expect_events(vec![]);
    }

    #[test]
    fn deactivating_records_it() {
        UserTest::with(())
            .given(vec![registered()])
            .when(UserCommand::Deactivate)
            .then_expect_events(vec![UserEvent::UserDeactivated {}]);
    }

    #[test]
    fn a_deactivated_user_accepts_no_further_command() {
        UserTest::with(())
            .given(vec![registered(), UserEvent::UserDeactivated {}])
            .when(UserCommand::GrantRole { role: Role::Admin })
            .then_expect_error(UserError::Deactivated);
    }

    #[test]
    fn commands_on_an_unknown_user_are_not_found() {
        UserTest::with(())
            .given_no_previous_events()
            .when(UserCommand::Deactivate)
            .then_expect_error(UserError::NotFound);
    }

    #[test]
    fn a_new_user_is_an_active_customer() {
        let mut user = User::default();
        user.apply(registered());
        assert!(user.active);
        assert_eq!(user.roles, BTreeSet::from([Role::Customer]));
        assert_eq!(user.version, 1);
    }
}
