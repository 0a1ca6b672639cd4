//! One module per command.

pub mod agent;
pub mod bench;
pub mod demo;
pub mod keys;
