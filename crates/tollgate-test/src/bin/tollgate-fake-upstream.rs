//! `tollgate-fake-upstream`: the fake model provider of the gateway's tests
//! ([`tollgate_test::FakeUpstream`]) as a process of its own, for the gateway's benchmarks
//! (`crates/tollgate-bench/scripts/gateway.sh`): tollgate, LiteLLM's proxy and the load
//! generator all talk to the same upstream over loopback.
//!
//! It prints its base URL (`http://127.0.0.1:PORT`; OpenAI's base URL is that plus `/v1`) on
//! the first line of its standard output and serves until killed. It records no requests, so
//! that its memory stays flat however long it runs. Per-request behaviour comes from the
//! `x-fake-*` headers (see the library's documentation).

use std::io::Write;

fn main() -> std::io::Result<()> {
    let threads = std::env::args()
        .skip_while(|a| a != "--threads")
        .nth(1)
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(1);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()?;
    rt.block_on(async {
        let fake = tollgate_test::FakeUpstream::start().await?;
        fake.set_recording(false);
        let mut out = std::io::stdout().lock();
        writeln!(out, "{}", fake.url())?;
        out.flush()?;
        drop(out);
        std::future::pending::<()>().await;
        Ok(())
    })
}
