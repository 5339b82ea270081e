//! Hot reload: on SIGHUP, and when the configuration file changes.
//!
//! The watcher watches the file's directory (editors and config managers replace files by
//! renaming), waits for a burst of events to settle, then reloads. A reload that fails keeps
//! the running configuration; the error is logged and counted.

use std::path::PathBuf;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use tokio::sync::{mpsc, watch};

use crate::server::{stopped, Reloader};

/// How long file events must stay quiet before a reload.
const SETTLE: Duration = Duration::from_millis(150);

pub(crate) fn spawn(
    reload: Reloader,
    path: Option<PathBuf>,
    watch_file: bool,
    stop: watch::Receiver<bool>,
) {
    let (tx, mut rx) = mpsc::channel::<()>(16);

    #[cfg(unix)]
    {
        let tx = tx.clone();
        let stop = stopped(stop.clone());
        tokio::spawn(async move {
            tokio::pin!(stop);
            use tokio::signal::unix::{signal, SignalKind};
            let Ok(mut hup) = signal(SignalKind::hangup()) else {
                tracing::warn!("cannot listen for SIGHUP");
                return;
            };
            loop {
                tokio::select! {
                    got = hup.recv() => {
                        if got.is_none() { break; }
                        tracing::info!("SIGHUP: reloading the configuration");
                        let _ = tx.send(()).await;
                    }
                    () = &mut stop => break,
                }
            }
        });
    }

    let watcher = match (&path, watch_file) {
        (Some(p), true) => watch(p, tx.clone()),
        _ => None,
    };

    let stop = stopped(stop);
    tokio::spawn(async move {
        // Keep the watcher alive as long as this task runs.
        let _watcher = watcher;
        tokio::pin!(stop);
        loop {
            tokio::select! {
                got = rx.recv() => {
                    if got.is_none() { break; }
                    // Let a burst of events (write, chmod, rename) settle.
                    tokio::time::sleep(SETTLE).await;
                    while rx.try_recv().is_ok() {}
                    let reload = reload.clone();
                    let _ = tokio::task::spawn_blocking(move || reload()).await;
                }
                () = &mut stop => break,
            }
        }
    });
}

fn watch(path: &std::path::Path, tx: mpsc::Sender<()>) -> Option<notify::RecommendedWatcher> {
    let file = path.file_name()?.to_owned();
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
        _ => PathBuf::from("."),
    };
    let handler = move |event: notify::Result<notify::Event>| {
        let Ok(event) = event else { return };
        if event.kind.is_access() {
            return;
        }
        if event.paths.iter().any(|p| p.file_name() == Some(&file)) {
            let _ = tx.try_send(());
        }
    };
    let mut w = match notify::recommended_watcher(handler) {
        Ok(w) => w,
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch the configuration file; SIGHUP still reloads");
            return None;
        }
    };
    if let Err(e) = w.watch(&dir, RecursiveMode::NonRecursive) {
        tracing::warn!(error = %e, dir = %dir.display(), "cannot watch the configuration's directory");
        return None;
    }
    Some(w)
}
