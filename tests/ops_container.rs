//! The container (issue 12, item 6). Under the shipped seccomp profile
//! (deploy/seccomp-io_uring.json) mllpd serves on its io_uring; under Docker's and podman's
//! default profiles (io_uring blocked, answered EPERM or ENOSYS) it refuses to start and names
//! the seccomp filter and the fix. The shipped deploy/Dockerfile builds with podman and the
//! container runs as the unprivileged user, answers MLLP and its HEALTHCHECK, and drains on stop.
//!
//! The image holds what the Dockerfile ships: the build stage's own command (a static release
//! build, `+crt-static`) runs here, into its own target directory, and its output is given to
//! podman in place of that stage (`--build-context build=DIR`: no base image can be pulled
//! here); the runtime stage runs unchanged. The binary must be static (`file`, `ldd`) and the
//! image must hold nothing but it and the data directory (no shared library).
//!
//! The profile is loaded by tests/ops_seccomp_exec.py through libseccomp (Debian's
//! python3-seccomp), in Docker's JSON format, as a container runtime loads it.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::*;

const PROFILE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/seccomp-io_uring.json");
const LOADER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/ops_seccomp_exec.py");
const DOCKERFILE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/Dockerfile");
/// Debian's Python, which python3-seccomp installs into (not a pyenv one on PATH).
const DEBIAN_PYTHON: &str = "/usr/bin/python3";
const IO_URING_CALLS: &str = "io_uring_setup,io_uring_enter,io_uring_register";

fn seccomp_loader_present() -> bool {
    let present = Command::new(DEBIAN_PYTHON)
        .args(["-c", "import seccomp"])
        .output()
        .is_ok_and(|o| o.status.success());
    require(
        "Debian's python3-seccomp (libseccomp's binding)",
        present,
        "apt-get install python3-seccomp",
    )
}

/// mllpd started through the loader under the shipped profile, less `extra` options.
fn under_profile(extra: &[&str]) -> Command {
    let mut command = Command::new(DEBIAN_PYTHON);
    command
        .arg(LOADER)
        .arg(PROFILE)
        .args(extra)
        .arg("--")
        .arg(env!("CARGO_BIN_EXE_mllpd"));
    command
}

#[test]
fn the_shipped_seccomp_profile_lets_mllpd_serve_on_io_uring() {
    if !seccomp_loader_present() {
        return;
    }
    let server = Server::start_with(under_profile(&[]), &[("SOCKET_IO", "uring")]);
    let status = std::fs::read_to_string(format!("/proc/{}/status", server.pid())).unwrap();
    assert!(
        status.lines().any(|l| l == "Seccomp:\t2"),
        "mllpd runs without the filter:\n{status}"
    );
    let mut client = server.connect();
    client.send_message(&adt("SECCOMP-1"));
    client.expect_adt_ack("AA", "SECCOMP-1");
    let admin = admin_addr(&server);
    assert_eq!(http_get(admin, "/healthz").map(|(s, _)| s), Some(200));
}

#[test]
fn under_the_runtimes_default_profiles_the_start_error_names_seccomp_and_the_fix() {
    if !seccomp_loader_present() {
        return;
    }
    // Docker's default answers EPERM for what it does not allow, podman's ENOSYS.
    for (errno, runtime) in [("1", "docker"), ("38", "podman")] {
        let data_dir = tempfile::tempdir().unwrap();
        let output = under_profile(&["--deny", IO_URING_CALLS, "--errno", errno])
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("LISTEN_ADDR", "127.0.0.1:0")
            .env("ADMIN_ADDR", "127.0.0.1:0")
            .env("DATA_DIR", data_dir.path())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{runtime}: {stderr}");
        for needle in [
            "io_uring is blocked by this process's seccomp filter",
            "--security-opt seccomp=deploy/seccomp-io_uring.json",
        ] {
            assert!(
                stderr.contains(needle),
                "{runtime}: {needle:?} not in {stderr}"
            );
        }
    }
}

/// Runs `podman` with `args`; panics with its output when it fails.
fn podman(args: &[&str]) -> Output {
    let output = Command::new("podman").args(args).output().unwrap();
    assert!(
        output.status.success(),
        "podman {args:?}: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// The Dockerfile's build stage, run here: its `cargo build` (same flags, same target) into
/// `static-release/` in this test's target directory, so it neither fights the test build nor
/// starts from nothing on every run. Returns the binary.
fn static_build() -> PathBuf {
    // CARGO_BIN_EXE_mllpd is TARGET_DIR/{debug,release}/mllpd.
    let target_dir = Path::new(env!("CARGO_BIN_EXE_mllpd"))
        .ancestors()
        .nth(2)
        .unwrap()
        .join("static-release");
    let started = Instant::now();
    let output = Command::new(option_env!("CARGO").unwrap_or("cargo"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["build", "--release", "--locked", "--bin", "mllpd"])
        .args(["--target", "x86_64-unknown-linux-gnu"])
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("CARGO_BUILD_RUSTFLAGS")
        .env("RUSTFLAGS", "-C target-feature=+crt-static")
        .env("CARGO_TARGET_DIR", &target_dir)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "the Dockerfile's static build failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    eprintln!("static release build: {:?}", started.elapsed());
    target_dir.join("x86_64-unknown-linux-gnu/release/mllpd")
}

/// Runs `program args`: what it wrote (stdout, then stderr).
fn run(program: &str, args: &[&str]) -> String {
    let output = Command::new(program).args(args).output().unwrap();
    String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr)
}

/// The Dockerfile's build stage output: `out/` with the static mllpd and the data directory.
fn build_stage(dir: &Path, binary: &Path) {
    let binary_str = binary.to_str().unwrap();
    let file = run("file", &["-b", binary_str]);
    assert!(
        file.contains("statically linked") || file.contains("static-pie linked"),
        "not static: {file}"
    );
    let ldd = run("ldd", &[binary_str]);
    assert!(
        ldd.contains("not a dynamic executable") || ldd.contains("statically linked"),
        "ldd finds shared libraries: {ldd}"
    );
    let out = dir.join("out");
    std::fs::create_dir_all(out.join("var/lib/mllpd")).unwrap();
    std::fs::copy(binary, out.join("mllpd")).unwrap();
}

/// Every path in the image, from a container made of it (`podman export`), less the ones the
/// runtime adds to every container (mount points, /etc/hosts and such).
fn image_files(image: &str, dir: &Path) -> Vec<String> {
    let name = format!("mllpd-files-{}", std::process::id());
    podman(&["create", "--name", &name, image]);
    let tar = dir.join("image.tar");
    let exported = Command::new("podman")
        .args(["export", "-o", tar.to_str().unwrap(), &name])
        .output()
        .unwrap();
    let _ = Command::new("podman").args(["rm", "-f", &name]).output();
    assert!(exported.status.success(), "{exported:?}");
    let listing = Command::new("tar").arg("-tf").arg(&tar).output().unwrap();
    assert!(listing.status.success(), "{listing:?}");
    let added_by_runtime = ["dev", "etc", "proc", "run", "sys"];
    let mut files: Vec<String> = String::from_utf8_lossy(&listing.stdout)
        .lines()
        .map(|l| l.trim_start_matches("./").trim_end_matches('/').to_owned())
        .filter(|l| !l.is_empty() && l != ".")
        .filter(|l| !added_by_runtime.contains(&l.split('/').next().unwrap_or_default()))
        .collect();
    files.sort();
    files
}

/// Removes the container and the image, whatever the test's outcome.
struct Cleanup {
    container: String,
    image: String,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = Command::new("podman")
            .args(["rm", "-f", "-t", "0", &self.container])
            .output();
        let _ = Command::new("podman")
            .args(["rmi", "-f", &self.image])
            .output();
    }
}

#[test]
fn the_image_builds_runs_unprivileged_and_answers_mllp_and_its_healthcheck() {
    // runc: crun refuses hosts with hybrid cgroups (v1 controllers plus an unified v2 mount),
    // which this machine has.
    if !require_program("podman", "apt-get install podman")
        || !require_program("runc", "apt-get install runc")
    {
        return;
    }
    if !require_program("file", "apt-get install file") {
        return;
    }
    let stage = tempfile::tempdir().unwrap();
    build_stage(stage.path(), &static_build());
    let context = tempfile::tempdir().unwrap();
    let cleanup = Cleanup {
        container: format!("mllpd-test-{}", std::process::id()),
        image: format!("localhost/mllpd-test:{}", std::process::id()),
    };
    let build_context = format!("build={}", stage.path().display());
    let context_dir = context.path().to_str().unwrap();
    podman(&[
        "build",
        "--format",
        "docker",
        "-q",
        "--build-context",
        &build_context,
        "-f",
        DOCKERFILE,
        "-t",
        &cleanup.image,
        context_dir,
    ]);
    let inspect = |format: &str| {
        let out = podman(&["image", "inspect", "--format", format, &cleanup.image]).stdout;
        String::from_utf8_lossy(&out).trim().to_owned()
    };
    assert_eq!(inspect("{{.Config.User}}"), "10001:10001");
    assert!(inspect("{{.Config.Volumes}}").contains("/var/lib/mllpd"));
    let exposed = inspect("{{.Config.ExposedPorts}}");
    assert!(
        exposed.contains("2575/tcp") && exposed.contains("9575/tcp"),
        "{exposed}"
    );
    assert!(inspect("{{.Config.Healthcheck}}").contains("/mllpd health"));
    // What the image holds: the binary and the data directory, no C library beside it.
    let files = image_files(&cleanup.image, stage.path());
    assert_eq!(
        files,
        ["mllpd", "var", "var/lib", "var/lib/mllpd"],
        "{files:?}"
    );

    let (port, admin) = (free_port(), free_port());
    let (nofile, _) =
        nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE).unwrap();
    let nofile = format!("nofile={nofile}:{nofile}");
    // A host name, not an address: the static binary resolves it inside the image, from the
    // /etc/hosts the runtime provides (no NSS library to load; seen with Debian's glibc 2.36).
    let listen = format!("LISTEN_ADDR=localhost:{port}");
    let admin_env = format!("ADMIN_ADDR=127.0.0.1:{admin}");
    let seccomp = format!("seccomp={PROFILE}");
    // The runtime's defaults for open files and processes are above what this machine lets
    // root set, so both are given; memlock as README documents it.
    podman(&[
        "--runtime",
        "runc",
        "run",
        "-d",
        "--name",
        &cleanup.container,
        "--network",
        "host",
        "--security-opt",
        &seccomp,
        "--ulimit",
        "memlock=8388608:8388608",
        "--ulimit",
        &nofile,
        "--ulimit",
        "nproc=4096:4096",
        "-e",
        &listen,
        "-e",
        &admin_env,
        "-e",
        "SOCKET_IO=uring",
        "-e",
        "PRE_SHUTDOWN_DELAY=0s",
        &cleanup.image,
    ]);
    let admin_addr = format!("127.0.0.1:{admin}").parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while http_get(admin_addr, "/readyz").map(|(s, _)| s) != Some(200) {
        let logs = podman(&["logs", &cleanup.container]);
        assert!(
            Instant::now() < deadline,
            "the container never got ready: {}",
            String::from_utf8_lossy(&logs.stderr)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let mut client = Client::connect(format!("127.0.0.1:{port}").parse().unwrap());
    client.send_message(&adt("IMAGE-1"));
    client.expect_adt_ack("AA", "IMAGE-1");
    podman(&["healthcheck", "run", &cleanup.container]);
    drop(client);
    podman(&["stop", "-t", "30", &cleanup.container]);
    let state = podman(&[
        "inspect",
        "--format",
        "{{.State.ExitCode}}",
        &cleanup.container,
    ]);
    assert_eq!(
        String::from_utf8_lossy(&state.stdout).trim(),
        "0",
        "drained and exited 0"
    );
    let logs = podman(&["logs", &cleanup.container]);
    let logs = String::from_utf8_lossy(&logs.stderr);
    assert!(
        logs.contains("mllpd started") && logs.contains(r#""socket_io":"uring""#),
        "{logs}"
    );
}
