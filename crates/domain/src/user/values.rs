//! Validated user fields and the rule that turns a username into the user's aggregate id.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::validation::FieldViolation;

/// Namespace for username-derived user ids (UUID v5). Never change it: ids already issued depend on it.
const USER_ID_NAMESPACE: Uuid = Uuid::from_u128(0x6b1f_0c3e_5a8d_4d2b_9f07_3c1e_a4d2_7b90);

/// A username: 3 to 32 characters of `a-z 0-9 . _ -`, compared case-insensitively.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Username(String);

impl Username {
    pub fn parse(raw: &str) -> Result<Self, FieldViolation> {
        let normalized = raw.trim().to_lowercase();
        let len = normalized.chars().count();
        if !(3..=32).contains(&len) {
            return Err(FieldViolation::new("username", "length", "username must be 3 to 32 characters"));
        }
        if !normalized.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')) {
            return Err(FieldViolation::new(
                "username",
                "invalid",
                "username may contain only letters, digits, '.', '_' and '-'",
            ));
        }
        Ok(Self(normalized))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The aggregate id of the user who owns `username`.
///
/// Deriving the id from the normalised name makes the event store's primary key the uniqueness
/// check: two concurrent registrations of one name race for the same stream, and only one wins.
pub fn user_id_for(username: &Username) -> Uuid {
    Uuid::new_v5(&USER_ID_NAMESPACE, username.as_str().as_bytes())
}

/// An email address, checked for shape only (delivery is the only real proof), stored lower-cased.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Email(String);

impl Email {
    pub fn parse(raw: &str) -> Result<Self, FieldViolation> {
        let normalized = raw.trim().to_lowercase();
        let invalid = || FieldViolation::new("email", "invalid", "email must look like name@example.com");
        if normalized.len() > 254 || normalized.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(invalid());
        }
        let (local, domain) = normalized.split_once('@').ok_or_else(invalid)?;
        let domain_ok =
            domain.contains('.') && !domain.starts_with('.') && !domain.ends_with('.') && !domain.contains('@');
        if local.is_empty() || !domain_ok {
            return Err(invalid());
        }
        Ok(Self(normalized))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Minimum and maximum password length in characters (NIST SP 800-63B: at least 8, allow long).
pub const PASSWORD_CHARS: std::ops::RangeInclusive<usize> = 8..=128;

/// The password policy, checked on the plaintext before it is hashed and forgotten.
pub fn check_password_policy(password: &str) -> Result<(), FieldViolation> {
    if PASSWORD_CHARS.contains(&password.chars().count()) {
        Ok(())
    } else {
        Err(FieldViolation::new("password", "length", "password must be 8 to 128 characters"))
    }
}

/// What a user may do. Product writes need `Admin`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Admin,
    Customer,
}

impl Role {
    pub fn as_str(&self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Customer => "customer",
        }
    }
}

impl std::str::FromStr for Role {
    type Err = FieldViolation;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "admin" => Ok(Role::Admin),
            "customer" => Ok(Role::Customer),
            _ => Err(FieldViolation::new("role", "invalid", "role must be admin or customer")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn usernames_are_normalised_so_case_variants_share_one_id() {
        let a = Username::parse("Alice").unwrap();
        let b = Username::parse(" alice ").unwrap();
        assert_eq!(a, b);
        assert_eq!(user_id_for(&a), user_id_for(&b));
        assert_ne!(user_id_for(&a), user_id_for(&Username::parse("bob").unwrap()));
    }

    #[test]
    fn emails_need_a_local_part_and_a_dotted_domain() {
        assert_eq!(Email::parse("A@Example.COM").unwrap().as_str(), "a@example.com");
        for bad in ["", "a", "a@", "@b.c", "a@b", "a@.b", "a b@c.d", "a@b.c@d.e", "a\u{0}@b.c", "a@b\u{7}.c"] {
            assert!(Email::parse(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    proptest! {
        #[test]
        fn usernames_of_allowed_characters_and_length_are_accepted(name in "[a-zA-Z0-9._-]{3,32}") {
            let parsed = Username::parse(&name).unwrap();
            prop_assert_eq!(parsed.as_str(), name.to_lowercase());
        }

        #[test]
        fn usernames_with_other_characters_are_rejected(prefix in "[a-z]{3,10}", bad in "[^a-zA-Z0-9._\\-\\s]") {
            let candidate = format!("{}{}", prefix, bad);
            prop_assert!(Username::parse(&candidate).is_err());
        }

        #[test]
        fn password_policy_is_a_length_window(password in "\\PC{0,140}") {
            let len = password.chars().count();
            prop_assert_eq!(check_password_policy(&password).is_ok(), (8..=128).contains(&len));
        }
    }
}
