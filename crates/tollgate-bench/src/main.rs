//! `tollgate-bench`: concurrent tollgate decisions against a Redis server or cluster. See the
//! library docs (`tollgate_bench`), `BENCHMARKS.md` and `docs/bench-redis.md`.

use clap::Parser;

fn main() {
    let args = tollgate_bench::Args::parse();
    if let Err(e) = tollgate_bench::run(&args) {
        eprintln!("tollgate-bench: {e}");
        std::process::exit(1);
    }
}
