//! What the backends make of the names and addresses a registry answers with: node names
//! as the static list and etcd read them, DNS host names (SRV targets, PTR answers)
//! mapped to node names, Kubernetes endpoint addresses and hostnames mapped to node names,
//! StatefulSet ordinals and seeds.
//!
//! The JSON of the Kubernetes API is read by k8s-openapi's types and DNS messages by
//! hickory-proto (fuzzed upstream); what this crate does with the strings they hold is
//! fuzzed here.
//!
//! Input: `Which:8 | Text`; `Which` picks the mapping and its settings (long names, a
//! node prefix, a hostname suffix).
#![no_main]

use autocluster::NodeName;
use autocluster::backend::dns::DnsConfig;
use autocluster::backend::kubernetes::{self, KubernetesConfig};
use autocluster_fuzz::check;
use libfuzzer_sys::fuzz_target;

/// A name that parsed must print as itself and parse back to the same name.
fn round_trips(name: &NodeName) {
    let again = NodeName::new(name.as_str()).expect("a node name prints as a valid name");
    assert_eq!(&again, name);
    assert_eq!(name.as_str(), format!("{}@{}", name.alive(), name.host()));
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, text)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(text) else {
        return;
    };
    let n = text.len();
    match which % 4 {
        0 => {
            if let Ok(name) = check("node name", n, || NodeName::new(text)) {
                round_trips(&name);
                if let Some(seed) = kubernetes::statefulset_seed(&name, u32::from(which >> 2)) {
                    round_trips(&seed);
                    assert_eq!(seed.alive(), name.alive());
                    assert_eq!(
                        kubernetes::ordinal(seed.host()),
                        Some(u32::from(which >> 2))
                    );
                }
            }
        }
        1 => {
            let config = DnsConfig::new("fuzz.local")
                .with_long_names(which & 4 != 0)
                .with_node_prefix(if which & 8 != 0 { "rabbit" } else { "node" });
            if let Ok(name) = check("dns host name", n, || config.node_name(text)) {
                round_trips(&name);
                if which & 4 == 0 {
                    assert!(
                        !name.host().contains('.'),
                        "a short name keeps one label: {name}"
                    );
                }
            }
        }
        2 => {
            let mut config = KubernetesConfig::new("rabbitmq");
            if which & 4 != 0 {
                config.hostname_suffix = ".rabbitmq-headless.default.svc.cluster.local".into();
            }
            if let Ok(name) = check("kubernetes address", n, || config.node_name(text)) {
                round_trips(&name);
                assert!(name.host().ends_with(config.hostname_suffix.as_str()));
            }
        }
        _ => {
            if let Some(ordinal) = kubernetes::ordinal(text) {
                // The digits after the last '-' of the first label, printed back.
                let label = text.split('.').next().unwrap_or_default();
                assert!(
                    label.ends_with(&format!("-{ordinal}")),
                    "{text:?} -> {ordinal}"
                );
            }
        }
    }
});
