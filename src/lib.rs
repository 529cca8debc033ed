//! bote: a secure, authenticated messaging gateway with verifiable delivery evidence.
//!
//! See `docs/ARCHITECTURE.md` for the map of modules and the flow of one message.

pub mod accounts;
pub mod address;
pub mod cli;
pub mod clock;
pub mod config;
pub mod crypto;
pub mod evidence;
pub mod keys;
pub mod log;
pub mod pki;
pub mod server;
pub mod store;
pub mod telemetry;
pub mod tls;
pub mod web;
