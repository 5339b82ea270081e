//! The benchmark report cannot drift from its figures: the charts in `docs/bench/` and the
//! marked tables of `BENCHMARKS.md` and `README.md` must be exactly what
//! `tollgate-bench-report` writes from `docs/bench/results.toml`.

use std::path::Path;

#[test]
fn charts_and_tables_match_the_figures() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let root = root.canonicalize().unwrap_or(root);
    let files = tollgate_bench::report::expected(&root).expect("the report renders");
    let mut stale = Vec::new();
    for (path, expected) in &files {
        let actual = std::fs::read_to_string(path).unwrap_or_default();
        if &actual != expected {
            stale.push(path.display().to_string());
        }
    }
    assert!(
        stale.is_empty(),
        "out of date with docs/bench/results.toml: {stale:?}; run \
         `cargo run -p tollgate-bench --bin tollgate-bench-report`"
    );
}

#[test]
fn every_chart_is_embedded_in_benchmarks_md() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let root = root.canonicalize().unwrap_or(root);
    let page = std::fs::read_to_string(root.join("BENCHMARKS.md")).expect("BENCHMARKS.md");
    let files = tollgate_bench::report::expected(&root).expect("the report renders");
    for (path, _) in files
        .iter()
        .filter(|(p, _)| p.extension().is_some_and(|e| e == "svg"))
    {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .expect("a file name");
        assert!(
            page.contains(&format!("(docs/bench/{name})")),
            "BENCHMARKS.md does not show docs/bench/{name}"
        );
    }
}
