//! The policy file parser and the service's configuration parser, on arbitrary text.
//!
//! Either parses, and the result decides a call without panicking; or it fails with an error
//! that names the field and, where it has one, a place inside the text of `fuzz.toml`.

#![no_main]

use libfuzzer_sys::fuzz_target;
use tollgate::{Cost, Limiter, Location, Policy, Subject};

/// An error's place is in the text: the right file, a line that exists, a column from 1.
fn check_location(location: Option<&Location>, text: &str) {
    let Some(l) = location else { return };
    assert_eq!(l.file, "fuzz.toml");
    let lines = text.matches('\n').count() + 1;
    assert!(l.line >= 1 && l.line <= lines, "line {} of {lines}", l.line);
    assert!(l.column >= 1, "column {}", l.column);
}

/// A parsed policy decides calls.
fn exercise(policy: Policy) {
    let limiter = Limiter::with_policy(policy);
    let who = Subject::new()
        .tenant("premium")
        .user("u")
        .provider("openai")
        .model("gpt-4o")
        .tier("pro");
    for cost in [Cost::requests(1), Cost::tokens(1_000), Cost::split(7, 9)] {
        if let Some(Err(e)) = limiter.check_now(&who, cost) {
            panic!("the memory store failed: {e}");
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Policy::from_toml(text, "fuzz.toml") {
        Ok(policy) => exercise(policy),
        Err(e) => {
            assert!(!e.message.is_empty(), "an error without a message: {e:?}");
            check_location(e.location.as_ref(), text);
            let _ = e.to_string();
        }
    }
    match tollgate_server::config::Config::from_toml(text, "fuzz.toml") {
        Ok(config) => exercise(config.policy),
        Err(e) => {
            assert!(!e.message.is_empty(), "an error without a message: {e:?}");
            assert!(!e.field.is_empty(), "an error without a field: {e:?}");
            check_location(e.location.as_ref(), text);
            let _ = e.to_string();
        }
    }
});
