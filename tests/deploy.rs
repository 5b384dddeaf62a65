//! `deploy/`: the Kubernetes Indexed Job that runs bench as N drivers. The
//! manifest is parsed as YAML (as kubectl would), and its shell command is
//! run for every completion index, to check that index K-1 becomes
//! `--driver K/N`, that the N drivers are each there once, and that the
//! real socklab takes the arguments (no usage error).
//!
//! YAML: yaml-rust2 (a dev-dependency, default features off so it pulls no
//! encoding tables), a maintained YAML 1.2 parser; serde_yaml is
//! unmaintained, and a parser by hand would accept a manifest kubectl
//! rejects.

use std::path::Path;
use std::process::Command;

use yaml_rust2::{Yaml, YamlLoader};

const MANIFEST: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/bench-indexed-job.yaml");

fn manifest() -> Yaml {
    let text = std::fs::read_to_string(MANIFEST).expect("read the manifest");
    let mut docs = YamlLoader::load_from_str(&text).expect("the manifest is YAML");
    assert_eq!(docs.len(), 1, "one document");
    docs.remove(0)
}

/// The bench container's environment, as (name, value).
fn env(container: &Yaml) -> Vec<(String, String)> {
    container["env"]
        .as_vec()
        .expect("env is a list")
        .iter()
        .map(|e| {
            let name = e["name"].as_str().expect("env name").to_string();
            let value = e["value"].as_str().expect("env value is a string").to_string();
            (name, value)
        })
        .collect()
}

/// Runs the container's command for completion `index`, with `socklab`
/// on PATH being `bin`: its exit status, stdout and stderr.
fn run_pod(container: &Yaml, index: usize, bin: &Path, overrides: &[(&str, &str)]) -> std::process::Output {
    let command: Vec<&str> = container["command"]
        .as_vec()
        .expect("command is a list")
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    let args: Vec<&str> = container["args"]
        .as_vec()
        .expect("args is a list")
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    let mut cmd = Command::new(command[0]);
    cmd.args(&command[1..]).args(&args);
    cmd.env_clear()
        .env("PATH", format!("{}:/usr/bin:/bin", bin.display()));
    for (name, value) in env(container) {
        cmd.env(name, value);
    }
    for (name, value) in overrides {
        cmd.env(name, value);
    }
    // What Kubernetes sets in each pod of an Indexed Job.
    cmd.env("JOB_COMPLETION_INDEX", index.to_string());
    cmd.output().expect("run the pod's command")
}

#[test]
fn the_indexed_job_maps_each_index_to_one_driver_of_n() {
    let job = manifest();
    assert_eq!(job["apiVersion"].as_str(), Some("batch/v1"));
    assert_eq!(job["kind"].as_str(), Some("Job"));
    let spec = &job["spec"];
    assert_eq!(
        spec["completionMode"].as_str(),
        Some("Indexed"),
        "JOB_COMPLETION_INDEX is set only in an Indexed Job"
    );
    let completions = spec["completions"].as_i64().expect("completions") as usize;
    assert_eq!(
        spec["parallelism"].as_i64(),
        Some(completions as i64),
        "all drivers run at once"
    );
    let container = &spec["template"]["spec"]["containers"][0];
    let drivers: usize = env(container)
        .iter()
        .find(|(n, _)| n == "DRIVERS")
        .expect("a DRIVERS variable")
        .1
        .parse()
        .unwrap();
    assert_eq!(drivers, completions, "DRIVERS is the number of pods");

    // A stand-in socklab that prints its arguments, one a line.
    let dir = tempfile::tempdir().unwrap();
    let stub = dir.path().join("socklab");
    std::fs::write(&stub, "#!/bin/sh\nprintf '%s\\n' \"$@\"\n").unwrap();
    std::fs::set_permissions(&stub, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    // Index K-1 is driver K of N, so the N pods are drivers 1 to N, once each.
    for index in 0..completions {
        let out = run_pod(container, index, dir.path(), &[]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let args: Vec<String> = String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(String::from)
            .collect();
        assert_eq!(args[0], "bench");
        let at = args.iter().position(|a| a == "--driver").expect("--driver");
        assert_eq!(args[at + 1], format!("{}/{completions}", index + 1));
    }
}

#[test]
fn socklab_takes_the_jobs_arguments() {
    let job = manifest();
    let container = &job["spec"]["template"]["spec"]["containers"][0];
    let dir = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_socklab"), dir.path().join("socklab")).unwrap();
    // A start already past: bench parses every argument (a usage error
    // would be exit 2), then refuses to start late (exit 1) at once.
    let out = run_pod(container, 0, dir.path(), &[("START_AT", "2000-01-01T00:00:00Z")]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("in the past"), "{stderr}");
}
