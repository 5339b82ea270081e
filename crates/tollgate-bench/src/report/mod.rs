//! The benchmark report: `BENCHMARKS.md`'s tables, the README's performance table and the
//! charts in `docs/bench/`, all written from `docs/bench/results.toml`.
//!
//! A document marks each generated table with `<!-- report:NAME -->` and `<!-- /report -->`;
//! [`expected`] gives every file as it should be, so the `tollgate-bench-report` binary can
//! write them and a test can check that nobody edited a figure in one place only.

mod charts;
pub mod data;
mod tables;

use std::path::{Path, PathBuf};

pub use data::Results;

/// Where the figures live, relative to the repository root.
pub const DATA: &str = "docs/bench/results.toml";
/// Where the charts go, relative to the repository root.
pub const CHARTS: &str = "docs/bench";
/// The documents with generated tables, relative to the repository root.
pub const DOCUMENTS: [&str; 2] = ["BENCHMARKS.md", "README.md"];

const OPEN: &str = "<!-- report:";
const CLOSE: &str = "<!-- /report -->";

/// Reads and parses the figures.
///
/// # Errors
/// The file cannot be read, or is not valid (the message names the line and the field).
pub fn load(path: &Path) -> Result<Results, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// `doc` with every marked block replaced by the generated one of the same name.
///
/// # Errors
/// A marker names no generated block, or is not closed.
pub fn fill(doc: &str, blocks: &[(&str, String)]) -> Result<String, String> {
    let mut out = String::with_capacity(doc.len());
    let mut rest = doc;
    while let Some(start) = rest.find(OPEN) {
        let after = &rest[start + OPEN.len()..];
        let end_name = after
            .find("-->")
            .ok_or_else(|| "a report marker is not closed with -->".to_string())?;
        let name = after[..end_name].trim();
        let body_start = start + OPEN.len() + end_name + 3;
        let close = rest[body_start..]
            .find(CLOSE)
            .ok_or_else(|| format!("the block {name:?} has no {CLOSE}"))?;
        let block = blocks
            .iter()
            .find(|(n, _)| *n == name)
            .ok_or_else(|| format!("no generated block is called {name:?}"))?;
        out.push_str(&rest[..body_start]);
        out.push('\n');
        out.push_str(&block.1);
        out.push_str(CLOSE);
        rest = &rest[body_start + close + CLOSE.len()..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Every file the report owns under the repository at `root`, with the content it should
/// have: the charts, and the documents with their blocks filled in from the figures.
///
/// # Errors
/// The figures or a document cannot be read, or a chart cannot be drawn.
pub fn expected(root: &Path) -> Result<Vec<(PathBuf, String)>, String> {
    let results = load(&root.join(DATA))?;
    let mut files: Vec<(PathBuf, String)> = charts::charts(&results)?
        .into_iter()
        .map(|(name, svg)| (root.join(CHARTS).join(name), svg))
        .collect();
    let blocks = tables::blocks(&results);
    for doc in DOCUMENTS {
        let path = root.join(doc);
        let text =
            std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let filled = fill(&text, &blocks).map_err(|e| format!("{}: {e}", path.display()))?;
        files.push((path, filled));
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_are_replaced_and_the_rest_is_kept() {
        let doc = "a\n<!-- report:x -->\nold\n<!-- /report -->\nb\n";
        let out = fill(doc, &[("x", "new\n".to_string())]).unwrap();
        assert_eq!(out, "a\n<!-- report:x -->\nnew\n<!-- /report -->\nb\n");
        assert_eq!(fill(&out, &[("x", "new\n".to_string())]).unwrap(), out);
    }

    #[test]
    fn unknown_or_unclosed_blocks_are_errors() {
        assert!(fill("<!-- report:y -->\n<!-- /report -->", &[]).is_err());
        assert!(fill("<!-- report:x -->\nold\n", &[("x", String::new())]).is_err());
    }

    #[test]
    fn thousands_are_separated() {
        assert_eq!(tables::thousands(0), "0");
        assert_eq!(tables::thousands(999), "999");
        assert_eq!(tables::thousands(1000), "1,000");
        assert_eq!(tables::thousands(1_234_567), "1,234,567");
    }
}
