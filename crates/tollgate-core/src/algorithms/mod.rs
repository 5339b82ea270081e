//! The algorithms, each a pure function of (state, now, cost, limit).

pub mod concurrency;
pub mod fixed_window;
pub mod gcra;
pub mod sliding_log;
pub mod sliding_window;
