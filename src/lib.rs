//! bote: a secure, authenticated messaging gateway with verifiable delivery evidence.
//!
//! See `docs/ARCHITECTURE.md` for the map of modules and the flow of one message.

/// Declares a closed set of names, parsed and printed the same way everywhere (CLI,
/// database, API, evidence records), with an error that lists what is allowed.
macro_rules! named_enum {
    ($(#[$meta:meta])* $name:ident, $what:literal, { $($(#[$vmeta:meta])* $variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, ::serde::Serialize, ::serde::Deserialize)]
        pub enum $name { $($(#[$vmeta])* #[serde(rename = $text)] $variant),+ }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [Self] = &[$(Self::$variant),+];

            /// The stored and printed name.
            pub fn as_str(self) -> &'static str {
                match self { $(Self::$variant => $text),+ }
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.pad(self.as_str())
            }
        }

        impl ::std::str::FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                match s {
                    $($text => Ok(Self::$variant),)+
                    other => Err(format!(
                        "unknown {} `{other}`: expected one of {}",
                        $what,
                        [$($text),+].join(", ")
                    )),
                }
            }
        }
    };
}

pub mod accounts;
pub mod address;
pub mod auth;
pub mod cli;
pub mod client;
pub mod clock;
pub mod config;
pub mod crypto;
pub mod error;
pub mod evidence;
pub mod gateway;
pub mod keys;
pub mod log;
pub mod message;
pub mod outbound;
pub mod pipeline;
pub mod pki;
pub mod queue;
pub mod server;
pub mod smtp;
pub mod store;
pub mod telemetry;
pub mod timestamp;
pub mod tls;
pub mod turns;
pub mod vault;
pub mod web;
pub mod witness;
