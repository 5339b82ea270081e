//! Interned names: rule and limit names live as `&'static str` so decisions can carry them
//! without reference counting on the hot path. Each distinct name is stored once per process,
//! however often policies are rebuilt, so memory is bounded by the distinct names ever used.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

struct Names {
    ids: HashMap<&'static str, u32>,
}

fn names() -> &'static Mutex<Names> {
    static NAMES: OnceLock<Mutex<Names>> = OnceLock::new();
    NAMES.get_or_init(|| {
        Mutex::new(Names {
            ids: HashMap::new(),
        })
    })
}

/// The process-wide `&'static` copy of `name`, and a stable id for it.
pub(crate) fn intern(name: &str) -> (&'static str, u32) {
    let mut names = names().lock().unwrap_or_else(|e| e.into_inner());
    if let Some((k, id)) = names.ids.get_key_value(name) {
        return (k, *id);
    }
    let id = u32::try_from(names.ids.len()).unwrap_or(u32::MAX);
    let leaked: &'static str = Box::leak(name.to_owned().into_boxed_str());
    names.ids.insert(leaked, id);
    (leaked, id)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_same_name_is_stored_once() {
        let (a, ia) = super::intern("intern-test-x");
        let (b, ib) = super::intern(&String::from("intern-test-x"));
        assert!(std::ptr::eq(a, b));
        assert_eq!(ia, ib);
        assert_ne!(super::intern("intern-test-y").1, ia);
    }
}
