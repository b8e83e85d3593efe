//! One module per route.

pub mod coming;
pub mod formats;
pub mod images;
pub mod not_found;
