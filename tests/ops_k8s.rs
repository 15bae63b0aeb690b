//! Kubernetes manifests (issue 12, item 7): each kustomize overlay of deploy/k8s renders
//! (`kubectl kustomize`), validates against the Kubernetes API schemas (`kubernetes-validate
//! --strict`, PyPI, schemas bundled: no cluster, no network), and holds what an operator needs:
//! a StatefulSet whose journal volume is DATA_DIR, probes on /readyz and /healthz, a Service
//! with ClientIP affinity, a PodDisruptionBudget, a NetworkPolicy admitting only the MLLP and
//! admin ports, a hardened securityContext with the io_uring seccomp profile, and a grace period
//! longer than PRE_SHUTDOWN_DELAY + DRAIN_TIMEOUT.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;
use serde::Deserialize;
use serde_yaml_ng::Value;

const K8S: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/k8s");

fn tools_present() -> bool {
    require_program(
        "kubectl",
        "apt-get install kubernetes-client (kubectl kustomize)",
    ) && require_program(
        "kubernetes-validate",
        "python3 -m pip install kubernetes-validate",
    )
}

/// The documents `kubectl kustomize` renders for `overlay`, after validating them.
fn render_and_validate(overlay: &str) -> Vec<Value> {
    let output = Command::new("kubectl")
        .args(["kustomize", &format!("{K8S}/overlays/{overlay}")])
        .output()
        .unwrap();
    let rendered = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{overlay}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join(format!("{overlay}.yaml"));
    std::fs::write(&file, &rendered).unwrap();
    validate(&file);
    serde_yaml_ng::Deserializer::from_str(&rendered)
        .map(|doc| Value::deserialize(doc).unwrap())
        .collect()
}

/// `kubernetes-validate --strict` (unknown fields are errors) against Kubernetes 1.30's
/// schemas: the oldest release still widely run that has every field the manifests use.
fn validate(file: &Path) {
    let output = Command::new("kubernetes-validate")
        .args(["--strict", "--no-warn", "-k", "1.30.0"])
        .arg(file)
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && !report.contains("ERROR"),
        "{}: {report}{}",
        file.display(),
        String::from_utf8_lossy(&output.stderr)
    );
}

fn of_kind<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter()
        .filter(|d| d["kind"].as_str() == Some(kind))
        .collect()
}

fn text(value: &Value) -> &str {
    value
        .as_str()
        .unwrap_or_else(|| panic!("not a string: {value:?}"))
}

fn env_value<'a>(container: &'a Value, name: &str) -> &'a str {
    container["env"]
        .as_sequence()
        .and_then(|env| env.iter().find(|e| e["name"].as_str() == Some(name)))
        .map(|e| text(&e["value"]))
        .unwrap_or_else(|| panic!("no {name} in the container's env"))
}

/// Parses a duration the way mllpd does, by asking it (`check-config` prints the value).
fn duration_of(setting: &str, value: &str) -> Duration {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_mllpd"))
        .arg("check-config")
        .env_clear()
        .env(setting, value)
        .env("DATA_DIR", dir.path())
        .output()
        .unwrap();
    assert!(output.status.success(), "{setting}={value} refused");
    let summary = String::from_utf8_lossy(&output.stdout);
    let line = summary
        .lines()
        .find(|l| l.trim_start().starts_with(setting))
        .unwrap();
    let shown = line.split_whitespace().nth(1).unwrap();
    humantime::parse_duration(shown).unwrap()
}

fn check_overlay(overlay: &str) {
    let docs = render_and_validate(overlay);
    let sets = of_kind(&docs, "StatefulSet");
    assert_eq!(sets.len(), 1, "{overlay}: one StatefulSet");
    let pod = &sets[0]["spec"]["template"]["spec"];
    let container = &pod["containers"][0];

    // The journal is a volume per pod, mounted at DATA_DIR.
    let claim = text(&sets[0]["spec"]["volumeClaimTemplates"][0]["metadata"]["name"]);
    let mount = container["volumeMounts"]
        .as_sequence()
        .and_then(|m| m.iter().find(|m| m["name"].as_str() == Some(claim)))
        .unwrap_or_else(|| panic!("{overlay}: the claim {claim} is not mounted"));
    assert_eq!(text(&mount["mountPath"]), env_value(container, "DATA_DIR"));

    // Probes: ready on /readyz (startup too), alive on /healthz, on the admin port.
    assert_eq!(
        text(&container["readinessProbe"]["httpGet"]["path"]),
        "/readyz"
    );
    assert_eq!(
        text(&container["startupProbe"]["httpGet"]["path"]),
        "/readyz"
    );
    assert_eq!(
        text(&container["livenessProbe"]["httpGet"]["path"]),
        "/healthz"
    );
    assert!(env_value(container, "ADMIN_ADDR").ends_with(":9575"));

    // Hardened: non-root, read-only root, no capabilities, no escalation, io_uring's profile.
    let security = &container["securityContext"];
    assert_eq!(pod["securityContext"]["runAsNonRoot"].as_bool(), Some(true));
    assert_eq!(security["readOnlyRootFilesystem"].as_bool(), Some(true));
    assert_eq!(security["allowPrivilegeEscalation"].as_bool(), Some(false));
    assert_eq!(security["capabilities"]["drop"][0].as_str(), Some("ALL"));
    let seccomp = &pod["securityContext"]["seccompProfile"];
    assert_eq!(text(&seccomp["type"]), "Localhost");
    assert_eq!(
        text(&seccomp["localhostProfile"]),
        "profiles/mllpd-io_uring.json",
        "README tells to install deploy/seccomp-io_uring.json under this name"
    );

    // The grace period covers the endpoint's removal and the drain, with a margin.
    let pre = duration_of(
        "PRE_SHUTDOWN_DELAY",
        env_value(container, "PRE_SHUTDOWN_DELAY"),
    );
    let drain = duration_of("DRAIN_TIMEOUT", env_value(container, "DRAIN_TIMEOUT"));
    let grace = Duration::from_secs(pod["terminationGracePeriodSeconds"].as_u64().unwrap());
    assert!(
        grace >= pre + drain + Duration::from_secs(5),
        "{overlay}: grace {grace:?} < PRE_SHUTDOWN_DELAY {pre:?} + DRAIN_TIMEOUT {drain:?} + 5s"
    );
    // The readiness probe notices SIGTERM well inside PRE_SHUTDOWN_DELAY.
    let period = container["readinessProbe"]["periodSeconds"]
        .as_u64()
        .unwrap();
    assert!(
        Duration::from_secs(2 * period) <= pre,
        "{overlay}: probe period {period}s"
    );

    // The MLLP Service keeps a sender on one pod.
    let services = of_kind(&docs, "Service");
    let mllp = services
        .iter()
        .find(|s| s["spec"]["clusterIP"].as_str() != Some("None"))
        .unwrap();
    assert_eq!(text(&mllp["spec"]["sessionAffinity"]), "ClientIP");

    assert_eq!(of_kind(&docs, "PodDisruptionBudget").len(), 1);

    // The NetworkPolicy admits exactly the MLLP and admin ports.
    let policies = of_kind(&docs, "NetworkPolicy");
    assert_eq!(policies.len(), 1);
    let mut ports: Vec<u64> = policies[0]["spec"]["ingress"]
        .as_sequence()
        .unwrap()
        .iter()
        .flat_map(|rule| rule["ports"].as_sequence().cloned().unwrap_or_default())
        .map(|p| p["port"].as_u64().unwrap())
        .collect();
    ports.sort_unstable();
    assert_eq!(ports, [2575, 9575]);
}

#[test]
fn the_overlays_render_validate_and_hold_the_operations_checklist() {
    if !tools_present() {
        return;
    }
    for overlay in ["dev", "prod"] {
        check_overlay(overlay);
    }
}

#[test]
fn the_schema_check_catches_a_misspelled_field() {
    if !tools_present() {
        return;
    }
    // The validator must be able to fail: a probe field misspelled as in a real slip.
    let docs = render_and_validate("dev");
    let mut set = of_kind(&docs, "StatefulSet")[0].clone();
    set["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["periodSecond"] =
        Value::from(2);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("broken.yaml");
    std::fs::write(&file, serde_yaml_ng::to_string(&set).unwrap()).unwrap();
    let result = std::panic::catch_unwind(|| validate(&file));
    assert!(
        result.is_err(),
        "kubernetes-validate accepted an unknown field"
    );
}
