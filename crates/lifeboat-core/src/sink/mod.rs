//! Engines that consume a dump stream on restore, applying it so that it can be undone until the
//! stream is proven intact.

pub mod postgres;
pub mod redis;
