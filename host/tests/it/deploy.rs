//! The deployment files agree with the host: every environment variable they
//! set is one the host reads, ports and paths match what it listens on and
//! serves, and the modules directory is where the image puts the modules.

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
    let config = yaml_docs("kubernetes/configmap.yaml")
        .into_iter()
        .find(|d| d["metadata"]["name"] == "notification-host-config")
        .unwrap();
    let data = config["data"].as_mapping().unwrap();
    assert_known(data.keys().map(|k| k.as_str().unwrap().to_owned()), "kubernetes/configmap.yaml");
    let get = |k: &str| data.get(k).unwrap().as_str().unwrap().to_owned();
    let port = port_of(&get("HTTP_ADDR"));
    assert_eq!(port, DEFAULT_HTTP_PORT);

    let deployment = &yaml_docs("kubernetes/deployment.yaml")[0];
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    let env_names: Vec<String> =
        container["env"].as_sequence().unwrap().iter().map(|e| e["name"].as_str().unwrap().to_owned()).collect();
    assert_known(env_names.clone(), "kubernetes/deployment.yaml");
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

    // Every secret key referenced exists.
    let secret = &yaml_docs("kubernetes/secret.yaml")[0];
    for e in container["env"].as_sequence().unwrap() {
        let key = e["valueFrom"]["secretKeyRef"]["key"].as_str().unwrap();
        let optional = e["valueFrom"]["secretKeyRef"]["optional"].as_bool() == Some(true);
        assert!(optional || secret["stringData"].get(key).is_some(), "secret key {key} missing");
    }
    // The Service answers under the original service's name and port and
    // reaches the container's named port.
    let service = &yaml_docs("kubernetes/service.yaml")[0];
    assert_eq!(service["metadata"]["name"], "notification-service");
    assert_eq!(service["spec"]["ports"][0]["port"].as_u64(), Some(3000));
    assert_eq!(service["spec"]["ports"][0]["targetPort"], container["ports"][0]["name"]);
    assert_eq!(service["spec"]["selector"], deployment["spec"]["selector"]["matchLabels"]);
    // The commands the manifests run exist.
    let job = &yaml_docs("kubernetes/migrate-job.yaml")[0];
    assert_eq!(job["spec"]["template"]["spec"]["containers"][0]["args"][0], "migrate");
    assert_eq!(container["args"][0], "serve");
    use clap::CommandFactory;
    let cli = notification_host::config::Cli::command();
    for sub in ["migrate", "serve"] {
        assert!(cli.find_subcommand(sub).is_some(), "{sub} is not a command");
    }
}
