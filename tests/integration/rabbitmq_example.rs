//! The `rabbitmq_cluster` example, as a user runs it: three brokers of the peer
//! environment (RabbitMQ 3.10, 4.0 or 4.3), booted standalone, are formed into one
//! cluster by `rabbitmq_cluster --node A --node B --node C --etcd-endpoint URL`, and the
//! environment's own `rabbitmqctl cluster_status` agrees on every broker; and a broker
//! holding messages is refused with the data named and a non-zero exit, its messages
//! kept, until `--allow-reset`.

use std::time::Duration;

use autocluster::backend::etcd::{EtcdBackend, EtcdConfig};
use autocluster::backend::{Backend, Registration};

use crate::common::{Epmd, EtcdServer, RabbitNode, RabbitOptions, example, peers};

/// Runs `rabbitmq_cluster` on `brokers`, with `extra` arguments: its exit status and
/// output.
async fn run_example(
    brokers: &[&RabbitNode],
    etcd: &EtcdServer,
    epmd: &Epmd,
    extra: &[&str],
) -> (std::process::ExitStatus, String) {
    let mut command = tokio::process::Command::new(example("rabbitmq_cluster"));
    for b in brokers {
        command.args(["--node", b.node()]);
    }
    let output = tokio::time::timeout(
        Duration::from_secs(120),
        command
            .args(["--cookie", brokers[0].cookie()])
            .args(["--etcd-endpoint", &etcd.endpoint()])
            .args(extra)
            .env("ERL_EPMD_PORT", epmd.port().to_string())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("rabbitmq_cluster did not exit within 120 s")
    .expect("rabbitmq_cluster runs");
    (
        output.status,
        format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
    )
}

/// A broker whose durable queue holds persistent, confirmed messages is not joined to a
/// running cluster: the example exits with 1 and names the queue, and every message is
/// still there; with `--allow-reset` it joins (and the queue is gone).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rabbitmq_cluster_example_refuses_a_broker_holding_data() {
    let _turn = crate::rabbitmq_formation::RABBIT_TURN.lock().await;
    let etcd = EtcdServer::start().await;
    let epmd = Epmd::start().await;
    let brokers = RabbitNode::start_many(2, RabbitOptions::new().epmd_port(epmd.port())).await;
    let (empty, full) = (&brokers[0], &brokers[1]);
    // `empty` runs and is registered (by a long-running agent, say): it is the seed.
    // `full` holds messages.
    let backend = EtcdBackend::new(EtcdConfig {
        endpoints: vec![etcd.endpoint()],
        ..EtcdConfig::default()
    })
    .unwrap();
    let register = || {
        backend.register(Registration::new(
            empty.node().parse().unwrap(),
            Duration::from_secs(60),
        ))
    };
    let _registered = register().await.unwrap();
    full.publish_confirmed("invoices", "classic", 50).await;
    let (status, out) = run_example(&[empty, full], &etcd, &epmd, &[]).await;
    assert_eq!(status.code(), Some(1), "{out}");
    assert!(out.contains("invoices"), "the error names the queue: {out}");
    assert!(
        out.contains("--allow-reset"),
        "the error says what to do: {out}"
    );
    assert_eq!(full.message_count("invoices").await, Some(50));
    // The example's agent for `empty` deregistered it on its way out.
    let _registered = register().await.unwrap();
    let (status, out) = run_example(&[empty, full], &etcd, &epmd, &["--allow-reset"]).await;
    assert!(status.success(), "{status}: {out}");
    assert!(out.contains("one cluster of 2 nodes"), "{out}");
    let (ok, queues) = full
        .rabbitmqctl(
            &["list_queues", "name", "--quiet", "--no-table-headers"],
            Duration::from_secs(60),
        )
        .await;
    assert!(ok, "{queues}");
    assert!(
        !queues.contains("invoices"),
        "the reset took the queue: {queues}\n{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rabbitmq_cluster_example_forms_three_brokers_and_rabbitmqctl_agrees() {
    let _turn = crate::rabbitmq_formation::RABBIT_TURN.lock().await;
    let etcd = EtcdServer::start().await;
    let epmd = Epmd::start().await;
    let brokers = RabbitNode::start_many(3, RabbitOptions::new().epmd_port(epmd.port())).await;
    let all: Vec<&RabbitNode> = brokers.iter().collect();
    let (status, stdout) = run_example(&all, &etcd, &epmd, &[]).await;
    assert!(
        status.success(),
        "rabbitmq_cluster failed ({status}):\n{stdout}"
    );
    assert!(stdout.contains("one cluster of 3 nodes"), "{stdout}");
    assert!(
        stdout.contains(&format!("(RabbitMQ {})", peers().rabbitmq_version())),
        "{stdout}"
    );
    for b in &brokers {
        let (ok, status) = b
            .rabbitmqctl(
                &["cluster_status", "--formatter", "json"],
                Duration::from_secs(60),
            )
            .await;
        assert!(ok, "{}: {status}", b.node());
        let json_start = status.find('{').unwrap_or(0);
        let status: serde_json::Value = serde_json::from_str(&status[json_start..])
            .unwrap_or_else(|e| panic!("{}: {e}: {status}", b.node()));
        let mut running: Vec<String> = status["running_nodes"]
            .as_array()
            .unwrap_or_else(|| panic!("{}: {status}", b.node()))
            .iter()
            .filter_map(|n| n.as_str().map(str::to_owned))
            .collect();
        running.sort();
        let mut all: Vec<String> = brokers.iter().map(|b| b.node().to_owned()).collect();
        all.sort();
        assert_eq!(running, all, "{}: {status}", b.node());
        let partitions = &status["partitions"];
        assert!(
            partitions.as_object().is_some_and(|p| p.is_empty())
                || partitions.as_array().is_some_and(|p| p.is_empty()),
            "{}: {status}",
            b.node()
        );
    }
}
