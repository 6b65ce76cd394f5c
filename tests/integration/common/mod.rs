//! The test harness (the `autocluster-test-support` package in `test-support/`), and the
//! backend conformance suite.
//!
//! * [`conformance`]: the backend conformance suite and how to plug a backend into it.

pub mod conformance;

pub use autocluster_test_support::*;
