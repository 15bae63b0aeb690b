//! `mllpd-lazyfs BACKING MOUNTPOINT`: mounts the lazy file system until a signal.
//!
//! SIGUSR1 pulls the plug (everything not made durable is discarded, then it unmounts and
//! exits 0); SIGTERM or SIGINT unmount cleanly (everything is written back first). It prints
//! one line when mounted and one with what a power loss discarded, for scripts to wait on.

use std::path::PathBuf;
use std::process::ExitCode;

use signal_hook::consts::{SIGINT, SIGTERM, SIGUSR1};

fn main() -> ExitCode {
    let args: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    let [backing, mountpoint] = args.as_slice() else {
        eprintln!("usage: mllpd-lazyfs BACKING MOUNTPOINT   (SIGUSR1: power loss; SIGTERM: clean unmount)");
        return ExitCode::from(2);
    };
    if let Err(reason) = mllpd_lazyfs::available() {
        eprintln!("mllpd-lazyfs: {reason}");
        return ExitCode::FAILURE;
    }
    let mut signals = match signal_hook::iterator::Signals::new([SIGUSR1, SIGTERM, SIGINT]) {
        Ok(signals) => signals,
        Err(error) => {
            eprintln!("mllpd-lazyfs: cannot handle signals: {error}");
            return ExitCode::FAILURE;
        }
    };
    let mount = match mllpd_lazyfs::LazyMount::mount(backing, mountpoint) {
        Ok(mount) => mount,
        Err(error) => {
            eprintln!(
                "mllpd-lazyfs: cannot mount {}: {error}",
                mountpoint.display()
            );
            return ExitCode::FAILURE;
        }
    };
    println!(
        "mounted {} over {}",
        mountpoint.display(),
        backing.display()
    );
    let signal = signals.forever().next();
    if signal == Some(SIGUSR1) {
        let loss = mount.power_off();
        println!(
            "power off: discarded {} bytes in {} files and {} directory entries",
            loss.bytes, loss.files, loss.entries
        );
    }
    match mount.unmount() {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("mllpd-lazyfs: unmount: {error}");
            ExitCode::FAILURE
        }
    }
}
