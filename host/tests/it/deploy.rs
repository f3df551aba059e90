//! The deployment files agree with the host: every environment variable they
//! set is one the host reads, ports and paths match what it listens on and
//! serves, and the modules directory is where the image puts the modules.
//! They also keep their safe defaults: no working secret in any shipped file,
//! a NetworkPolicy in front of the pods, CORS as compose sets it, and probes
//! that follow each replica's role, in every Kubernetes install as kustomize
//! renders it.

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

/// Whether the host refuses `value` as a token at start (the host's own
/// check, `Token::configured`).
fn refused_as_token(value: &str) -> bool {
    notification_host::http::Token::configured(env::API_TOKEN, Some(value)).is_err()
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
            if let (Some(name), Some(value)) = (m.get("name").and_then(Value::as_str), m.get("value"))
                && TOKEN_VARS.contains(&name)
            {
                out.push((name.to_owned(), value.as_str().unwrap_or_default().to_owned()));
            }
            for (k, val) in m {
                if let (Some(k), Some(s)) = (k.as_str(), val.as_str())
                    && TOKEN_VARS.contains(&k)
                {
                    out.push((k.to_owned(), s.to_owned()));
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
    shipped.extend(files_under("scripts/container.d"));
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

#[test]
fn compose_overrides_replace_only_the_broker_and_database() {
    // scripts/container runs docker-compose.yml as shipped but for the
    // images this machine cannot pull; each override touches one service.
    for (file, service) in
        [("scripts/container.d/compose.tansu.yml", "kafka"), ("scripts/container.d/compose.postgres.yml", "postgres")]
    {
        let doc = &yaml_docs(file)[0];
        let services: Vec<&str> = doc["services"].as_mapping().unwrap().keys().map(|k| k.as_str().unwrap()).collect();
        assert_eq!(services, [service], "{file}");
    }
}

// ---- Every install, as kustomize renders it --------------------------------

/// kubectl, whose kustomize renders the installs: `KUBECTL`, else the one
/// scripts/validate-deploy installs, else one on PATH.
fn kubectl() -> std::path::PathBuf {
    if let Ok(k) = std::env::var("KUBECTL") {
        return k.into();
    }
    let cache = std::env::var("NOTIFICATION_CACHE_DIR")
        .unwrap_or_else(|_| format!("{}/.cache/notification-host", std::env::var("HOME").unwrap_or_default()));
    let venv = std::path::PathBuf::from(format!("{cache}/venv/bin/kubectl"));
    if venv.exists() {
        return venv;
    }
    let on_path = std::env::var("PATH")
        .unwrap_or_default()
        .split(':')
        .map(|d| std::path::Path::new(d).join("kubectl"))
        .find(|p| p.exists());
    on_path.expect("kubectl not found: scripts/validate-deploy installs it (or set KUBECTL)")
}

/// Each install (the default and every overlay), rendered with the Secret
/// template filled in as the deploy would fill it.
fn rendered_installs() -> Vec<(String, Vec<Value>)> {
    let dir = tempfile::tempdir().unwrap();
    let src = format!("{}/../kubernetes", env!("CARGO_MANIFEST_DIR"));
    let copy = std::process::Command::new("cp").arg("-r").arg(&src).arg(dir.path()).status().unwrap();
    assert!(copy.success());
    let tree = dir.path().join("kubernetes");
    std::fs::copy(tree.join("base/secrets.env.example"), tree.join("base/secrets.env")).unwrap();
    let mut installs = vec![".".to_owned()];
    let mut overlays: Vec<String> = std::fs::read_dir(tree.join("overlays"))
        .unwrap()
        .map(|e| format!("overlays/{}", e.unwrap().file_name().to_str().unwrap()))
        .collect();
    overlays.sort();
    installs.extend(overlays);
    let kubectl = kubectl();
    installs
        .into_iter()
        .map(|install| {
            let out = std::process::Command::new(&kubectl).arg("kustomize").arg(tree.join(&install)).output().unwrap();
            assert!(out.status.success(), "kustomize {install}: {}", String::from_utf8_lossy(&out.stderr));
            let text = String::from_utf8(out.stdout).unwrap();
            let docs: Vec<Value> = serde_yaml_ng::Deserializer::from_str(&text)
                .map(|d| serde::Deserialize::deserialize(d).unwrap())
                .collect();
            (install, docs)
        })
        .collect()
}

fn of_kind<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| d["kind"] == kind).collect()
}

fn selects(selector: &Value, labels: &Value) -> bool {
    selector.as_mapping().unwrap().iter().all(|(k, v)| labels.get(k) == Some(v))
}

fn role_of(container: &Value) -> notification_host::config::Role {
    use clap::ValueEnum;
    let role = container["env"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|e| e["name"] == env::ROLE)
        .map_or("all", |e| e["value"].as_str().unwrap());
    notification_host::config::Role::from_str(role, false).unwrap()
}

#[test]
fn every_install_renders_with_safe_defaults_and_probes_by_role() {
    use notification_host::config::Role;
    let served = served_paths();
    let installs = rendered_installs();
    assert!(installs.len() >= 4, "the default install and the overlays: {:?}", installs.iter().map(|i| &i.0));
    let mut roles_seen = BTreeSet::new();
    for (install, docs) in &installs {
        let deployments = of_kind(docs, "Deployment");
        assert!(!deployments.is_empty(), "{install}");
        let secrets = of_kind(docs, "Secret");
        assert_eq!(secrets.len(), 1, "{install}: one Secret, generated from secrets.env");
        let secret = secrets[0];
        let config_maps: Vec<&str> =
            of_kind(docs, "ConfigMap").iter().map(|c| c["metadata"]["name"].as_str().unwrap()).collect();
        let policy = of_kind(docs, "NetworkPolicy");
        assert_eq!(policy.len(), 1, "{install}: the NetworkPolicy");
        let service = of_kind(docs, "Service")[0];
        let mut behind_service = 0;
        for d in &deployments {
            let name = d["metadata"]["name"].as_str().unwrap();
            let pod = &d["spec"]["template"];
            let labels = &pod["metadata"]["labels"];
            assert!(
                selects(&policy[0]["spec"]["podSelector"]["matchLabels"], labels),
                "{install}: {name} outside the policy"
            );
            let c = &pod["spec"]["containers"][0];
            let role = role_of(c);
            roles_seen.insert(format!("{role:?}"));
            // Probes by role: /ready is what a replica of this role is ready
            // for (reads on all/api, consuming on ingest); liveness is /health.
            assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/ready", "{install}: {name}");
            assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/health", "{install}: {name}");
            for probe in ["readinessProbe", "livenessProbe"] {
                assert!(served.contains(c[probe]["httpGet"]["path"].as_str().unwrap()));
            }
            // The Service sends clients only to replicas that serve the API.
            if selects(&service["spec"]["selector"], labels) {
                assert!(role.serves_api(), "{install}: the Service reaches {name}, which serves no API");
                behind_service += 1;
            }
            // Runs as the image's user, read-only, without capabilities.
            assert_eq!(pod["spec"]["securityContext"]["runAsUser"].as_u64(), Some(10001));
            assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
            assert_eq!(c["securityContext"]["capabilities"]["drop"][0], "ALL");
            let mounts = c["volumeMounts"].as_sequence().unwrap();
            assert!(mounts.iter().any(|m| m["mountPath"] == "/tmp"), "{install}: {name} needs a writable /tmp");
            // Every reference resolves in what is applied.
            let env_list = c["env"].as_sequence().unwrap();
            assert_known(env_list.iter().map(|e| e["name"].as_str().unwrap().to_owned()), install);
            for e in env_list {
                let r = &e["valueFrom"]["secretKeyRef"];
                if r.is_null() {
                    assert_ne!(e["value"], Value::Null, "{install}: {name} env {:?}", e["name"]);
                    continue;
                }
                assert_eq!(r["name"], secret["metadata"]["name"], "{install}: {name}");
                if r["optional"].as_bool() != Some(true) {
                    assert!(secret["data"].get(r["key"].as_str().unwrap()).is_some(), "{install}: key {:?}", r["key"]);
                }
            }
            for from in c["envFrom"].as_sequence().unwrap() {
                assert!(config_maps.contains(&from["configMapRef"]["name"].as_str().unwrap()));
            }
            for v in pod["spec"]["volumes"].as_sequence().unwrap() {
                if let Some(cm) = v["configMap"]["name"].as_str() {
                    assert!(config_maps.contains(&cm), "{install}: volume from missing ConfigMap {cm}");
                }
            }
            // Modules from the store: ADMIN_TOKEN set and no modules ConfigMap.
            let admin = env_list.iter().any(|e| e["name"] == env::ADMIN_TOKEN);
            let store_only = !config_maps.contains(&"notification-normalizers");
            assert_eq!(admin, store_only, "{install}: {name}: ADMIN_TOKEN goes with modules from the store");
        }
        assert!(behind_service > 0, "{install}: the Service reaches no replica");
        // Every HPA scales a Deployment of this install.
        for hpa in of_kind(docs, "HorizontalPodAutoscaler") {
            let target = &hpa["spec"]["scaleTargetRef"]["name"];
            assert!(deployments.iter().any(|d| &d["metadata"]["name"] == target), "{install}: HPA of {target:?}");
        }
    }
    for role in [Role::All, Role::Api, Role::Ingest] {
        assert!(roles_seen.contains(&format!("{role:?}")), "no install runs ROLE={role:?}");
    }
    assert!(
        installs.iter().any(|(_, docs)| !of_kind(docs, "ConfigMap")
            .iter()
            .any(|c| c["metadata"]["name"] == "notification-normalizers")),
        "an install takes its modules from the store only"
    );
}

/// The alerting rules name only metrics the host exports (with their
/// counter and histogram suffixes), and the component renders.
#[test]
fn alert_rules_name_only_metrics_the_host_exports() {
    // The metrics page is generated from the registry (and checked by the
    // docs tests): one row per exposed name.
    let page = repo("docs/src/reference/metrics.md");
    let exported: BTreeSet<String> = page
        .lines()
        .filter_map(|l| l.split("</a>`").nth(1))
        .filter_map(|l| l.split('`').next().map(str::to_owned))
        .collect();
    assert!(exported.contains("notification_sagas_stuck"), "{exported:?}");
    let rule = &yaml_docs("kubernetes/components/alerts/prometheusrule.yaml")[0];
    assert_eq!(rule["kind"], "PrometheusRule");
    let rules = rule["spec"]["groups"][0]["rules"].as_sequence().unwrap();
    assert!(rules.iter().any(|r| r["alert"] == "NotificationSagasStuck"));
    let names = regex::Regex::new(r"notification_[a-z_]+").unwrap();
    let mut named = 0;
    for r in rules {
        let expr = r["expr"].as_str().unwrap();
        for m in names.find_iter(expr) {
            let name = m.as_str();
            let base = ["_bucket", "_count", "_sum"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .filter(|b| exported.contains(*b))
                .unwrap_or(name);
            assert!(exported.contains(base), "{:?} names {name}, which the host does not export", r["alert"]);
            named += 1;
        }
    }
    assert!(named >= 5);
    let component = &yaml_docs("kubernetes/components/alerts/kustomization.yaml")[0];
    assert_eq!(component["kind"], "Component");
    assert_eq!(component["resources"][0], "prometheusrule.yaml");
}
