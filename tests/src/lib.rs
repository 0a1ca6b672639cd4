//! Workspace-level end-to-end tests; everything lives under `tests/tests/` (see `docs/interop.md`).
