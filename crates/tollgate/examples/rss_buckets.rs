//! How much resident memory one GCRA bucket costs in the memory store.
//!
//! Creates 1,000,000 distinct buckets (one check each for distinct tenants under a limit of
//! 100 requests per day: one request takes 14.4 minutes to refill, so no bucket is full again,
//! and none is evicted, while this runs), and reads the process's resident set size (`VmRSS`
//! in `/proc/self/status`) before and after. The tenant names are written into one reused
//! buffer, so they are not counted.
//!
//! ```text
//! cargo run --release -p tollgate --example rss_buckets
//! ```

use std::fmt::Write as _;

use futures::FutureExt;
use tollgate::{Cost, LimitKind, LimitSpec, Limiter, Policy, Rule, Subject, Window};

const BUCKETS: usize = 1_000_000;

/// The resident set size of this process, in bytes.
fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status (Linux)");
    let kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .expect("a VmRSS line in kB");
    kib * 1024
}

fn check(limiter: &Limiter, tenant: &str) -> bool {
    limiter
        .check(&Subject::new().tenant(tenant), Cost::ONE)
        .now_or_never()
        .expect("the memory store's future is ready at once")
        .expect("the memory store does not fail")
        .is_allowed()
}

fn main() {
    let policy = Policy::builder()
        .rule(
            Rule::builder("per-tenant")
                .per("tenant")
                .limit(LimitSpec::new(LimitKind::Requests, 100, Window::DAY)),
        )
        .build()
        .expect("a valid policy");
    let limiter = Limiter::with_policy(policy);
    let mut tenant = String::with_capacity(32);

    // One bucket first, so that lazily built state (hash keys, shard maps' first allocation
    // of the empty `other` maps, stats) is in place before the baseline.
    assert!(check(&limiter, "warm-up"));
    let before = rss_bytes();
    for i in 0..BUCKETS {
        tenant.clear();
        write!(tenant, "tenant-{i}").expect("writing to a String");
        assert!(check(&limiter, &tenant), "tenant {i} was denied");
    }
    let after = rss_bytes();

    let held = limiter.store().len();
    assert_eq!(held, BUCKETS + 1, "every bucket is still held");
    let grown = after.saturating_sub(before);
    println!("buckets created:  {BUCKETS}");
    println!("buckets held:     {held}");
    println!("VmRSS before:     {before} bytes");
    println!("VmRSS after:      {after} bytes");
    println!("RSS growth:       {grown} bytes");
    println!("bytes per bucket: {:.1}", grown as f64 / BUCKETS as f64);
}
