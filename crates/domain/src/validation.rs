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

impl std::fmt::Display for Violations {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let fields: Vec<&str> = self.0.iter().map(|v| v.field.as_str()).collect();
        write!(f, "invalid fields: {}", fields.join(", "))
    }
}
