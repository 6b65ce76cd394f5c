//! Tests that flood the node's listeners and connections and measure how it copes:
//! latencies of well-behaved clients, task counts, memory, time to stop. They are a test
//! binary of their own, which `cargo test` runs after the `integration` binary, so that
//! no other test's load is taken for their result; among themselves they take turns
//! (`common::flood_alone`). Their peers are real, as in `integration`, whose harness
//! (`autocluster-test-support`, in `test-support/`) they share.

use autocluster_test_support as common;

mod abusive;
mod overload;
mod slowloris;
mod stop;
