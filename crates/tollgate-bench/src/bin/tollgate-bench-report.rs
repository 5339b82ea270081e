//! `tollgate-bench-report`: writes `BENCHMARKS.md`'s tables, the README's performance table
//! and the charts in `docs/bench/*.svg` from `docs/bench/results.toml`.
//!
//! ```text
//! cargo run -p tollgate-bench --bin tollgate-bench-report            # write them
//! cargo run -p tollgate-bench --bin tollgate-bench-report -- --check # only tell what is stale
//! ```

use std::path::Path;
use std::process::ExitCode;

fn main() -> ExitCode {
    let check = std::env::args().skip(1).any(|a| a == "--check");
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let root = root.canonicalize().unwrap_or(root);
    let files = match tollgate_bench::report::expected(&root) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("tollgate-bench-report: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut stale = 0;
    for (path, content) in files {
        if std::fs::read_to_string(&path).ok().as_deref() == Some(content.as_str()) {
            continue;
        }
        stale += 1;
        if check {
            eprintln!("stale: {}", path.display());
        } else if let Err(e) = std::fs::write(&path, content) {
            eprintln!("tollgate-bench-report: {}: {e}", path.display());
            return ExitCode::FAILURE;
        } else {
            println!("wrote {}", path.display());
        }
    }
    if check && stale > 0 {
        eprintln!("run `cargo run -p tollgate-bench --bin tollgate-bench-report` to update them");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
