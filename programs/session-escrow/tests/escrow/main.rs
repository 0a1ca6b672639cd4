//! Integration tests of the escrow program on a real bank (solana-program-test), the program
//! running natively and SPL Token / Token-2022 as their bundled SBF builds.

// Tests panic on purpose when something is off, and compute expectations with plain arithmetic on
// small known numbers.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::arithmetic_side_effects,
    missing_docs
)]

mod adversarial;
mod compute;
mod happy;
mod harness;
mod metered;
mod properties;
mod sponsored;
