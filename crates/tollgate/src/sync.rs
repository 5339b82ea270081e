//! The locks of the memory store's concurrent paths: parking_lot's, or loom's when the crate
//! is built for the loom model checker (`RUSTFLAGS="--cfg tollgate_loom"`), so that the loom
//! tests (`tests/loom_*.rs`) explore every interleaving of spends, settlements and releases
//! at these locks.
//!
//! The cfg is tollgate's own rather than the conventional `loom`: `--cfg loom` reaches every
//! crate of the build, and tokio then expects loom as a dependency of its own.

#[cfg(not(tollgate_loom))]
pub(crate) use parking_lot::{Mutex, MutexGuard};

#[cfg(tollgate_loom)]
pub(crate) use model::{Mutex, MutexGuard};

#[cfg(tollgate_loom)]
mod model {
    /// A guard of [`Mutex`].
    pub(crate) type MutexGuard<'a, T> = loom::sync::MutexGuard<'a, T>;

    /// loom's mutex with parking_lot's interface (no poisoning).
    #[derive(Debug, Default)]
    pub(crate) struct Mutex<T>(loom::sync::Mutex<T>);

    impl<T> Mutex<T> {
        pub(crate) fn new(value: T) -> Self {
            Mutex(loom::sync::Mutex::new(value))
        }

        pub(crate) fn lock(&self) -> MutexGuard<'_, T> {
            self.0
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
        }
    }
}
