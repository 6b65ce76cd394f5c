//! The Consul backend's readings of Consul's JSON answers: the health listing (mapped
//! to nodes), the KV read, the session id, and `true`/`false` answers.
//!
//! Input: `Which:8 | Nlen:8 | ClusterName | Body`. `Which` picks the answer (and, for the
//! health listing, whether warnings count as passing and long names); `ClusterName` is
//! the tag nodes must carry.
#![no_main]

use autocluster::backend::consul::ConsulConfig;
use autocluster::fuzzing::{consul_bool, consul_health, consul_kv, consul_session};
use autocluster_fuzz::check;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let [which, nlen, rest @ ..] = data else {
        return;
    };
    let Some((cluster, body)) = rest.split_at_checked(usize::from(*nlen)) else {
        return;
    };
    let n = body.len();
    match which % 4 {
        0 => {
            let mut config = ConsulConfig::new("localhost", 8500)
                .with_cluster_name(String::from_utf8_lossy(cluster).into_owned())
                .with_include_warnings(which & 4 != 0);
            config.use_longname = which & 8 != 0;
            if let Ok(nodes) = check("consul health answer", n, || consul_health(&config, body)) {
                // Sorted by registration order, then name, each node once.
                for pair in nodes.windows(2) {
                    assert!((pair[0].order, &pair[0].node) < (pair[1].order, &pair[1].node));
                }
            }
        }
        1 => {
            let _ = check("consul kv answer", n, || consul_kv(body));
        }
        2 => {
            let _ = check("consul session answer", n, || consul_session(body));
        }
        _ => {
            let _ = check("consul bool answer", n, || consul_bool(body));
        }
    }
});
