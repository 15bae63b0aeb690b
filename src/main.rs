//! The mllpd binary: CLI → Config → logging → run. Everything else lives in the library.

use std::process::ExitCode;

use mllpd::cli::{self, Invocation};
use mllpd::config::{Config, Overrides};

// mimalloc: thread-local free lists suit thread-per-core shards that each allocate and free
// their own connection buffers.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Exit status when the server failed, or `check-config` found the configuration invalid.
const EXIT_FAILURE: u8 = 1;
/// Exit status for a command line or configuration that cannot be used to start.
const EXIT_USAGE: u8 = 2;

fn main() -> ExitCode {
    let invocation = match cli::parse_from(std::env::args_os()) {
        Ok(invocation) => invocation,
        // clap prints help and version to stdout with status 0, errors to stderr with 2.
        Err(error) => error.exit(),
    };
    match invocation {
        Invocation::Serve(overrides) => serve(&overrides),
        Invocation::CheckConfig(overrides) => check_config(&overrides),
        Invocation::Send(args) => mllpd::send::run(&args),
        Invocation::Validate(args) => mllpd::validate::run(&args),
        Invocation::Journal(command) => match mllpd::journal::export::run(&command) {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("mllpd: {error}");
                ExitCode::from(EXIT_FAILURE)
            }
        },
    }
}

/// `mllpd serve`: validates the configuration, sets up logging and runs the server.
fn serve(overrides: &Overrides) -> ExitCode {
    // Before anything starts: a release build never arms test faults by accident.
    if let Err(refused) = mllpd::journal::FaultPlan::check_env() {
        eprintln!("mllpd: {refused}");
        return ExitCode::from(EXIT_USAGE);
    }
    let config = match Config::resolve(overrides) {
        Ok(resolved) => resolved.config,
        Err(error) => {
            eprintln!("mllpd: invalid configuration: {error}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    // Held to the end: dropping it writes out the queued log lines and reports drops.
    let _log = match mllpd::logging::init(&config) {
        Ok(guard) => guard,
        Err(error) => {
            eprintln!("mllpd: {error}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    match mllpd::server::run(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("mllpd: {error}");
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

/// `mllpd check-config`: validates every setting, the CONFIG_FILE and DATA_DIR, and prints a
/// summary.
fn check_config(overrides: &Overrides) -> ExitCode {
    let checked = Config::resolve(overrides).and_then(|resolved| {
        resolved.check_data_dir()?;
        Ok(resolved)
    });
    match checked {
        Ok(resolved) => {
            println!("configuration is valid:\n{}", resolved.summary());
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("mllpd: invalid configuration: {error}");
            ExitCode::from(EXIT_FAILURE)
        }
    }
}
