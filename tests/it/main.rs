//! Integration tests: one binary, one module per capability.
//!
//! PostgreSQL tests need `BOTE_TEST_POSTGRES_URL` (set by `scripts/test`, which starts a
//! throwaway cluster); they fail rather than skip without it.

// Test helpers are not `#[test]` functions, so clippy.toml's test allowance misses them.
#![allow(clippy::unwrap_used)]

mod support;

mod accounts;
mod api;
mod architecture;
mod cli;
mod core;
mod crash;
mod directory;
mod docs;
mod evidence;
mod http;
mod interop;
mod limits;
mod log_props;
mod postfix;
mod probes;
mod relay;
mod smtp;
mod storage;
mod timestamp;
mod verifiers;
mod walkthrough;
mod web;
mod witness;
mod zero_access;
