//! One module per instruction: its `Accounts` struct, arguments and handler.

pub mod claim;
pub mod close;
pub mod cooperative_close;
pub mod dispute;
pub mod finalize;
pub mod open_session;
pub mod request_close;
pub mod top_up;

// Anchor's `#[program]` needs every `Accounts` struct (and the client modules its derive
// generates) at the crate root, hence the globs. Each module also has a `handler`; those names
// collide in the globs, but `lib.rs` always calls `instructions::<verb>::handler` by full path.
#[allow(ambiguous_glob_reexports)]
pub use claim::*;
#[allow(ambiguous_glob_reexports)]
pub use close::*;
#[allow(ambiguous_glob_reexports)]
pub use cooperative_close::*;
#[allow(ambiguous_glob_reexports)]
pub use dispute::*;
#[allow(ambiguous_glob_reexports)]
pub use finalize::*;
#[allow(ambiguous_glob_reexports)]
pub use open_session::*;
#[allow(ambiguous_glob_reexports)]
pub use request_close::*;
#[allow(ambiguous_glob_reexports)]
pub use top_up::*;
