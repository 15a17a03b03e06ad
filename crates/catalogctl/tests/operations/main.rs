//! catalogctl against a running system: real Postgres, real broker, the real binary.

mod importing;
mod inspecting;
mod read_models;
mod replaying;
mod support;
