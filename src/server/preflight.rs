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
    let (soft, _hard) = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_MEMLOCK)
        .map_err(|e| ServerError::MemlockTooSmall(format!("cannot read RLIMIT_MEMLOCK: {e}")))?;
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
    io_uring::IoUring::new(4)
        .map(drop)
        .map_err(|e| ServerError::IoUringUnavailable(explain_io_uring_error(&e)))
}

/// What an io_uring_setup failure means for the operator, and how to fix it.
fn explain_io_uring_error(error: &std::io::Error) -> String {
    let hint = match error.raw_os_error() {
        Some(libc::ENOSYS) => "the kernel has no io_uring (Linux 5.8 or later is needed)",
        Some(libc::EPERM) => {
            "io_uring is blocked: check the sysctl kernel.io_uring_disabled (must be 0, or 1 \
             with this user in kernel.io_uring_group) and the container's seccomp profile \
             (docker: --security-opt seccomp=unconfined or a profile allowing \
             io_uring_setup/io_uring_enter/io_uring_register)"
        }
        Some(libc::ENOMEM) => "not enough locked memory for an io_uring: raise `ulimit -l`",
        _ => "io_uring_setup failed",
    };
    format!("{hint} ({error})")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_uring_errors_name_the_cause_and_the_fix() {
        let text = |errno| explain_io_uring_error(&std::io::Error::from_raw_os_error(errno));
        assert!(text(libc::ENOSYS).contains("Linux 5.8"));
        let blocked = text(libc::EPERM);
        assert!(blocked.contains("kernel.io_uring_disabled") && blocked.contains("seccomp"));
        assert!(text(libc::ENOMEM).contains("ulimit -l"));
        assert!(text(libc::EINVAL).starts_with("io_uring_setup failed"));
    }

    #[test]
    fn this_machine_passes_the_checks() {
        // The test suite runs the server; a failure here explains every other failure.
        assert!(check().is_ok(), "{:?}", check());
    }
}
