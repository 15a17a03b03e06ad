//! The product aggregate: a sellable item with a name, a description and an exact price.

mod aggregate;
mod commands;
mod events;
mod values;

pub use aggregate::{Product, ProductError};
pub use commands::ProductCommand;
pub use events::ProductEvent;
pub use values::{Description, Price, ProductName};
