//! The deployment files (docker-compose.yml, deploy/): what can be checked
//! without a container engine or a cluster.
//!
//! - structure: compose services, published ports on 127.0.0.1, mounted
//!   files that exist, the Dockerfiles' runtime stage, the Kubernetes
//!   manifests' probes, ports and selectors, Grafana provisioning;
//! - the dashboard's and the alerting rules' queries name metrics the
//!   service really exports, checked against a live `/metrics` scrape of
//!   `forewarn serve` started with the container config;
//! - the config files parse (`forewarn config check`), also with the
//!   TLS+SASL Kafka examples' settings;
//! - the external validators (`docker-compose config`, `promtool`,
//!   `kubernetes-validate`), through `scripts/deploy-checks.sh --no-install`,
//!   when they are installed (that script installs them and runs everything).
//!
//! YAML is read through python3 and PyYAML (Debian: python3-yaml), as JSON.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use forewarn_core::reading::encode_reading;
use forewarn_system_tests::*;
use serde_json::Value;

fn path(rel: &str) -> PathBuf {
    repo_root().join(rel)
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(path(rel)).unwrap_or_else(|e| panic!("reading {rel}: {e}"))
}

/// Every document of a YAML file, as JSON values.
fn yaml_docs(rel: &str) -> Vec<Value> {
    let out = Command::new("python3")
        .args([
            "-c",
            "import json, sys, yaml\n\
             docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d is not None]\n\
             json.dump(docs, sys.stdout)",
        ])
        .arg(path(rel))
        .output()
        .expect("python3 is needed to read YAML (with PyYAML: Debian's python3-yaml)");
    assert!(
        out.status.success(),
        "{rel} is not valid YAML (or PyYAML is missing):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    match serde_json::from_slice(&out.stdout).unwrap() {
        Value::Array(docs) => docs,
        other => panic!("{rel}: {other}"),
    }
}

fn yaml(rel: &str) -> Value {
    let mut docs = yaml_docs(rel);
    assert_eq!(docs.len(), 1, "{rel} should hold one YAML document");
    docs.remove(0)
}

fn str_of<'a>(v: &'a Value, what: &str) -> &'a str {
    v.as_str()
        .unwrap_or_else(|| panic!("{what} should be a string, is {v}"))
}

fn arr<'a>(v: &'a Value, what: &str) -> &'a Vec<Value> {
    v.as_array()
        .unwrap_or_else(|| panic!("{what} should be a list, is {v}"))
}

// ---------------------------------------------------------------------------
// Metric names.

/// `forewarn_*` metric names in a PromQL expression. Recording-rule names
/// (`instance:forewarn_x:rate5m`) are not metric names and are skipped.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let bytes = expr.as_bytes();
    let mut out = BTreeSet::new();
    let mut i = 0;
    while let Some(pos) = expr[i..].find("forewarn_") {
        let start = i + pos;
        let mut end = start;
        while end < bytes.len()
            && (bytes[end].is_ascii_alphanumeric() || bytes[end] == b'_' || bytes[end] == b':')
        {
            end += 1;
        }
        let preceded = start > 0
            && (bytes[start - 1].is_ascii_alphanumeric()
                || bytes[start - 1] == b'_'
                || bytes[start - 1] == b':');
        let name = &expr[start..end];
        if !preceded && !name.contains(':') {
            out.insert(name.to_string());
        }
        i = end.max(start + 1);
    }
    out
}

/// Every `expr` (and template query) in the dashboard.
fn dashboard_exprs(dash: &Value) -> Vec<String> {
    fn walk(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                for (k, v) in m {
                    match (k.as_str(), v) {
                        ("expr" | "definition", Value::String(s)) => out.push(s.clone()),
                        ("query", Value::String(s)) if s.contains("forewarn_") => {
                            out.push(s.clone())
                        }
                        _ => walk(v, out),
                    }
                }
            }
            Value::Array(a) => a.iter().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(dash, &mut out);
    out
}

fn dashboard() -> Value {
    serde_json::from_str(&read("deploy/grafana/dashboards/forewarn.json"))
        .expect("the dashboard is valid JSON")
}

fn rule_exprs(rules: &Value) -> Vec<String> {
    arr(&rules["groups"], "groups")
        .iter()
        .flat_map(|g| arr(&g["rules"], "rules").iter())
        .map(|r| str_of(&r["expr"], "expr").to_string())
        .collect()
}

/// Metric names the dashboard and the alerting rules query.
fn referenced_metrics() -> BTreeMap<String, &'static str> {
    let mut out = BTreeMap::new();
    for e in dashboard_exprs(&dashboard()) {
        for n in metric_names(&e) {
            out.insert(n, "dashboard");
        }
    }
    for e in rule_exprs(&yaml("deploy/prometheus/rules/forewarn.rules.yml")) {
        for n in metric_names(&e) {
            out.entry(n).or_insert("rules");
        }
    }
    out
}

/// Families registered in forewarn-telemetry's metrics.rs (string literals).
fn families_in_source() -> BTreeSet<String> {
    let src = read("crates/forewarn-telemetry/src/metrics.rs");
    src.split('"')
        .skip(1)
        .step_by(2)
        .filter(|s| {
            s.starts_with("forewarn_") && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        })
        .map(str::to_string)
        .collect()
}

/// Sample names in a Prometheus text exposition (`x_bucket`, `x_sum`, ... included).
fn sample_names(exposition: &str) -> BTreeSet<String> {
    exposition
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_string)
        .collect()
}

#[test]
fn metric_name_scanner() {
    let e = r#"sum by (le) (rate(forewarn_inference_duration_seconds_bucket{instance=~"$instance"}[5m])) / instance:forewarn_consumer_lag:sum and up{job="forewarn"}"#;
    assert_eq!(
        metric_names(e),
        BTreeSet::from(["forewarn_inference_duration_seconds_bucket".to_string()])
    );
    let exposition = "# TYPE a counter\na_total 1\nb_bucket{le=\"1\"} 0\n";
    assert_eq!(
        sample_names(exposition),
        BTreeSet::from(["a_total".into(), "b_bucket".into()])
    );
}

/// Fast check, without the binary: the queries name metrics that metrics.rs
/// registers (histograms by their `_bucket`/`_sum`/`_count` series).
#[test]
fn dashboard_and_rules_name_registered_metrics() {
    let families = families_in_source();
    assert!(families.len() >= 20, "metrics.rs families: {families:?}");
    let unknown: Vec<_> = referenced_metrics()
        .into_iter()
        .filter(|(n, _)| {
            let base = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| n.strip_suffix(s));
            !families.contains(n) && !base.is_some_and(|b| families.contains(b))
        })
        .collect();
    assert!(
        unknown.is_empty(),
        "queried but not registered in metrics.rs: {unknown:?}"
    );
}

// ---------------------------------------------------------------------------
// Grafana.

#[test]
fn dashboard_has_the_promised_panels_on_the_provisioned_data_source() {
    let dash = dashboard();
    assert_eq!(dash["uid"], "forewarn");
    let ds = yaml("deploy/grafana/provisioning/datasources/prometheus.yml");
    let ds = &arr(&ds["datasources"], "datasources")[0];
    assert_eq!(ds["type"], "prometheus");
    assert_eq!(
        ds["url"], "http://prometheus:9090",
        "the compose service name"
    );
    let uid = str_of(&ds["uid"], "datasource uid");

    let panels = arr(&dash["panels"], "panels");
    let mut titles = Vec::new();
    let mut ids = BTreeSet::new();
    for p in panels {
        assert!(
            ids.insert(p["id"].as_u64().unwrap()),
            "duplicate panel id {}",
            p["id"]
        );
        let title = str_of(&p["title"], "title");
        titles.push(title.to_lowercase());
        let grid = &p["gridPos"];
        let (x, w) = (grid["x"].as_u64().unwrap(), grid["w"].as_u64().unwrap());
        assert!(
            x + w <= 24 && grid["h"].as_u64().unwrap() > 0,
            "{title}: gridPos {grid}"
        );
        if let Some(targets) = p["targets"].as_array() {
            assert_eq!(p["datasource"]["uid"], uid, "{title}: data source");
            for t in targets {
                assert_eq!(t["datasource"]["uid"], uid, "{title}: target data source");
                let expr = str_of(&t["expr"], "expr");
                assert!(
                    !metric_names(expr).is_empty(),
                    "{title}: {expr} queries no Forewarn metric"
                );
                assert_eq!(
                    expr.matches('(').count(),
                    expr.matches(')').count(),
                    "{title}: {expr}"
                );
                assert_eq!(
                    expr.matches('{').count(),
                    expr.matches('}').count(),
                    "{title}: {expr}"
                );
            }
        }
    }
    for want in [
        "throughput",
        "lag",
        "inference latency",
        "open alerts",
        "by device",
    ] {
        assert!(
            titles.iter().any(|t| t.contains(want)),
            "no panel about {want:?}: {titles:?}"
        );
    }
    // The queries behind those panels.
    let metrics: BTreeSet<String> = dashboard_exprs(&dash)
        .iter()
        .flat_map(|e| metric_names(e))
        .collect();
    for m in [
        "forewarn_messages_consumed_total",
        "forewarn_readings_accepted_total",
        "forewarn_messages_rejected_total",
        "forewarn_consumer_lag",
        "forewarn_inference_duration_seconds_bucket",
        "forewarn_alerts_open",
        "forewarn_devices_tracked",
        "forewarn_device_score",
        "forewarn_device_threshold",
    ] {
        assert!(metrics.contains(m), "the dashboard does not query {m}");
    }

    let prov = yaml("deploy/grafana/provisioning/dashboards/forewarn.yml");
    let dir = str_of(
        &arr(&prov["providers"], "providers")[0]["options"]["path"],
        "provider path",
    );
    let compose = yaml("docker-compose.yml");
    let mounts: Vec<&str> = arr(
        &compose["services"]["grafana"]["volumes"],
        "grafana volumes",
    )
    .iter()
    .map(|v| str_of(v, "volume"))
    .collect();
    assert!(
        mounts.contains(&format!("./deploy/grafana/dashboards:{dir}:ro").as_str()),
        "{mounts:?}"
    );
    assert!(
        mounts.contains(&"./deploy/grafana/provisioning:/etc/grafana/provisioning:ro"),
        "{mounts:?}"
    );
    let home = str_of(
        &compose["services"]["grafana"]["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"],
        "home",
    );
    assert_eq!(home, format!("{dir}/forewarn.json"));
}

// ---------------------------------------------------------------------------
// Prometheus.

#[test]
fn alerting_rules_page_on_stalls_lag_and_rejections_and_k8s_copy_agrees() {
    let rules = yaml("deploy/prometheus/rules/forewarn.rules.yml");
    let alerts: BTreeMap<String, &Value> = arr(&rules["groups"], "groups")
        .iter()
        .flat_map(|g| arr(&g["rules"], "rules").iter())
        .filter_map(|r| r["alert"].as_str().map(|a| (a.to_string(), r)))
        .collect();
    for (name, metric) in [
        ("ForewarnConsumptionStalled", "forewarn_consumer_lag"),
        ("ForewarnHighConsumerLag", "forewarn_consumer_lag"),
        (
            "ForewarnHighRejectionRate",
            "forewarn_messages_rejected_total",
        ),
    ] {
        let rule = alerts
            .get(name)
            .unwrap_or_else(|| panic!("no alert {name}: {:?}", alerts.keys()));
        assert_eq!(rule["labels"]["severity"], "page", "{name}");
        assert!(
            rule["annotations"]["summary"].is_string()
                && rule["annotations"]["description"].is_string(),
            "{name}"
        );
        // Directly or through a recording rule of this file.
        let expr = str_of(&rule["expr"], "expr");
        let expanded: String = rule_exprs(&rules).join("\n");
        assert!(
            expr.contains(metric) || (expanded.contains(metric) && expr.contains(':')),
            "{name}: {expr}"
        );
    }
    for r in alerts.values() {
        assert!(
            ["page", "ticket"].contains(&str_of(&r["labels"]["severity"], "severity")),
            "{r}"
        );
    }

    let prom = yaml("deploy/prometheus/prometheus.yml");
    let rule_files: Vec<&str> = arr(&prom["rule_files"], "rule_files")
        .iter()
        .map(|v| str_of(v, "rule file"))
        .collect();
    assert_eq!(
        rule_files,
        ["rules/*.rules.yml"],
        "relative to prometheus.yml, here and in the container"
    );
    let job = &arr(&prom["scrape_configs"], "scrape_configs")[0];
    assert_eq!(
        job["job_name"], "forewarn",
        "the rules select job=\"forewarn\""
    );
    let names = &arr(&job["dns_sd_configs"], "dns_sd_configs")[0]["names"];
    let compose = yaml("docker-compose.yml");
    for n in arr(names, "names") {
        assert!(
            compose["services"][str_of(n, "name")].is_object(),
            "scrape target {n} is no compose service"
        );
    }
    let mounts = compose["services"]["prometheus"]["volumes"].to_string();
    assert!(
        mounts.contains("./deploy/prometheus/rules:/etc/prometheus/rules:ro"),
        "{mounts}"
    );

    // The Prometheus Operator copy holds the same groups.
    let copy = yaml("deploy/k8s/base/prometheusrule.yaml");
    assert_eq!(copy["kind"], "PrometheusRule");
    assert_eq!(
        copy["spec"]["groups"], rules["groups"],
        "deploy/k8s/base/prometheusrule.yaml is out of date: scripts/deploy-checks.sh --sync-prometheusrule"
    );
}

// ---------------------------------------------------------------------------
// Compose.

#[test]
fn compose_stack_is_complete_and_local_only() {
    let compose = yaml("docker-compose.yml");
    let services = compose["services"].as_object().expect("services");
    for s in [
        "kafka",
        "forewarn",
        "forewarn-gpu",
        "simulator",
        "prometheus",
        "grafana",
        "model-init",
    ] {
        assert!(services.contains_key(s), "no service {s}");
    }
    // Kafka in KRaft mode, the official image.
    let kafka = &services["kafka"];
    assert!(str_of(&kafka["image"], "image").starts_with("apache/kafka:"));
    assert_eq!(
        kafka["environment"]["KAFKA_PROCESS_ROLES"],
        "broker,controller"
    );

    for (name, s) in services {
        // Published ports on 127.0.0.1 only.
        for p in s["ports"].as_array().into_iter().flatten() {
            let p = str_of(p, "port");
            assert!(
                p.starts_with("127.0.0.1:"),
                "{name} publishes {p} beyond localhost"
            );
        }
        // Bind-mounted files exist.
        for v in s["volumes"].as_array().into_iter().flatten() {
            let v = str_of(v, "volume");
            if let Some(rel) = v.strip_prefix("./") {
                let host = rel.split(':').next().unwrap();
                assert!(
                    path(host).exists(),
                    "{name} mounts {host}, which does not exist"
                );
            }
        }
        // Images built here use the Dockerfiles in deploy/.
        if let Some(b) = s.get("build") {
            let df = str_of(&b["dockerfile"], "dockerfile");
            assert!(path(df).exists(), "{name}: {df}");
            assert_eq!(b["context"], ".");
        }
        // Every config override names a real section (checked for keys in
        // `live_metrics_cover_dashboard_and_rules`).
        if let Some(env) = s["environment"].as_object() {
            for k in env.keys().filter(|k| k.starts_with("FOREWARN_")) {
                assert!(
                    k.contains("__"),
                    "{name}: {k} is not FOREWARN_<SECTION>__<KEY>"
                );
            }
        }
    }

    let fw = &services["forewarn"];
    assert_eq!(fw["build"]["dockerfile"], "deploy/Dockerfile");
    assert_eq!(fw["environment"]["FOREWARN_HTTP__LISTEN"], "0.0.0.0:8080");
    assert!(
        fw.get("profiles").is_none(),
        "the CPU instance runs by default"
    );
    let gpu = &services["forewarn-gpu"];
    assert_eq!(gpu["build"]["dockerfile"], "deploy/Dockerfile.gpu");
    assert_eq!(gpu["profiles"], serde_json::json!(["gpu"]));
    let dev = &gpu["deploy"]["resources"]["reservations"]["devices"][0];
    assert_eq!(dev["driver"], "nvidia");
    assert_eq!(dev["capabilities"], serde_json::json!(["gpu"]));
    assert_eq!(gpu["environment"]["FOREWARN_MODEL__DEVICE"], "cuda");
    for s in ["forewarn", "forewarn-gpu"] {
        let cmd: Vec<&str> = arr(&services[s]["command"], "command")
            .iter()
            .map(|v| str_of(v, "arg"))
            .collect();
        assert_eq!(
            cmd,
            ["serve", "--config", "/etc/forewarn/forewarn.toml"],
            "{s}"
        );
        assert_eq!(
            services[s]["depends_on"]["kafka"]["condition"], "service_healthy",
            "{s}"
        );
    }
    // The simulator streams a demo plant with injected faults.
    let sim: Vec<&str> = arr(&services["simulator"]["command"], "command")
        .iter()
        .map(|v| str_of(v, "arg"))
        .collect();
    assert_eq!(sim[0], "simulate");
    assert!(
        sim.windows(2).any(|w| w == ["--brokers", "kafka:9092"]),
        "{sim:?}"
    );
    assert!(
        sim.iter().filter(|a| **a == "--fault").count() >= 1,
        "{sim:?}"
    );
    // The one-shot model-init runs the mounted demo training script.
    let init = &services["model-init"];
    let script = str_of(&init["entrypoint"][1], "model-init entrypoint");
    let mounted = format!("./deploy/demo/train-demo-model.sh:{script}:ro");
    assert!(
        init["volumes"].to_string().contains(&mounted),
        "model-init mounts {mounted}"
    );
    let text = read("deploy/demo/train-demo-model.sh");
    assert!(
        text.contains("simulate --csv-dir") && text.contains(" train "),
        "demo model script"
    );
    for s in ["forewarn", "forewarn-gpu", "simulator"] {
        assert_eq!(
            services[s]["depends_on"]["model-init"]["condition"], "service_completed_successfully",
            "{s} waits for the model"
        );
    }
}

// ---------------------------------------------------------------------------
// Dockerfiles.

#[test]
fn dockerfiles_build_small_non_root_images_with_libtorch_on_the_rpath() {
    for (file, full) in [
        ("deploy/Dockerfile", false),
        ("deploy/Dockerfile.gpu", true),
    ] {
        let text = read(file);
        let stages: Vec<&str> = text.lines().filter(|l| l.starts_with("FROM ")).collect();
        assert_eq!(
            stages.len(),
            2,
            "{file}: a build and a runtime stage: {stages:?}"
        );
        assert!(
            stages[1].contains("-slim"),
            "{file}: small runtime base: {}",
            stages[1]
        );
        let runtime = text.split(stages[1]).nth(1).unwrap();
        assert!(
            runtime
                .lines()
                .any(|l| l.starts_with("USER ") && !l.contains("root") && !l.contains(" 0")),
            "{file}: non-root USER"
        );
        assert!(
            runtime.contains("HEALTHCHECK") && runtime.contains("/livez"),
            "{file}: health check on /livez"
        );
        assert!(
            runtime.contains("VOLUME [\"/models\", \"/var/lib/forewarn\"]"),
            "{file}: model and data volumes"
        );
        assert!(
            runtime.contains("FOREWARN_HTTP__LISTEN=0.0.0.0:8080"),
            "{file}: listens beyond loopback"
        );
        // Built in /opt/forewarn, libtorch kept at the same path: the rpath
        // works with no LD_LIBRARY_PATH.
        assert!(text.contains("WORKDIR /opt/forewarn"), "{file}");
        assert!(
            text.contains("/out/opt/forewarn/.libtorch/torch/lib"),
            "{file}"
        );
        assert!(
            !text.contains("ENV LD_LIBRARY_PATH"),
            "{file}: the rpath should be enough"
        );
        assert!(text.contains("bash scripts/setup.sh"), "{file}");
        assert_eq!(
            text.contains("FOREWARN_TORCH_FULL=1"),
            full,
            "{file}: CUDA libtorch only in the GPU image"
        );
        assert!(
            path(&format!("{file}.dockerignore")).exists(),
            "{file}.dockerignore keeps target/ out of the context"
        );
    }
    let gpu = read("deploy/Dockerfile.gpu");
    assert!(
        gpu.contains("NVIDIA_VISIBLE_DEVICES") && gpu.contains("--gpus all"),
        "GPU image documents the host side"
    );
    let ignore = read("deploy/Dockerfile.dockerignore");
    for p in ["target", ".libtorch", ".git"] {
        assert!(ignore.lines().any(|l| l == p), "dockerignore lacks {p}");
    }
}

// ---------------------------------------------------------------------------
// Kubernetes.

fn k8s_docs(dir: &str) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    let mut files: Vec<_> = std::fs::read_dir(path(dir))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    for f in files {
        if f.extension().is_some_and(|e| e == "yaml") && !f.ends_with("kustomization.yaml") {
            let rel = f
                .strip_prefix(repo_root())
                .unwrap()
                .to_string_lossy()
                .into_owned();
            for d in yaml_docs(&rel) {
                out.push((rel.clone(), d));
            }
        }
    }
    out
}

fn matches(selector: &Value, labels: &Value) -> bool {
    selector
        .as_object()
        .unwrap()
        .iter()
        .all(|(k, v)| labels.get(k) == Some(v))
}

fn probe(c: &Value, which: &str) -> (String, String) {
    let p = &c[which]["httpGet"];
    (
        str_of(&p["path"], which).to_string(),
        p["port"].to_string().trim_matches('"').to_string(),
    )
}

#[test]
fn k8s_manifests_have_probes_ports_and_matching_selectors() {
    let base = k8s_docs("deploy/k8s/base");
    let find = |kind: &str, name: &str| -> Value {
        base.iter()
            .find(|(_, d)| d["kind"] == kind && d["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("no {kind}/{name} in deploy/k8s/base"))
            .1
            .clone()
    };
    for (f, d) in &base {
        assert!(
            d["apiVersion"].is_string()
                && d["kind"].is_string()
                && d["metadata"]["name"].is_string(),
            "{f}: {d}"
        );
    }
    let config = find("ConfigMap", "forewarn-config");
    assert!(
        config["data"]["forewarn.toml"]
            .as_str()
            .unwrap()
            .contains("[kafka]")
    );
    let secret = find("Secret", "forewarn-api-token");
    // Shipped empty: no known token in the cluster, mutations refused.
    assert_eq!(secret["stringData"]["tokens"], "[]");
    let svc = find("Service", "forewarn");
    let headless = find("Service", "forewarn-headless");
    assert_eq!(headless["spec"]["clusterIP"], "None");
    let pm = find("PodMonitor", "forewarn");
    assert_eq!(pm["spec"]["podMetricsEndpoints"][0]["path"], "/metrics");
    let pvc = find("PersistentVolumeClaim", "forewarn-models");

    // Kustomizations list files that exist.
    for k in ["base", "cpu", "gpu"] {
        let kz = yaml(&format!("deploy/k8s/{k}/kustomization.yaml"));
        assert_eq!(kz["namespace"], "forewarn", "{k}");
        for r in arr(&kz["resources"], "resources") {
            let r = str_of(r, "resource");
            assert!(
                path(&format!("deploy/k8s/{k}/{r}")).exists(),
                "{k}/kustomization.yaml lists {r}"
            );
        }
    }
    let base_kz = yaml("deploy/k8s/base/kustomization.yaml").to_string();
    for (f, _) in &base {
        let name = Path::new(f)
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        assert!(
            base_kz.contains(&name),
            "deploy/k8s/base/kustomization.yaml misses {name}"
        );
    }

    for (variant, gpu) in [("cpu", false), ("gpu", true)] {
        let docs = k8s_docs(&format!("deploy/k8s/{variant}"));
        let (_, sts) = docs
            .iter()
            .find(|(_, d)| d["kind"] == "StatefulSet")
            .unwrap_or_else(|| panic!("{variant}: no StatefulSet"));
        let name = str_of(&sts["metadata"]["name"], "name");
        let spec = &sts["spec"];
        let tmpl = &spec["template"];
        let labels = &tmpl["metadata"]["labels"];
        assert!(
            matches(&spec["selector"]["matchLabels"], labels),
            "{name}: selector does not match the pod labels"
        );
        assert!(
            matches(&svc["spec"]["selector"], labels),
            "{name}: Service forewarn does not select its pods"
        );
        assert!(
            matches(&pm["spec"]["selector"]["matchLabels"], labels),
            "{name}: PodMonitor does not select its pods"
        );
        assert_eq!(
            spec["serviceName"], headless["metadata"]["name"],
            "{name}: governing service"
        );
        assert!(
            labels[str_of(&pm["spec"]["jobLabel"], "jobLabel")] == "forewarn",
            "{name}: job label value for the rules"
        );

        let pod = &tmpl["spec"];
        assert_eq!(pod["securityContext"]["runAsNonRoot"], true, "{name}");
        let containers = arr(&pod["containers"], "containers");
        assert_eq!(containers.len(), 1);
        let c = &containers[0];
        let ports = arr(&c["ports"], "ports");
        assert!(
            ports
                .iter()
                .any(|p| p["name"] == "http" && p["containerPort"] == 8080),
            "{name}: port http 8080"
        );
        assert_eq!(
            probe(c, "livenessProbe"),
            ("/livez".into(), "http".into()),
            "{name}"
        );
        assert_eq!(
            probe(c, "readinessProbe"),
            ("/readyz".into(), "http".into()),
            "{name}"
        );
        assert_eq!(probe(c, "startupProbe").0, "/livez", "{name}");
        for s in [&svc, &headless] {
            let p = &s["spec"]["ports"][0];
            assert!(
                ports.iter().any(|cp| cp["name"] == p["targetPort"]),
                "{name}: Service targetPort {}",
                p["targetPort"]
            );
        }
        assert_eq!(pm["spec"]["podMetricsEndpoints"][0]["port"], "http");
        let env: BTreeMap<&str, &Value> = arr(&c["env"], "env")
            .iter()
            .map(|e| (str_of(&e["name"], "env name"), e))
            .collect();
        assert_eq!(
            env["FOREWARN_HTTP__LISTEN"]["value"], "0.0.0.0:8080",
            "{name}"
        );
        assert!(
            env.contains_key("FOREWARN_KAFKA__GROUP_ID"),
            "{name}: one StatefulSet per consumer group"
        );
        // API tokens from the Secret, optional (no Secret: mutations refused).
        let tokens = &env["FOREWARN_HTTP__TOKENS"]["valueFrom"]["secretKeyRef"];
        assert_eq!(
            tokens["name"], secret["metadata"]["name"],
            "{name}: token Secret"
        );
        let key = str_of(&tokens["key"], "secret key");
        assert!(
            secret["stringData"][key].is_string(),
            "{name}: the Secret has no {key}"
        );
        assert_eq!(tokens["optional"], true, "{name}");

        // Volumes: config from the ConfigMap, models from the PVC, data per replica.
        let mounts: BTreeMap<&str, &str> = arr(&c["volumeMounts"], "volumeMounts")
            .iter()
            .map(|m| {
                (
                    str_of(&m["name"], "mount"),
                    str_of(&m["mountPath"], "mountPath"),
                )
            })
            .collect();
        assert_eq!(mounts.get("config"), Some(&"/etc/forewarn"));
        assert_eq!(mounts.get("models"), Some(&"/models"));
        assert_eq!(mounts.get("data"), Some(&"/var/lib/forewarn"));
        let vols = pod["volumes"].to_string();
        assert!(
            vols.contains("\"forewarn-config\"")
                && vols.contains(&pvc["metadata"]["name"].to_string()),
            "{name}: {vols}"
        );
        assert_eq!(spec["volumeClaimTemplates"][0]["metadata"]["name"], "data");

        let limit = &c["resources"]["limits"]["nvidia.com/gpu"];
        if gpu {
            assert_eq!(limit, 1, "{name}: one GPU");
            assert_eq!(
                pod["nodeSelector"]["nvidia.com/gpu.present"], "true",
                "{name}: GPU nodes"
            );
            assert_eq!(env["FOREWARN_MODEL__DEVICE"]["value"], "cuda");
            assert!(
                str_of(&c["image"], "image").contains("gpu"),
                "{name}: the GPU image"
            );
        } else {
            assert!(
                limit.is_null() && pod["nodeSelector"].is_null(),
                "{name}: CPU pods need no GPU"
            );
        }
    }
}

// ---------------------------------------------------------------------------
// With the binary.

/// Every `FOREWARN_*` setting the deployment files make, from compose and
/// the StatefulSets.
fn deployment_env() -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let compose = yaml("docker-compose.yml");
    for s in compose["services"].as_object().unwrap().values() {
        for (k, v) in s["environment"].as_object().into_iter().flatten() {
            if k.starts_with("FOREWARN_") {
                let v = v.as_str().map_or_else(|| v.to_string(), str::to_string);
                out.insert(k.clone(), compose_default(&v));
            }
        }
    }
    let secrets: Vec<Value> = k8s_docs("deploy/k8s/base")
        .into_iter()
        .map(|(_, d)| d)
        .filter(|d| d["kind"] == "Secret")
        .collect();
    for v in ["cpu", "gpu"] {
        for (_, d) in k8s_docs(&format!("deploy/k8s/{v}")) {
            for c in d["spec"]["template"]["spec"]["containers"]
                .as_array()
                .into_iter()
                .flatten()
            {
                for e in c["env"].as_array().into_iter().flatten() {
                    let k = str_of(&e["name"], "env name").to_string();
                    let r = &e["valueFrom"]["secretKeyRef"];
                    let val = if r.is_object() {
                        secrets
                            .iter()
                            .find(|s| s["metadata"]["name"] == r["name"])
                            .and_then(|s| s["stringData"][str_of(&r["key"], "key")].as_str())
                    } else {
                        e["value"].as_str()
                    };
                    out.insert(
                        k,
                        val.unwrap_or_else(|| panic!("no value for {e}"))
                            .to_string(),
                    );
                }
            }
        }
    }
    out
}

/// Compose's `${NAME:-default}` as compose sees it with NAME unset.
fn compose_default(v: &str) -> String {
    match v.strip_prefix("${").and_then(|r| r.strip_suffix('}')) {
        Some(inner) => inner.split_once(":-").map_or("", |(_, d)| d).to_string(),
        None => v.to_string(),
    }
}

fn config_check(file: &Path, env: &BTreeMap<String, String>) -> String {
    let mut cmd = Command::new(forewarn_bin());
    cmd.args(["config", "check"]).arg(file);
    for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("FOREWARN_")) {
        cmd.env_remove(k);
    }
    let out = cmd.envs(env).output().unwrap();
    assert!(
        out.status.success(),
        "forewarn config check {} with {env:?}:\n{}",
        file.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn config_files_and_env_overrides_are_valid() {
    let dir = tempfile::tempdir().unwrap();
    let container = path("deploy/forewarn.container.toml");
    let effective = config_check(&container, &BTreeMap::new());
    for want in [
        "brokers = \"kafka:9092\"",
        "listen = \"0.0.0.0:8080\"",
        "path = \"/models/current\"",
        "path = \"/var/lib/forewarn/alerts.db\"",
    ] {
        assert!(
            effective.contains(want),
            "container config lacks {want}:\n{effective}"
        );
    }
    // With every override the deployment files set.
    let env = deployment_env();
    assert!(env.len() >= 3, "{env:?}");
    config_check(&container, &env);
    // The host example (README) differs only in host specifics.
    let example = config_check(&path("deploy/forewarn.example.toml"), &BTreeMap::new());
    assert!(example.contains("listen = \"127.0.0.1:8080\""), "{example}");
    let strip = |s: &str| -> Vec<String> {
        s.lines()
            .filter(|l| {
                !["brokers", "listen", "path", "format"]
                    .iter()
                    .any(|k| l.starts_with(k))
            })
            .map(str::to_string)
            .collect()
    };
    assert_eq!(
        strip(&example),
        strip(&effective),
        "example and container configs drifted apart"
    );

    let cm = k8s_docs("deploy/k8s/base")
        .into_iter()
        .find(|(_, d)| d["kind"] == "ConfigMap")
        .unwrap()
        .1;
    let toml = dir.path().join("forewarn.toml");
    std::fs::write(&toml, cm["data"]["forewarn.toml"].as_str().unwrap()).unwrap();
    let effective = config_check(&toml, &env);
    assert!(
        effective.contains("listen = \"0.0.0.0:8080\""),
        "{effective}"
    );
}

/// The TLS+SASL Kafka examples (deploy/compose.kafka-tls.yml,
/// deploy/k8s/kafka-tls) name real settings and mount what they read:
/// their `FOREWARN_*` variables, with the secret files they mount replaced
/// by a throwaway password and CA, pass `forewarn config check` on the
/// container config, which prints the password masked.
#[test]
fn kafka_tls_examples_read_their_secrets_from_mounted_files() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "kafka").unwrap();
    let password = dir.path().join("password");
    std::fs::write(&password, "kafka-pw-only-here\n").unwrap();
    let container = path("deploy/forewarn.container.toml");
    let check = |env: &BTreeMap<String, String>, what: &str| {
        for (k, want) in [
            ("FOREWARN_KAFKA__CLIENT__SECURITY_PROTOCOL", "SASL_SSL"),
            ("FOREWARN_KAFKA__CLIENT__SASL_MECHANISM", "SCRAM-SHA-512"),
        ] {
            assert_eq!(
                env.get(k).map(String::as_str),
                Some(want),
                "{what}: {env:?}"
            );
        }
        // config check reads the password file (an empty or missing one
        // is an error) and prints the settings, never the password.
        let effective = config_check(&container, env);
        for want in [
            "security_protocol = \"SASL_SSL\"".to_string(),
            format!("sasl_password_file = \"{}\"", password.display()),
            format!("ssl_ca_location = \"{}\"", pki.ca.display()),
            "brokers = \"broker-1.kafka.example:9093,broker-2.kafka.example:9093\"".to_string(),
        ] {
            assert!(
                effective.contains(&want),
                "{what}: no {want} in\n{effective}"
            );
        }
        assert!(!effective.contains("kafka-pw-only-here"), "{effective}");
    };

    // Compose: each secret file a service reads is one it mounts.
    let compose = yaml("deploy/compose.kafka-tls.yml");
    for svc in ["forewarn", "forewarn-gpu"] {
        let s = &compose["services"][svc];
        let mounted: Vec<&str> = arr(&s["secrets"], "secrets")
            .iter()
            .map(|v| str_of(v, "secret"))
            .collect();
        let mut env = BTreeMap::new();
        for (k, v) in s["environment"].as_object().expect("environment") {
            let v = compose_default(str_of(v, k));
            let v = match v.strip_prefix("/run/secrets/") {
                Some(name) => {
                    assert!(mounted.contains(&name), "{svc}: {k} reads unmounted {v}");
                    assert!(
                        compose["secrets"][name]["file"].is_string(),
                        "{svc}: no top-level secret {name}"
                    );
                    let file = if name.ends_with(".pem") {
                        &pki.ca
                    } else {
                        &password
                    };
                    file.display().to_string()
                }
                None => v,
            };
            env.insert(k.clone(), v);
        }
        assert_eq!(mounted.len(), 2, "{svc}: {mounted:?}");
        check(&env, &format!("compose {svc}"));
    }

    // Kubernetes: the overlay's patch adds the variables, and the Secret's
    // volume at the directory they name.
    let kz = yaml("deploy/k8s/kafka-tls/kustomization.yaml");
    let patch = dir.path().join("patch.yaml");
    std::fs::write(&patch, str_of(&kz["patches"][0]["patch"], "patch")).unwrap();
    let ops = yaml(patch.to_str().unwrap());
    let added = |suffix: &str| -> Vec<Value> {
        arr(&ops, "patch")
            .iter()
            .filter(|op| op["op"] == "add" && str_of(&op["path"], "path").ends_with(suffix))
            .map(|op| op["value"].clone())
            .collect()
    };
    let mount = added("/volumeMounts/-");
    let volume = added("/volumes/-");
    assert_eq!((mount.len(), volume.len()), (1, 1), "{ops}");
    assert_eq!(mount[0]["name"], volume[0]["name"]);
    assert_eq!(mount[0]["readOnly"], true);
    let secret_name = str_of(&volume[0]["secret"]["secretName"], "secretName");
    let secret = yaml("deploy/k8s/kafka-tls/kafka-secret.yaml");
    assert_eq!(
        (&secret["kind"], &secret["metadata"]["name"]),
        (&"Secret".into(), &secret_name.into())
    );
    let mount_dir = format!("{}/", str_of(&mount[0]["mountPath"], "mountPath"));
    let mut env = BTreeMap::new();
    for e in added("/env/-") {
        let k = str_of(&e["name"], "env name").to_string();
        let v = str_of(&e["value"], "env value");
        let v = match v.strip_prefix(&mount_dir) {
            Some(key) => {
                assert!(
                    secret["stringData"][key].is_string(),
                    "{k}: the Secret has no {key}"
                );
                let file = if key.ends_with(".pem") {
                    &pki.ca
                } else {
                    &password
                };
                file.display().to_string()
            }
            None => v.to_string(),
        };
        env.insert(k, v);
    }
    assert!(
        env.contains_key("FOREWARN_KAFKA__CLIENT__SASL_PASSWORD_FILE")
            && env.contains_key("FOREWARN_KAFKA__CLIENT__SSL_CA_LOCATION"),
        "{env:?}"
    );
    check(&env, "k8s kafka-tls");
}

/// The allow-listed device of the live test.
const DEVICE: &str = "deploy-test-0";

/// The service started as the containers start it (the container config and
/// the deployment files' overrides, host specifics replaced): everything the
/// dashboard and the alerting rules query is in its `/metrics`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_metrics_cover_dashboard_and_rules() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let broker = Broker::start(dir.path())?;

    let (model, _) = train_tep(
        dir.path(),
        &["--epochs", "2", "--hidden", "8", "--device", "cpu"],
    )?;

    let http_port = free_port();
    let mut env = deployment_env();
    env.extend(
        [
            ("FOREWARN_KAFKA__BROKERS", broker.bootstrap()),
            ("FOREWARN_KAFKA__GROUP_ID", "deploy-test".into()),
            ("FOREWARN_KAFKA__TOPIC_PARTITIONS", "2".into()),
            ("FOREWARN_HTTP__LISTEN", format!("127.0.0.1:{http_port}")),
            ("FOREWARN_MODEL__PATH", model.display().to_string()),
            ("FOREWARN_MODEL__DEVICE", "cpu".into()),
            (
                "FOREWARN_STORE__PATH",
                dir.path().join("alerts.db").display().to_string(),
            ),
            ("FOREWARN_METRICS__DEVICE_ALLOW_LIST", format!("[{DEVICE}]")),
        ]
        .map(|(k, v)| (k.to_string(), v)),
    );
    let mut cmd = Command::new(forewarn_bin());
    cmd.arg("serve")
        .arg("--config")
        .arg(path("deploy/forewarn.container.toml"));
    for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("FOREWARN_")) {
        cmd.env_remove(k);
    }
    let mut serve = spawn_logged("serve", cmd.envs(&env), dir.path())?;
    let api = format!("http://127.0.0.1:{http_port}");
    eventually("/readyz 200", Duration::from_secs(45), || async {
        Ok(get_json(&format!("{api}/readyz"))
            .await
            .ok()
            .filter(|(s, _)| *s == 200))
    })
    .await?;

    // Series with labels appear once used: lag after the first probe of the
    // assigned partitions, HTTP series after requests, the per-device series
    // once the allow-listed device has a scored batch.
    let messages: Vec<(String, Vec<u8>)> = read_tep(&shared_data("tep/d00_te.dat"))?
        .iter()
        .take(200)
        .enumerate()
        .map(|(i, row)| {
            let ts = 1_767_225_600_000 + i as i64 * 180_000;
            (DEVICE.to_string(), encode_reading(DEVICE, ts, row))
        })
        .collect();
    produce(&broker.producer(), "forewarn.readings", &messages).await?;
    let wanted = referenced_metrics();
    let missing = |text: &str| -> Vec<(String, &'static str)> {
        let have = sample_names(text);
        wanted
            .iter()
            .filter(|(n, _)| !have.contains(*n))
            .map(|(n, w)| (n.clone(), *w))
            .collect()
    };
    let scrape = eventually("every queried metric", Duration::from_secs(30), || async {
        let text = get_text(&format!("{api}/metrics")).await?;
        Ok(missing(&text).is_empty().then_some(text))
    })
    .await;
    let text = get_text(&format!("{api}/metrics")).await?;
    assert!(
        scrape.is_ok(),
        "queried but not exported by a running instance: {:?}",
        missing(&text)
    );
    assert_eq!(metric(&text, "forewarn_ready"), Some(1.0));
    assert!(wanted.len() >= 20, "{wanted:?}");

    let status = serve.terminate(Duration::from_secs(20))?;
    assert!(
        status.success(),
        "serve exited with {status}:\n{}",
        serve.log()
    );
    Ok(())
}

// ---------------------------------------------------------------------------
// External validators.

/// docker-compose config, promtool check/test, kubernetes-validate: run when
/// installed (`bash scripts/deploy-checks.sh` installs them and runs all).
#[test]
fn external_validators_accept_the_files() {
    let out = Command::new("bash")
        .arg(path("scripts/deploy-checks.sh"))
        .args(["--no-install", "--no-tests"])
        .output()
        .unwrap();
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("{log}");
    assert!(
        out.status.success(),
        "scripts/deploy-checks.sh failed:\n{log}"
    );
}
