//! One module per command.

pub mod agent;
#[cfg(feature = "full")]
pub mod bench;
#[cfg(feature = "full")]
pub mod demo;
pub mod discover;
pub mod keys;
#[cfg(feature = "full")]
pub mod load;
#[cfg(feature = "full")]
mod measure;
pub mod session;
