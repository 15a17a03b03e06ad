//! The product aggregate: a catalog item with a name, a description, a price in a currency,
//! an optional sku, a status, categories, attributes, images and a stock level.

mod aggregate;
mod commands;
mod events;
mod values;

pub use aggregate::{Product, ProductError};
pub use commands::ProductCommand;
pub use events::ProductEvent;
pub use values::{
    Attributes, CategoryIds, Description, Images, ProductImage, ProductName, ProductStatus, Sku, StockReason,
};
