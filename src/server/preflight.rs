//! Start-up checks that turn a missing kernel facility into a clear message instead of a
//! panic deep inside glommio: io_uring must be allowed (kernel ≥ 5.8, not blocked by seccomp
//! or `kernel.io_uring_disabled`), and RLIMIT_MEMLOCK must be at least glommio's minimum.

use super::ServerError;

/// glommio's minimum locked-memory limit (it refuses to start an executor below this).
pub const MEMLOCK_BYTES_MIN: u64 = 512 * 1024;

/// Checks io_uring and the locked-memory limit.
pub fn check() -> Result<(), ServerError> {
    check_memlock()?;
    check_io_uring()
}

fn check_memlock() -> Result<(), ServerError> {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (mut soft, hard) = getrlimit(Resource::RLIMIT_MEMLOCK)
        .map_err(|e| ServerError::MemlockTooSmall(format!("cannot read RLIMIT_MEMLOCK: {e}")))?;
    // Kubernetes has no per-pod rlimits: a container gets its runtime's soft limit, often
    // below a hard limit that would do. An unprivileged process may raise its soft limit up to
    // the hard one, so that is tried before giving up.
    if soft < MEMLOCK_BYTES_MIN
        && hard >= MEMLOCK_BYTES_MIN
        && setrlimit(Resource::RLIMIT_MEMLOCK, hard, hard).is_ok()
    {
        tracing::info!(
            from = soft,
            to = hard,
            "RLIMIT_MEMLOCK soft limit raised to the hard limit"
        );
        soft = hard;
    }
    if soft < MEMLOCK_BYTES_MIN {
        return Err(ServerError::MemlockTooSmall(format!(
            "RLIMIT_MEMLOCK is {soft} bytes; glommio needs at least {MEMLOCK_BYTES_MIN}. Raise it \
             with `ulimit -l 8192` in the shell, `LimitMEMLOCK=8M` in a systemd unit, \
             `--ulimit memlock=8388608` for docker, or memlock in /etc/security/limits.conf"
        )));
    }
    Ok(())
}

fn check_io_uring() -> Result<(), ServerError> {
    io_uring::IoUring::new(4).map(drop).map_err(|e| {
        let blocker = Blocker {
            seccomp_filter: seccomp_filtered(),
            io_uring_disabled: io_uring_disabled(),
        };
        ServerError::IoUringUnavailable(explain_io_uring_error(&e, blocker))
    })
}

/// What may stand between mllpd and io_uring besides the kernel's age.
#[derive(Clone, Copy, Debug, Default)]
struct Blocker {
    /// A seccomp filter is on this process (`Seccomp: 2` in /proc/self/status): a container
    /// runtime's default profile (Docker, podman) answers io_uring_setup with EPERM or ENOSYS.
    seccomp_filter: bool,
    /// The sysctl `kernel.io_uring_disabled` (Linux 6.6+), when readable and not 0.
    io_uring_disabled: Option<u8>,
}

/// Whether a seccomp filter is on this process.
fn seccomp_filtered() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|status| {
        status
            .lines()
            .any(|l| l.strip_prefix("Seccomp:").is_some_and(|v| v.trim() == "2"))
    })
}

/// `kernel.io_uring_disabled` when it is set (not 0).
fn io_uring_disabled() -> Option<u8> {
    std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .filter(|v| *v != 0)
}

/// The fix for a seccomp filter that blocks io_uring, for every runtime mllpd ships files for.
const SECCOMP_FIX: &str = "run with a profile that allows io_uring_setup, io_uring_enter and \
    io_uring_register: docker/podman `--security-opt seccomp=deploy/seccomp-io_uring.json`, \
    Kubernetes `seccompProfile: {type: Localhost, localhostProfile: profiles/mllpd-io_uring.json}`";

/// What an io_uring_setup failure means for the operator, and how to fix it. A seccomp filter
/// answers EPERM (Docker's default) or ENOSYS (podman's), so it is named before the kernel's age
/// whenever one is on the process.
fn explain_io_uring_error(error: &std::io::Error, blocker: Blocker) -> String {
    let errno = error.raw_os_error();
    let blocked = matches!(errno, Some(libc::EPERM | libc::ENOSYS));
    let hint = match (errno, blocker) {
        (
            _,
            Blocker {
                io_uring_disabled: Some(n),
                ..
            },
        ) if blocked => format!(
            "io_uring is disabled by the sysctl kernel.io_uring_disabled = {n} (must be 0, or 1 \
             with this user's group in kernel.io_uring_group)"
        ),
        (
            _,
            Blocker {
                seccomp_filter: true,
                ..
            },
        ) if blocked => format!(
            "io_uring is blocked by this process's seccomp filter (the default profile of Docker \
             and podman blocks it): {SECCOMP_FIX}"
        ),
        (Some(libc::ENOSYS), _) => {
            "the kernel has no io_uring (Linux 5.8 or later is needed)".to_owned()
        }
        (Some(libc::EPERM), _) => format!(
            "io_uring is blocked: check the sysctl kernel.io_uring_disabled (must be 0, or 1 \
             with this user in kernel.io_uring_group) and the seccomp profile ({SECCOMP_FIX})"
        ),
        (Some(libc::ENOMEM), _) => {
            "not enough locked memory for an io_uring: raise `ulimit -l` (docker: --ulimit \
             memlock=-1)"
                .to_owned()
        }
        _ => "io_uring_setup failed".to_owned(),
    };
    format!("{hint} ({error})")
}

/// Start-up lines for the drop-in values that switch a bound off (issue 12): the operator sees
/// what no longer protects the server.
pub fn log_unbounded_settings(
    connections_max: Option<usize>,
    keep_alive_period: Option<std::time::Duration>,
    connect_timeout: Option<std::time::Duration>,
    tls: bool,
) {
    if connections_max.is_none() {
        let nofile = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
            .map_or_else(|e| format!("unknown ({e})"), |(soft, _)| soft.to_string());
        tracing::info!(
            open_files_max = %nofile,
            "MAX_CONNECTIONS=0: no connection limit of mllpd's own; the open-file limit \
             (RLIMIT_NOFILE) still applies, and accepts over it fail"
        );
    }
    if keep_alive_period.is_none() {
        tracing::info!("KEEP_ALIVE_PERIOD=0: TCP keepalive is off; a peer that vanished without a FIN is found only by IDLE_TIMEOUT");
    }
    if connect_timeout.is_none() {
        tracing::warn!(
            tls,
            "CONNECT_TIMEOUT=0: no TLS handshake deadline; a client that stalls in its handshake \
             holds its connection until it goes away (TCP keepalive finds a vanished one)"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_uring_errors_name_the_cause_and_the_fix() {
        let text = |errno| {
            explain_io_uring_error(
                &std::io::Error::from_raw_os_error(errno),
                Blocker::default(),
            )
        };
        assert!(text(libc::ENOSYS).contains("Linux 5.8"));
        let blocked = text(libc::EPERM);
        assert!(blocked.contains("kernel.io_uring_disabled") && blocked.contains("seccomp"));
        assert!(text(libc::ENOMEM).contains("ulimit -l"));
        assert!(text(libc::EINVAL).starts_with("io_uring_setup failed"));
    }

    #[test]
    fn a_seccomp_filter_is_named_whatever_errno_it_answers() {
        let filtered = Blocker {
            seccomp_filter: true,
            io_uring_disabled: None,
        };
        for errno in [libc::EPERM, libc::ENOSYS] {
            let text = explain_io_uring_error(&std::io::Error::from_raw_os_error(errno), filtered);
            assert!(text.starts_with("io_uring is blocked by this process's seccomp filter"));
            assert!(text.contains("deploy/seccomp-io_uring.json"), "{text}");
        }
        let disabled = Blocker {
            seccomp_filter: true,
            io_uring_disabled: Some(2),
        };
        let text =
            explain_io_uring_error(&std::io::Error::from_raw_os_error(libc::EPERM), disabled);
        assert!(text.contains("kernel.io_uring_disabled = 2"), "{text}");
    }

    #[test]
    fn this_machine_passes_the_checks() {
        // The test suite runs the server; a failure here explains every other failure.
        assert!(check().is_ok(), "{:?}", check());
    }
}
