//! Field-level validation results, collected so a client learns every problem in one answer.

use serde::{Deserialize, Serialize};

/// One rejected field: which one, a stable machine-readable code, and a sentence for people.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldViolation {
    /// The JSON field name as the client sent it.
    pub field: String,
    /// Stable code clients may switch on (`required`, `too_long`, ...).
    pub code: String,
    /// Human-readable explanation.
    pub message: String,
}

impl FieldViolation {
    pub fn new(field: &str, code: &str, message: impl Into<String>) -> Self {
        Self { field: field.to_owned(), code: code.to_owned(), message: message.into() }
    }
}

/// All violations found in one command. Never empty when returned as an error.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Violations(pub Vec<FieldViolation>);

impl Violations {
    /// Records the error of `result`, if any, and passes its value on.
    pub fn check<T>(&mut self, result: Result<T, FieldViolation>) -> Option<T> {
        match result {
            Ok(value) => Some(value),
            Err(violation) => {
                self.0.push(violation);
                None
            }
        }
    }

    /// Like [`check`](Self::check) for parsers of collections, which report one violation per
    /// bad element (`images[3].url`, `attributes.colour`) rather than stopping at the first.
    pub fn check_all<T>(&mut self, result: Result<T, Violations>) -> Option<T> {
        match result {
            Ok(value) => Some(value),
            Err(violations) => {
                self.0.extend(violations.0);
                None
            }
        }
    }

    pub fn push(&mut self, violation: FieldViolation) {
        self.0.push(violation);
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `Ok(())` when nothing was recorded, else every violation at once.
    pub fn into_result(self) -> Result<(), Violations> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(self)
        }
    }
}

/// Trimmed, non-empty text of at most `max_chars` characters without control characters:
/// the rule for names and other one-line labels. `field` names the field in the violation.
pub fn required_text(field: &str, raw: &str, max_chars: usize) -> Result<String, FieldViolation> {
    let trimmed = raw.trim();
    if trimmed.is_empty() {
        return Err(FieldViolation::new(field, "required", format!("{field} must not be empty")));
    }
    check_max_chars(field, trimmed, max_chars)?;
    check_no_control_chars(field, trimmed)?;
    Ok(trimmed.to_owned())
}

/// At most `max_chars` characters. Counts characters, not bytes, so the limit means the same
/// in every script.
pub fn check_max_chars(field: &str, raw: &str, max_chars: usize) -> Result<(), FieldViolation> {
    if raw.chars().count() > max_chars {
        return Err(FieldViolation::new(field, "too_long", format!("{field} must be at most {max_chars} characters")));
    }
    Ok(())
}

/// No control characters: they break one-line displays and hide text from people reviewing it.
pub fn check_no_control_chars(field: &str, raw: &str) -> Result<(), FieldViolation> {
    if raw.chars().any(char::is_control) {
        return Err(FieldViolation::new(field, "invalid", format!("{field} must not contain control characters")));
    }
    Ok(())
}

impl std::fmt::Display for Violations {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let fields: Vec<&str> = self.0.iter().map(|v| v.field.as_str()).collect();
        write!(f, "invalid fields: {}", fields.join(", "))
    }
}
