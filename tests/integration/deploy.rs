//! The deployment files in `deploy/`. Kubernetes cannot run here, so:
//!
//! * every manifest document is read by its kind into k8s-openapi's type, written back
//!   and compared with its source as JSON: k8s-openapi drops what it does not know, so
//!   a misspelt or misplaced key fails;
//! * the references between documents are followed (the StatefulSet's headless Service,
//!   the ConfigMap and Secret keys its volumes mount, the RBAC the Kubernetes backend
//!   needs, the etcd members the agent is told of, the probes' ports and paths);
//! * the agent's command line in each manifest, in the container file and in the
//!   systemd unit is run with the real binary's `--check-config`, with the files its
//!   volumes would mount and the environment Kubernetes would give it.

#![cfg(all(feature = "cli", feature = "etcd", feature = "kubernetes"))]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Service, ServiceAccount};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use serde_json::Value;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// The paths the agent serves (`src/bin/autocluster/http.rs`).
const READY_PATH: &str = "/readyz";
const LIVE_PATH: &str = "/healthz";

fn read(relative: &str) -> String {
    let path = Path::new(ROOT).join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every document of a YAML file, as JSON.
fn documents(relative: &str) -> Vec<Value> {
    serde_saphyr::from_multiple::<Value>(&read(relative))
        .unwrap_or_else(|e| panic!("{relative}: not YAML: {e}"))
}

/// `doc` read into the k8s-openapi type of its kind and written back.
fn round_trip(doc: &Value) -> Result<Value, String> {
    fn through<T: serde::de::DeserializeOwned + serde::Serialize>(
        doc: &Value,
    ) -> Result<Value, String> {
        let typed: T = serde_json::from_value(doc.clone()).map_err(|e| e.to_string())?;
        serde_json::to_value(&typed).map_err(|e| e.to_string())
    }
    match doc["kind"].as_str() {
        Some("Namespace") => through::<Namespace>(doc),
        Some("ServiceAccount") => through::<ServiceAccount>(doc),
        Some("Role") => through::<Role>(doc),
        Some("RoleBinding") => through::<RoleBinding>(doc),
        Some("ConfigMap") => through::<ConfigMap>(doc),
        Some("Service") => through::<Service>(doc),
        Some("PodDisruptionBudget") => through::<PodDisruptionBudget>(doc),
        Some("StatefulSet") => through::<StatefulSet>(doc),
        other => Err(format!("no k8s-openapi type for the kind {other:?}")),
    }
}

/// The keys of `source` that `written` lost or changed, as paths. `written` may add
/// keys (k8s-openapi writes `apiVersion` and `kind` into nested templates).
fn lost(source: &Value, written: &Value, path: &str, out: &mut Vec<String>) {
    match (source, written) {
        (Value::Object(a), Value::Object(b)) => {
            for (key, value) in a {
                let here = format!("{path}.{key}");
                match b.get(key) {
                    Some(w) => lost(value, w, &here, out),
                    None => out.push(here),
                }
            }
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => {
            for (i, (v, w)) in a.iter().zip(b).enumerate() {
                lost(v, w, &format!("{path}[{i}]"), out);
            }
        }
        _ if source == written => {}
        _ => out.push(format!("{path}: {source} became {written}")),
    }
}

fn lost_keys(doc: &Value) -> Vec<String> {
    let written = round_trip(doc).unwrap_or_else(|e| {
        panic!(
            "{} {}: {e}",
            doc["kind"],
            doc["metadata"]["name"].as_str().unwrap_or("?")
        )
    });
    let mut out = Vec::new();
    lost(doc, &written, "", &mut out);
    out
}

/// The documents of one deployment variant, by kind and name.
struct Variant {
    dir: &'static str,
    docs: Vec<Value>,
}

impl Variant {
    fn load(dir: &'static str, files: &[&str]) -> Variant {
        let mut docs = Vec::new();
        for file in files {
            docs.extend(documents(&format!("{dir}/{file}")));
        }
        Variant { dir, docs }
    }

    fn get(&self, kind: &str, name: &str) -> &Value {
        self.docs
            .iter()
            .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("{}: no {kind} {name}", self.dir))
    }
}

fn str_of<'a>(v: &'a Value, what: &str) -> &'a str {
    v.as_str()
        .unwrap_or_else(|| panic!("{what}: expected a string, found {v}"))
}

fn array_of<'a>(v: &'a Value, what: &str) -> &'a Vec<Value> {
    v.as_array()
        .unwrap_or_else(|| panic!("{what}: expected a list, found {v}"))
}

fn container<'a>(pod: &'a Value, name: &str) -> &'a Value {
    array_of(&pod["containers"], "containers")
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no container {name}"))
}

/// The value that follows `flag` in `args`.
fn flag<'a>(args: &'a [String], flag: &str) -> &'a str {
    let i = args
        .iter()
        .position(|a| a == flag)
        .unwrap_or_else(|| panic!("{flag} missing from {args:?}"));
    args.get(i + 1)
        .unwrap_or_else(|| panic!("{flag} without a value"))
}

fn port_of(http: &str) -> u64 {
    http.rsplit_once(':')
        .and_then(|(_, p)| p.parse().ok())
        .unwrap_or_else(|| panic!("--http {http}: no port"))
}

/// A probe's port, by name or number, as a number of `c`'s ports.
fn probe_port(c: &Value, port: &Value) -> u64 {
    match port {
        Value::Number(n) => n.as_u64().expect("a port number"),
        Value::String(name) => array_of(&c["ports"], "ports")
            .iter()
            .find(|p| p["name"] == *name)
            .and_then(|p| p["containerPort"].as_u64())
            .unwrap_or_else(|| panic!("the probe's port {name} is not a port of {}", c["name"])),
        other => panic!("probe port {other}"),
    }
}

/// A container's environment as Kubernetes gives it to the pod `pod_name`:
/// `metadata.name` field references and `$(VAR)` expansion of earlier variables.
fn environment(c: &Value, pod_name: &str) -> BTreeMap<String, String> {
    let mut env: BTreeMap<String, String> = BTreeMap::new();
    for var in c["env"].as_array().into_iter().flatten() {
        let name = str_of(&var["name"], "env name").to_owned();
        let value = if let Some(v) = var["value"].as_str() {
            let mut v = v.to_owned();
            for (k, known) in &env {
                v = v.replace(&format!("$({k})"), known);
            }
            v
        } else if var["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name" {
            pod_name.to_owned()
        } else {
            panic!("env {name}: unsupported source {var}");
        };
        env.insert(name, value);
    }
    env
}

fn write_private(path: &Path, text: &str) {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::write(path, text).expect("write");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
}

/// Builds, under `root`, a directory per volume of the pod as the kubelet would fill
/// it: ConfigMap items, Secret items (a cookie each, with the volume's mode and the
/// group read `fsGroup` adds), an empty directory per volume claim; then runs the init
/// containers (`install -m MODE SOURCE TARGET`) on them.
fn pod_volumes(variant: &Variant, set: &Value, root: &Path) -> BTreeMap<String, PathBuf> {
    use std::os::unix::fs::PermissionsExt as _;
    let pod = &set["spec"]["template"]["spec"];
    let fs_group = pod["securityContext"]["fsGroup"].is_number();
    let mut dirs = BTreeMap::new();
    for volume in array_of(&pod["volumes"], "volumes") {
        let name = str_of(&volume["name"], "volume name");
        let dir = root.join(format!("volume-{name}"));
        std::fs::create_dir_all(&dir).expect("mkdir");
        if let Some(map_name) = volume["configMap"]["name"].as_str() {
            let data = &variant.get("ConfigMap", map_name)["data"];
            for item in array_of(&volume["configMap"]["items"], "configMap items") {
                let key = str_of(&item["key"], "item key");
                let text = str_of(&data[key], &format!("ConfigMap {map_name} key {key}"));
                std::fs::write(dir.join(str_of(&item["path"], "item path")), text).expect("write");
            }
        } else if volume["secret"].is_object() {
            // The Secret is the operator's (its value is never in the repository): its
            // keys are named in `items`, each a cookie.
            let mode = volume["secret"]["defaultMode"].as_u64().unwrap_or(0o644) as u32;
            let mode = if fs_group { mode | 0o040 } else { mode };
            for item in array_of(&volume["secret"]["items"], "secret items") {
                let path = dir.join(str_of(&item["path"], "item path"));
                std::fs::write(&path, "a-cookie-for-the-deploy-test").expect("write");
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
                    .expect("chmod");
            }
        } else {
            panic!("volume {name}: neither a ConfigMap nor a Secret");
        }
        dirs.insert(name.to_owned(), dir);
    }
    for claim in array_of(&set["spec"]["volumeClaimTemplates"], "volumeClaimTemplates") {
        let name = str_of(&claim["metadata"]["name"], "claim name");
        let dir = root.join(format!("claim-{name}"));
        std::fs::create_dir_all(&dir).expect("mkdir");
        assert!(dirs.insert(name.to_owned(), dir).is_none(), "{name} twice");
    }
    for init in pod["initContainers"].as_array().into_iter().flatten() {
        let command: Vec<String> = array_of(&init["command"], "init command")
            .iter()
            .map(|a| str_of(a, "arg").to_owned())
            .collect();
        let [install, m, mode, from, to] = command.as_slice() else {
            panic!("init container {}: {command:?}", init["name"]);
        };
        assert_eq!((install.as_str(), m.as_str()), ("install", "-m"));
        let mounts = container_mounts(init, &dirs);
        let from = map_path(from, &mounts);
        let to = map_path(to, &mounts);
        std::fs::copy(&from, &to).unwrap_or_else(|e| panic!("install {from} {to}: {e}"));
        let mode = u32::from_str_radix(mode, 8).expect("an octal mode");
        std::fs::set_permissions(&to, std::fs::Permissions::from_mode(mode)).expect("chmod");
    }
    dirs
}

/// Each mount path of container `c`, with the volume directory standing for it.
fn container_mounts(c: &Value, dirs: &BTreeMap<String, PathBuf>) -> Vec<(String, PathBuf)> {
    array_of(&c["volumeMounts"], "volumeMounts")
        .iter()
        .map(|mount| {
            let name = str_of(&mount["name"], "volumeMount name");
            let dir = dirs
                .get(name)
                .unwrap_or_else(|| panic!("volumeMount {name}: no such volume"));
            let dir = match mount["subPath"].as_str() {
                Some(sub) => dir.join(sub),
                None => dir.clone(),
            };
            (str_of(&mount["mountPath"], "mountPath").to_owned(), dir)
        })
        .collect()
}

/// A path inside the container, as a path here (itself when under no mount).
fn map_path(path: &str, mounts: &[(String, PathBuf)]) -> String {
    for (mount, dir) in mounts {
        if path == mount {
            return dir.display().to_string();
        }
        if let Some(rest) = path.strip_prefix(&format!("{mount}/")) {
            return dir.join(rest).display().to_string();
        }
    }
    path.to_owned()
}

/// Runs the real binary with `args` and `--check-config`; returns its output.
fn check_config(args: &[String], env: &BTreeMap<String, String>, home: &Path) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_autocluster"))
        .args(args)
        .arg("--check-config")
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", home)
        .envs(env)
        .output()
        .expect("running autocluster");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "autocluster {args:?} --check-config: {}\n{stdout}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// The `cluster_formation` lines of a rabbitmq.conf, as key -> value.
fn conf_keys(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .filter(|(k, _)| k.starts_with("cluster_formation."))
        .collect()
}

/// The container file's instructions: (instruction, rest of the line), with
/// continuation lines joined.
fn dockerfile() -> Vec<(String, String)> {
    let text = read("deploy/Dockerfile");
    let mut out = Vec::new();
    let mut pending = String::new();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') || line.is_empty() && pending.is_empty() {
            continue;
        }
        pending.push_str(line.trim_end_matches('\\'));
        pending.push(' ');
        if line.ends_with('\\') {
            continue;
        }
        let full = std::mem::take(&mut pending);
        let (instruction, rest) = full.trim().split_once(' ').expect("an instruction");
        out.push((instruction.to_owned(), rest.trim().to_owned()));
    }
    out
}

fn instruction(file: &[(String, String)], name: &str) -> String {
    let found: Vec<&String> = file
        .iter()
        .filter(|(i, _)| i == name)
        .map(|(_, r)| r)
        .collect();
    assert_eq!(found.len(), 1, "exactly one {name} in deploy/Dockerfile");
    found[0].clone()
}

/// What every RabbitMQ variant must hold: the StatefulSet with the agent beside the
/// broker, its headless Service, probes, ports, mounts, and a command line the real
/// binary accepts. Returns the agent's `--check-config` output.
fn check_rabbitmq_variant(variant: &Variant, backend: &str) -> String {
    let set = variant.get("StatefulSet", "rabbitmq");
    let spec = &set["spec"];
    assert_eq!(spec["podManagementPolicy"], "Parallel");
    let pod = &spec["template"]["spec"];
    let labels = &spec["template"]["metadata"]["labels"];
    for (k, v) in spec["selector"]["matchLabels"]
        .as_object()
        .expect("matchLabels")
    {
        assert_eq!(&labels[k], v, "the selector matches the pod's labels");
    }

    // The headless Service naming the brokers, published before they are ready.
    let headless = variant.get("Service", str_of(&spec["serviceName"], "serviceName"));
    assert_eq!(headless["spec"]["clusterIP"], "None");
    assert_eq!(headless["spec"]["publishNotReadyAddresses"], true);
    for (k, v) in headless["spec"]["selector"].as_object().expect("selector") {
        assert_eq!(&labels[k], v, "the headless Service selects the pods");
    }
    let service_ports: Vec<u64> = array_of(&headless["spec"]["ports"], "ports")
        .iter()
        .filter_map(|p| p["port"].as_u64())
        .collect();
    let broker = container(pod, "rabbitmq");
    for port in [4369, 25672] {
        assert!(
            service_ports.contains(&port),
            "headless Service port {port}"
        );
        assert!(
            array_of(&broker["ports"], "ports")
                .iter()
                .any(|p| p["containerPort"] == port),
            "broker port {port}"
        );
    }

    // The agent: the image's entry point, the HTTP port its probes and metrics use.
    let agent = container(pod, "autocluster");
    assert!(
        agent.get("command").is_none(),
        "the agent runs the image's ENTRYPOINT"
    );
    let args: Vec<String> = array_of(&agent["args"], "args")
        .iter()
        .map(|a| str_of(a, "arg").to_owned())
        .collect();
    assert_eq!(args[0], "agent");
    let port = port_of(flag(&args, "--http"));
    assert!(
        array_of(&agent["ports"], "ports")
            .iter()
            .any(|p| p["containerPort"] == port),
        "the agent's container port is its --http port {port}"
    );
    let ready = &agent["readinessProbe"]["httpGet"];
    assert_eq!(ready["path"], READY_PATH);
    assert_eq!(probe_port(agent, &ready["port"]), port);
    let live = &agent["livenessProbe"]["httpGet"];
    assert_eq!(live["path"], LIVE_PATH);
    assert_eq!(probe_port(agent, &live["port"]), port);
    let annotations = &spec["template"]["metadata"]["annotations"];
    assert_eq!(annotations["prometheus.io/port"], port.to_string());
    assert_eq!(annotations["prometheus.io/path"], "/metrics");

    // Both containers name the same node, the broker with long names if it has dots.
    let pod_name = format!("{}-0", str_of(&set["metadata"]["name"], "name"));
    let broker_env = environment(broker, &pod_name);
    let agent_env = environment(agent, &pod_name);
    let node = &broker_env["RABBITMQ_NODENAME"];
    assert_eq!(&agent_env["RABBITMQ_NODENAME"], node);
    if node.contains('.') {
        assert_eq!(broker_env["RABBITMQ_USE_LONGNAME"], "true");
    }
    let namespace = str_of(&set["metadata"]["namespace"], "namespace");
    assert!(
        node.ends_with(&format!(
            ".{}.{namespace}.svc.cluster.local",
            headless["metadata"]["name"].as_str().expect("name")
        )),
        "{node} resolves through the headless Service"
    );

    // The broker's own configuration keeps RabbitMQ's discovery off.
    let config = variant.get("ConfigMap", "rabbitmq");
    let broker_conf = str_of(&config["data"]["rabbitmq.conf"], "rabbitmq.conf");
    assert!(
        conf_keys(broker_conf).is_empty(),
        "the broker's rabbitmq.conf has no cluster_formation keys"
    );

    // The command line, with the mounted files, through the real binary.
    let dir = tempfile::tempdir().expect("tempdir");
    let volumes = pod_volumes(variant, set, dir.path());
    let mounts = container_mounts(agent, &volumes);
    let args: Vec<String> = args.iter().map(|a| map_path(a, &mounts)).collect();
    let out = check_config(&args, &agent_env, dir.path());
    assert!(out.contains(&format!("({backend} backend")), "{out}");
    assert!(out.contains(&format!("node {node},")), "{out}");
    out
}

#[test]
fn every_manifest_survives_a_round_trip_through_the_kubernetes_types() {
    let files = [
        "deploy/kubernetes/kubernetes/rabbitmq.yaml",
        "deploy/kubernetes/etcd/rabbitmq.yaml",
        "deploy/kubernetes/etcd/etcd.yaml",
    ];
    let on_disk = |dir: &str| -> Vec<String> {
        let mut found: Vec<String> = std::fs::read_dir(Path::new(ROOT).join(dir))
            .expect("deploy dir")
            .map(|e| format!("{dir}/{}", e.expect("entry").file_name().to_string_lossy()))
            .collect();
        found.sort();
        found
    };
    let mut listed: Vec<String> = [
        on_disk("deploy/kubernetes/kubernetes"),
        on_disk("deploy/kubernetes/etcd"),
    ]
    .concat();
    listed.sort();
    let mut expected: Vec<String> = files.iter().map(|f| f.to_string()).collect();
    expected.sort();
    assert_eq!(listed, expected, "every manifest is checked here");

    let mut count = 0;
    for file in files {
        for doc in documents(file) {
            let lost = lost_keys(&doc);
            assert!(
                lost.is_empty(),
                "{file}: {} {}: k8s-openapi lost {lost:?}",
                doc["kind"],
                doc["metadata"]["name"]
            );
            if doc["kind"] != "Namespace" {
                assert_eq!(doc["metadata"]["namespace"], "rabbitmq", "{file}: {doc}");
            }
            count += 1;
        }
    }
    assert!(count >= 15, "{count} documents");

    // The comparison catches what k8s-openapi drops: a misspelt key.
    let mut headless = Variant::load("deploy/kubernetes/etcd", &["rabbitmq.yaml"])
        .get("Service", "rabbitmq-nodes")
        .clone();
    let spec = headless["spec"].as_object_mut().expect("spec");
    let v = spec.remove("publishNotReadyAddresses").expect("the key");
    spec.insert("publishNotReadyAdresses".into(), v);
    assert_eq!(
        lost_keys(&headless),
        vec![".spec.publishNotReadyAdresses".to_owned()]
    );
}

#[test]
fn the_kubernetes_variant_grants_what_the_backend_calls_and_names_its_nodes() {
    let variant = Variant::load("deploy/kubernetes/kubernetes", &["rabbitmq.yaml"]);
    let out = check_rabbitmq_variant(&variant, "kubernetes");
    assert!(out.contains("node rabbit@rabbitmq-0.rabbitmq-nodes.rabbitmq.svc.cluster.local,"));

    // The backend lists the headless Service's pods under the names the brokers use.
    let conf = conf_keys(str_of(
        &variant.get("ConfigMap", "rabbitmq")["data"]["autocluster.conf"],
        "autocluster.conf",
    ));
    let set = variant.get("StatefulSet", "rabbitmq");
    assert_eq!(
        conf["cluster_formation.k8s.service_name"],
        set["spec"]["serviceName"]
    );
    assert_eq!(conf["cluster_formation.k8s.address_type"], "hostname");
    let pod = &set["spec"]["template"]["spec"];
    let node = &environment(container(pod, "rabbitmq"), "rabbitmq-0")["RABBITMQ_NODENAME"];
    assert_eq!(
        *node,
        format!(
            "rabbit@rabbitmq-0{}",
            conf["cluster_formation.k8s.hostname_suffix"]
        )
    );

    // RBAC: EndpointSlices list, Endpoints get, Leases get/create/update, bound to the
    // pods' ServiceAccount.
    let account = str_of(&pod["serviceAccountName"], "serviceAccountName");
    variant.get("ServiceAccount", account);
    let binding = variant.get("RoleBinding", "rabbitmq-autocluster");
    let role = variant.get("Role", str_of(&binding["roleRef"]["name"], "roleRef"));
    assert_eq!(binding["roleRef"]["kind"], "Role");
    assert!(
        array_of(&binding["subjects"], "subjects")
            .iter()
            .any(|s| s["kind"] == "ServiceAccount" && s["name"] == account),
        "the Role is bound to the pods' ServiceAccount"
    );
    let grants = |group: &str, resource: &str, verb: &str| {
        array_of(&role["rules"], "rules").iter().any(|r| {
            let has = |key: &str, want: &str| {
                r[key]
                    .as_array()
                    .is_some_and(|l| l.iter().any(|x| x == want))
            };
            has("apiGroups", group) && has("resources", resource) && has("verbs", verb)
        })
    };
    for (group, resource, verb) in [
        ("discovery.k8s.io", "endpointslices", "list"),
        ("", "endpoints", "get"),
        ("coordination.k8s.io", "leases", "get"),
        ("coordination.k8s.io", "leases", "create"),
        ("coordination.k8s.io", "leases", "update"),
    ] {
        assert!(grants(group, resource, verb), "{verb} {resource}");
    }
    assert!(
        !grants("coordination.k8s.io", "leases", "delete"),
        "least privilege"
    );
}

#[test]
fn the_etcd_variant_points_its_agents_at_every_etcd_member() {
    let variant = Variant::load("deploy/kubernetes/etcd", &["rabbitmq.yaml", "etcd.yaml"]);
    check_rabbitmq_variant(&variant, "etcd");
    let set = variant.get("StatefulSet", "rabbitmq");
    assert_eq!(
        set["spec"]["template"]["spec"]["automountServiceAccountToken"], false,
        "no API token where the API is not used"
    );

    let etcd = variant.get("StatefulSet", "etcd");
    let service = variant.get(
        "Service",
        str_of(&etcd["spec"]["serviceName"], "serviceName"),
    );
    assert_eq!(service["spec"]["clusterIP"], "None");
    assert_eq!(service["spec"]["publishNotReadyAddresses"], true);
    let replicas = etcd["spec"]["replicas"].as_u64().expect("replicas");
    let members: Vec<String> = (0..replicas)
        .map(|i| format!("etcd-{i}.etcd.rabbitmq.svc.cluster.local:2379"))
        .collect();
    let conf = conf_keys(str_of(
        &variant.get("ConfigMap", "rabbitmq")["data"]["autocluster.conf"],
        "autocluster.conf",
    ));
    let mut endpoints: Vec<String> = conf
        .iter()
        .filter(|(k, _)| k.starts_with("cluster_formation.etcd.endpoints."))
        .map(|(_, v)| v.clone())
        .collect();
    endpoints.sort();
    assert_eq!(endpoints, members);

    // The members' own view: the same names, the client port served.
    let args: Vec<&str> = array_of(
        &container(&etcd["spec"]["template"]["spec"], "etcd")["args"],
        "args",
    )
    .iter()
    .map(|a| str_of(a, "arg"))
    .collect();
    let initial = args
        .iter()
        .find_map(|a| a.strip_prefix("--initial-cluster="))
        .expect("--initial-cluster");
    assert_eq!(initial.split(',').count() as u64, replicas);
    for m in &members {
        let host = m.trim_end_matches(":2379");
        assert!(initial.contains(&format!("=http://{host}:2380")));
    }
    assert!(args.contains(&"--listen-client-urls=http://0.0.0.0:2379"));
}

#[test]
fn the_container_file_and_the_systemd_unit_run_a_command_line_the_agent_accepts() {
    let file = dockerfile();
    let from_json = |text: &str| -> Vec<String> {
        serde_json::from_str(text).unwrap_or_else(|e| panic!("exec form {text}: {e}"))
    };
    let entrypoint = from_json(&instruction(&file, "ENTRYPOINT"));
    let cmd = from_json(&instruction(&file, "CMD"));
    let expose: u64 = instruction(&file, "EXPOSE").parse().expect("EXPOSE PORT");

    // The binary is built with the features the manifests' backends need, and copied
    // where the entry point runs it.
    let install = file
        .iter()
        .find(|(i, r)| i == "RUN" && r.contains("cargo install"))
        .map(|(_, r)| r.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
        .expect("RUN cargo install");
    let features: Vec<&str> = flag(&install, "--features").split(',').collect();
    let manifest = read("Cargo.toml");
    for f in ["cli", "etcd", "kubernetes"] {
        assert!(features.contains(&f), "the image has the {f} feature");
    }
    for f in &features {
        assert!(manifest.contains(&format!("\n{f} = [")), "no feature {f}");
    }
    let root = flag(&install, "--root");
    assert!(
        file.iter().any(|(i, r)| i == "COPY"
            && *r == format!("--from=build {root}/bin/autocluster {}", entrypoint[0])),
        "the installed binary is copied to the entry point"
    );
    assert_eq!(entrypoint.len(), 1);

    // The default command's port and config path are the manifests'.
    assert_eq!(cmd[0], "agent");
    assert_eq!(port_of(flag(&cmd, "--http")), expose);
    let variant = Variant::load("deploy/kubernetes/etcd", &["rabbitmq.yaml"]);
    let pod = &variant.get("StatefulSet", "rabbitmq")["spec"]["template"]["spec"];
    let agent = container(pod, "autocluster");
    let manifest_args: Vec<String> = array_of(&agent["args"], "args")
        .iter()
        .map(|a| str_of(a, "arg").to_owned())
        .collect();
    assert_eq!(flag(&cmd, "--config"), flag(&manifest_args, "--config"));
    assert_eq!(port_of(flag(&manifest_args, "--http")), expose);

    // Both command lines through the real binary, with an etcd configuration where
    // they read theirs and a cookie given on the side (its default path is the host's).
    let dir = tempfile::tempdir().expect("tempdir");
    let conf = dir.path().join("autocluster.conf");
    std::fs::write(
        &conf,
        str_of(
            &variant.get("ConfigMap", "rabbitmq")["data"]["autocluster.conf"],
            "conf",
        ),
    )
    .expect("write");
    let cookie = dir.path().join("cookie");
    write_private(&cookie, "a-cookie-for-the-deploy-test");
    let env: BTreeMap<String, String> =
        [("RABBITMQ_NODENAME".to_owned(), "rabbit@vm-1".to_owned())].into();
    let run = |args: &[String], config: &str| {
        let mut args: Vec<String> = args
            .iter()
            .map(|a| {
                if a == config {
                    conf.display().to_string()
                } else {
                    a.clone()
                }
            })
            .collect();
        args.extend(["--cookie-file".to_owned(), cookie.display().to_string()]);
        check_config(&args, &env, dir.path())
    };
    let out = run(&cmd, flag(&cmd, "--config"));
    assert!(
        out.contains("(etcd backend") && out.contains("node rabbit@vm-1,"),
        "{out}"
    );

    let unit = read("deploy/systemd/autocluster.service");
    let exec: Vec<String> = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .expect("ExecStart")
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    assert_eq!(exec[0], "/usr/local/bin/autocluster");
    assert!(
        unit.contains("--root /usr/local"),
        "the unit says how to install there"
    );
    assert!(
        unit.contains("\nUser=rabbitmq\n"),
        "the agent reads the broker's cookie"
    );
    assert!(
        unit.contains("\nPartOf=rabbitmq-server.service\n")
            && unit.contains("\nWantedBy=multi-user.target rabbitmq-server.service\n"),
        "the agent starts and stops with the broker"
    );
    assert!(
        unit.contains("\nRestart=on-failure\n")
            && unit.contains("\nRestartPreventExitStatus=2 3\n"),
        "failures (exit 1) are restarted, usage errors (2, below) and refusals an operator \
         must resolve (3, tests/integration/agent_cli.rs) are not"
    );
    let out = run(&exec[1..], flag(&exec, "--config"));
    assert!(out.contains("(etcd backend"), "{out}");

    // A flag the agent does not know is a usage error: the check above can fail.
    let bad = Command::new(env!("CARGO_BIN_EXE_autocluster"))
        .args(["agent", "--no-such-flag"])
        .output()
        .expect("running autocluster");
    assert_eq!(bad.status.code(), Some(2));
}
