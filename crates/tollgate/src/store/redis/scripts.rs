//! The Lua scripts, loaded once per server and re-sent when the server has forgotten them.

use std::sync::LazyLock;

/// A script's source and SHA-1.
pub(super) struct Script {
    pub(super) source: String,
    pub(super) sha: String,
}

impl Script {
    /// `entry` after the whole of `algorithms.lua`.
    fn new(entry: &str) -> Self {
        Self::standalone(format!("{}\n{}", include_str!("lua/algorithms.lua"), entry))
    }

    /// `entry` after the small `fast_gcra.lua` only, not the whole of `algorithms.lua`.
    fn fast(entry: &str) -> Self {
        Self::standalone(format!("{}\n{}", include_str!("lua/fast_gcra.lua"), entry))
    }

    /// A script that needs no prelude: an EVALSHA runs only its own chunk.
    fn standalone(source: String) -> Self {
        let sha = redis::Script::new(&source).get_hash().to_owned();
        Script { source, sha }
    }
}

/// `fast_decide.lua`: decisions whose every op is GCRA or concurrency (needs no prelude).
pub(super) static FAST_DECIDE: LazyLock<Script> =
    LazyLock::new(|| Script::standalone(include_str!("lua/fast_decide.lua").to_owned()));
/// `fast_check.lua`: one GCRA limit with scale 1, spent if it admits, without a request id.
pub(super) static FAST_CHECK: LazyLock<Script> =
    LazyLock::new(|| Script::standalone(include_str!("lua/fast_check.lua").to_owned()));
/// `fast_settle.lua`: GCRA refunds and charges, concurrency releases and renewals.
pub(super) static FAST_SETTLE: LazyLock<Script> =
    LazyLock::new(|| Script::fast(include_str!("lua/fast_settle.lua")));

/// `decide.lua`.
pub(super) static DECIDE: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("lua/decide.lua")));
/// `settle.lua`.
pub(super) static SETTLE: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("lua/settle.lua")));
/// `usage.lua`.
pub(super) static USAGE: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("lua/usage.lua")));
