//! The test harness: the `autocluster-test-support` package in `test-support/`. (The
//! backend conformance suite is the library's `autocluster::backend::conformance`.)

pub use autocluster_test_support::*;
