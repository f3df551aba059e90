//! The deployment files agree with the host: every environment variable they
//! set is one the host reads, ports and paths match what it listens on and
//! serves, and the modules directory is where the image puts the modules.
//! They also keep their safe defaults: no working secret in any shipped file,
//! a NetworkPolicy in front of the pods, and CORS as compose sets it.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::collections::BTreeSet;

use notification_host::config::env;
use serde_yaml_ng::Value;

fn repo(path: &str) -> String {
    std::fs::read_to_string(format!("{}/../{path}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

fn yaml_docs(path: &str) -> Vec<Value> {
    let text = repo(path);
    serde_yaml_ng::Deserializer::from_str(&text).map(|d| serde::Deserialize::deserialize(d).unwrap()).collect()
}

fn served_paths() -> BTreeSet<String> {
    let doc = serde_json::to_value(notification_host::http::openapi()).unwrap();
    doc["paths"].as_object().unwrap().keys().cloned().collect()
}

fn port_of(addr: &str) -> u16 {
    addr.rsplit(':').next().unwrap().parse().unwrap()
}

fn assert_known(names: impl IntoIterator<Item = String>, file: &str) {
    for name in names {
        assert!(env::ALL.contains(&name.as_str()), "{file} sets {name}, which the host does not read");
    }
}

const DEFAULT_HTTP_PORT: u16 = 8080;

#[test]
fn dockerfile_matches_the_host() {
    let text = repo("Dockerfile");
    // ENV block: NAME=value pairs after `ENV` up to the first line without a continuation.
    let env_block: String = text
        .split("\nENV ")
        .nth(1)
        .unwrap()
        .lines()
        .take_while(|l| !l.trim().is_empty() && !l.starts_with("EXPOSE"))
        .collect::<Vec<_>>()
        .join(" ");
    let pairs: Vec<(String, String)> = env_block
        .split_whitespace()
        .filter_map(|t| t.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    assert_known(pairs.iter().map(|(k, _)| k.clone()), "Dockerfile");
    let get = |k: &str| pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()).unwrap();
    assert_eq!(get("KAFKA_BOOTSTRAP_SERVERS"), "kafka:9092", "the original service's default");
    let port = port_of(&get("HTTP_ADDR"));
    assert!(text.contains(&format!("EXPOSE {port}")));
    assert!(text.contains(&format!("http://127.0.0.1:{port}/health")));
    assert!(served_paths().contains("/health"));
    let modules = get("NORMALIZERS_DIR");
    assert!(text.contains(&format!("/out/normalizers {modules}")), "the image's modules land in NORMALIZERS_DIR");
    assert!(text.contains("USER 10001"));
}

#[test]
fn compose_matches_the_host() {
    let doc = &yaml_docs("docker-compose.yml")[0];
    let service = &doc["services"]["notification-service"];
    let environment = service["environment"].as_mapping().unwrap();
    let names: Vec<String> = environment.keys().map(|k| k.as_str().unwrap().to_owned()).collect();
    assert_known(names, "docker-compose.yml");
    let get = |k: &str| environment.get(k).unwrap().as_str().unwrap().to_owned();
    let port = port_of(&get("HTTP_ADDR"));
    let ports: Vec<&str> = service["ports"].as_sequence().unwrap().iter().map(|p| p.as_str().unwrap()).collect();
    assert!(ports.iter().any(|p| p.ends_with(&format!(":{port}"))), "{ports:?}");
    let volumes: Vec<&str> = service["volumes"].as_sequence().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    assert!(volumes.iter().any(|v| v.split(':').nth(1) == Some(get("NORMALIZERS_DIR").as_str())), "{volumes:?}");
    assert!(get("DATABASE_URL").contains("@postgres:5432/"));
    assert_eq!(get("KAFKA_BOOTSTRAP_SERVERS"), "kafka:9092");
    // Reachable as the original service was: `notification-service:3000`
    // inside the stack, published on 3006, with the same health check.
    assert_eq!(port, 3000, "the original service's port");
    assert!(ports.contains(&"3006:3000"), "{ports:?}");
    let check: Vec<&str> =
        service["healthcheck"]["test"].as_sequence().unwrap().iter().map(|p| p.as_str().unwrap()).collect();
    assert_eq!(check, ["CMD", "curl", "-f", "http://localhost:3000/health"]);
    // The demo producer runs the image's saga-demo binary.
    assert_eq!(doc["services"]["demo-producer"]["entrypoint"][0].as_str(), Some("saga-demo"));
}

#[test]
fn kubernetes_matches_the_host() {
    let config = yaml_docs("kubernetes/base/configmap.yaml")
        .into_iter()
        .find(|d| d["metadata"]["name"] == "notification-host-config")
        .unwrap();
    let data = config["data"].as_mapping().unwrap();
    assert_known(data.keys().map(|k| k.as_str().unwrap().to_owned()), "kubernetes/base/configmap.yaml");
    let get = |k: &str| data.get(k).unwrap().as_str().unwrap().to_owned();
    let port = port_of(&get("HTTP_ADDR"));
    assert_eq!(port, DEFAULT_HTTP_PORT);

    let deployment = &yaml_docs("kubernetes/host/deployment.yaml")[0];
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    let env_names: Vec<String> =
        container["env"].as_sequence().unwrap().iter().map(|e| e["name"].as_str().unwrap().to_owned()).collect();
    assert_known(env_names.clone(), "kubernetes/host/deployment.yaml");
    assert_eq!(container["ports"][0]["containerPort"].as_u64(), Some(u64::from(port)));
    let served = served_paths();
    for probe in ["readinessProbe", "livenessProbe"] {
        let path = container[probe]["httpGet"]["path"].as_str().unwrap();
        assert!(served.contains(path), "{probe} {path} is not served");
    }
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/ready");
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/health");
    let mounts = container["volumeMounts"].as_sequence().unwrap();
    assert!(mounts.iter().any(|m| m["mountPath"].as_str() == Some(get("NORMALIZERS_DIR").as_str())));
    let security = &container["securityContext"];
    assert_eq!(security["readOnlyRootFilesystem"], true);
    assert_eq!(security["allowPrivilegeEscalation"], false);

    // Every secret key referenced is one the template asks the deploy for.
    let template = secret_template();
    for e in container["env"].as_sequence().unwrap() {
        let key = e["valueFrom"]["secretKeyRef"]["key"].as_str().unwrap();
        let optional = e["valueFrom"]["secretKeyRef"]["optional"].as_bool() == Some(true);
        assert!(optional || template.iter().any(|(k, _)| k == key), "secret key {key} missing from the template");
    }
    // The Service answers under the original service's name and port and
    // reaches the container's named port.
    let service = &yaml_docs("kubernetes/base/service.yaml")[0];
    assert_eq!(service["metadata"]["name"], "notification-service");
    assert_eq!(service["spec"]["ports"][0]["port"].as_u64(), Some(3000));
    assert_eq!(service["spec"]["ports"][0]["targetPort"], container["ports"][0]["name"]);
    assert_eq!(service["spec"]["selector"], deployment["spec"]["selector"]["matchLabels"]);
    // The commands the manifests run exist.
    let job = &yaml_docs("kubernetes/base/migrate-job.yaml")[0];
    assert_eq!(job["spec"]["template"]["spec"]["containers"][0]["args"][0], "migrate");
    assert_eq!(container["args"][0], "serve");
    use clap::CommandFactory;
    let cli = notification_host::config::Cli::command();
    for sub in ["migrate", "serve"] {
        assert!(cli.find_subcommand(sub).is_some(), "{sub} is not a command");
    }
}

// ---- Safe defaults -------------------------------------------------------

/// The tokens the host checks on requests.
const TOKEN_VARS: [&str; 3] = [env::API_TOKEN, env::ADMIN_TOKEN, env::READ_TOKEN];

/// A value the host refuses as a token whatever its exact rule: it names
/// itself a placeholder and is too short to be a real secret.
fn refused_as_token(value: &str) -> bool {
    value.contains("change-me") && value.len() < 16
}

/// `KEY=value` lines of the Secret's template (comments left out).
fn secret_template() -> Vec<(String, String)> {
    repo("kubernetes/base/secrets.env.example")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (k, v) = l.split_once('=').unwrap();
            (k.to_owned(), v.to_owned())
        })
        .collect()
}

/// Every file under `dir` (relative to the repository), recursively.
fn files_under(dir: &str) -> Vec<String> {
    let root = format!("{}/..", env!("CARGO_MANIFEST_DIR"));
    let mut out = Vec::new();
    let mut todo = vec![dir.to_owned()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(format!("{root}/{d}")).unwrap() {
            let entry = entry.unwrap();
            let path = format!("{d}/{}", entry.file_name().to_str().unwrap());
            if entry.file_type().unwrap().is_dir() {
                todo.push(path);
            } else {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

/// Every literal value a YAML document gives a token variable: `name: X`
/// beside `value: V` (a container's env list), or `X: V` (a compose
/// environment or ConfigMap data).
fn token_values(v: &Value, out: &mut Vec<(String, String)>) {
    match v {
        Value::Mapping(m) => {
            if let (Some(name), Some(value)) = (m.get("name").and_then(Value::as_str), m.get("value")) {
                if TOKEN_VARS.contains(&name) {
                    out.push((name.to_owned(), value.as_str().unwrap_or_default().to_owned()));
                }
            }
            for (k, val) in m {
                if let (Some(k), Some(s)) = (k.as_str(), val.as_str()) {
                    if TOKEN_VARS.contains(&k) {
                        out.push((k.to_owned(), s.to_owned()));
                    }
                }
                token_values(val, out);
            }
        }
        Value::Sequence(s) => s.iter().for_each(|x| token_values(x, out)),
        Value::Tagged(t) => token_values(&t.value, out),
        _ => {}
    }
}

#[test]
fn shipped_files_hold_no_working_secret() {
    let mut shipped = files_under("kubernetes");
    shipped.push("docker-compose.yml".to_owned());
    for file in &shipped {
        if file.ends_with("/secrets.env") {
            continue; // the deploy's own, ignored by git (checked below)
        }
        if file.ends_with(".yaml") || file.ends_with(".yml") {
            for doc in yaml_docs(file) {
                assert_ne!(doc["kind"], "Secret", "{file} ships a Secret; the deploy generates it from secrets.env");
                let mut found = Vec::new();
                token_values(&doc, &mut found);
                for (name, value) in found {
                    assert!(refused_as_token(&value), "{file} gives {name} a value the host could accept: {value:?}");
                }
            }
        }
    }
    // The template: every key a placeholder, the database password too.
    let template = secret_template();
    for (key, value) in &template {
        if TOKEN_VARS.contains(&key.as_str()) {
            assert!(refused_as_token(value), "the template's {key} could be accepted: {value:?}");
        }
    }
    let url = &template.iter().find(|(k, _)| k == env::DATABASE_URL).unwrap().1;
    let password = url.split("://").nth(1).unwrap().split('@').next().unwrap().split(':').nth(1).unwrap();
    assert_eq!(password, "change-me", "the template's database password");
    for key in [env::DATABASE_URL, env::API_TOKEN, env::ADMIN_TOKEN] {
        assert!(template.iter().any(|(k, _)| k == key), "the template asks for {key}");
    }
    // The Secret is generated from secrets.env, which git ignores.
    let base = &yaml_docs("kubernetes/base/kustomization.yaml")[0];
    let generator = &base["secretGenerator"][0];
    assert_eq!(generator["name"], "notification-host-secrets");
    assert_eq!(generator["envs"][0], "secrets.env");
    assert!(repo(".gitignore").lines().any(|l| l.trim() == "secrets.env"), ".gitignore must list secrets.env");
}

#[test]
fn network_policy_admits_only_clients_and_monitoring() {
    let policy = &yaml_docs("kubernetes/base/networkpolicy.yaml")[0];
    assert_eq!(policy["kind"], "NetworkPolicy");
    let base = &yaml_docs("kubernetes/base/kustomization.yaml")[0];
    assert!(base["resources"].as_sequence().unwrap().iter().any(|r| r == "networkpolicy.yaml"));
    // It selects the host's pods.
    let deployment = &yaml_docs("kubernetes/host/deployment.yaml")[0];
    let pod_labels = deployment["spec"]["template"]["metadata"]["labels"].as_mapping().unwrap();
    let selector = policy["spec"]["podSelector"]["matchLabels"].as_mapping().unwrap();
    assert!(!selector.is_empty());
    for (k, v) in selector {
        assert_eq!(pod_labels.get(k), Some(v), "the policy's selector {k:?} must match the host's pods");
    }
    assert!(policy["spec"]["policyTypes"].as_sequence().unwrap().iter().any(|t| t == "Ingress"));
    // Each rule names its peers (no peer that admits everyone) and the port.
    let rules = policy["spec"]["ingress"].as_sequence().unwrap();
    assert!(!rules.is_empty());
    let narrow = |s: &Value| s["matchLabels"].as_mapping().is_some_and(|m| !m.is_empty());
    for rule in rules {
        let peers = rule["from"].as_sequence().expect("a rule without `from` admits everyone");
        assert!(!peers.is_empty());
        for peer in peers {
            assert!(
                narrow(&peer["podSelector"]) || narrow(&peer["namespaceSelector"]),
                "peer {peer:?} admits every pod"
            );
        }
        let ports = rule["ports"].as_sequence().expect("a rule without `ports` opens every port");
        for port in ports {
            assert!(port["port"] == "http" || port["port"].as_u64() == Some(u64::from(DEFAULT_HTTP_PORT)));
        }
    }
    assert!(
        rules
            .iter()
            .flat_map(|r| r["from"].as_sequence().unwrap())
            .any(|p| { p["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"] == "monitoring" }),
        "the monitoring namespace reaches /metrics"
    );
}

#[test]
fn kubernetes_sets_cors_as_compose_does() {
    let compose = &yaml_docs("docker-compose.yml")[0];
    let origins = compose["services"]["notification-service"]["environment"][env::CORS_ALLOWED_ORIGINS].clone();
    assert!(origins.as_str().is_some_and(|o| !o.is_empty()));
    let config = yaml_docs("kubernetes/base/configmap.yaml")
        .into_iter()
        .find(|d| d["metadata"]["name"] == "notification-host-config")
        .unwrap();
    assert_eq!(config["data"][env::CORS_ALLOWED_ORIGINS], origins);
}
