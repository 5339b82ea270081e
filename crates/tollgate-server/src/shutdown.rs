//! The shutdown signal that every listener and background task waits on.

use tokio::sync::watch;

/// Resolves once `true` is sent on the shutdown channel (or the sender is gone).
pub(crate) async fn stopped(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}
