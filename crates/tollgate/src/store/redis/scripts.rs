//! The Lua scripts, loaded once per server and re-sent when the server has forgotten them.

use std::sync::LazyLock;

/// A script's source and SHA-1.
pub(super) struct Script {
    pub(super) source: String,
    pub(super) sha: String,
}

impl Script {
    fn new(entry: &str) -> Self {
        let source = format!("{}\n{}", include_str!("lua/algorithms.lua"), entry);
        let sha = redis::Script::new(&source).get_hash().to_owned();
        Script { source, sha }
    }
}

/// `decide.lua`.
pub(super) static DECIDE: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("lua/decide.lua")));
/// `settle.lua`.
pub(super) static SETTLE: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("lua/settle.lua")));
/// `usage.lua`.
pub(super) static USAGE: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("lua/usage.lua")));
