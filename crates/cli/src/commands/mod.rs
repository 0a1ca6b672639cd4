//! One module per command.

pub mod agent;
pub mod demo;
pub mod keys;
