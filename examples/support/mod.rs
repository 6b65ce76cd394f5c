//! What the examples share. Each example declares `mod support;` and uses what it
//! needs: the rest is unused in that example, hence the `dead_code` allowance.
#![allow(dead_code)]

pub mod backend_args;
pub mod tls_args;
