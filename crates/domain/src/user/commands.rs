use serde::{Deserialize, Serialize};

use super::Role;

/// What may be asked of a user account. The service hashes passwords before they get here:
/// no command, event or log line ever holds a plaintext password.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum UserCommand {
    Register { username: String, email: String, password_hash: String },
    ChangeEmail { email: String },
    ChangePassword { password_hash: String },
    GrantRole { role: Role },
    RevokeRole { role: Role },
    Deactivate,
}
