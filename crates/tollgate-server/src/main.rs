//! `tollgate`: the rate limit service and its command-line client.

use clap::Parser;

fn main() -> std::process::ExitCode {
    tollgate_server::run(tollgate_server::Cli::parse())
}
