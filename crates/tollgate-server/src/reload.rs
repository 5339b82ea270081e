//! Hot reload: on SIGHUP, and when the configuration file changes.
//!
//! The watcher watches the file's directory, and the directory of the file it resolves to
//! when it is a symlink: editors and config managers replace files by renaming, and a
//! Kubernetes ConfigMap volume replaces a symlinked directory (`tollgate.toml` links to
//! `..data/tollgate.toml`, and `..data` to a directory that an update swaps for a new one
//! with one atomic rename), so no event may name the file itself. After any event it waits for
//! the burst to settle, reads the file, and reloads only if its content changed. A reload that
//! fails keeps the running configuration; the error is logged and counted.
//!
//! A file that loads is still refused when it is blank, or defines no rules without saying it
//! means to ([`admissible`]): a file being rewritten, or emptied by mistake, must not replace
//! every rule with the built-in default.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use tokio::sync::{mpsc, watch};

use crate::config::{Config, ConfigError};
use crate::shutdown::stopped;

/// The reload entry point handed to the watcher.
pub(crate) type Reloader = Arc<dyn Fn() -> Result<u64, ConfigError> + Send + Sync>;

/// How long file events must stay quiet before a reload.
const SETTLE: Duration = Duration::from_millis(150);

/// Whether a configuration that loaded may replace the running one. Refused: a blank file
/// (only whitespace and comments), and a file that defines no rules unless it sets
/// `[server] allow_empty_policy = true` or the running configuration came from a file
/// without rules too (both run the embedded default policy).
///
/// # Errors
/// Why it is refused, naming the file.
pub(crate) fn admissible(new: &Config, running: &Config) -> Result<(), ConfigError> {
    let file = new.path.as_deref().map_or_else(
        || "the configuration".to_owned(),
        |p| p.display().to_string(),
    );
    let refused = |field: &str, message: String| ConfigError {
        location: Some(tollgate::Location {
            file: file.clone(),
            line: 1,
            column: 1,
        }),
        rule: None,
        field: field.to_owned(),
        message,
    };
    if new.blank {
        return Err(refused(
            "file",
            "is empty; the running configuration stays".to_owned(),
        ));
    }
    let same_default = !running.defines_rules && !running.server.allow_empty_policy;
    if !new.defines_rules && !new.server.allow_empty_policy && !same_default {
        return Err(refused(
            "rules",
            format!(
                "the file defines no rules; the running {} rules stay (set [server] \
                 allow_empty_policy = true to run without rules)",
                running.policy.rules().len()
            ),
        ));
    }
    Ok(())
}

/// What asks for a reload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Trigger {
    /// SIGHUP: reload whatever the file holds.
    Signal,
    /// A file event: reload if the content changed.
    File,
}

pub(crate) fn spawn(
    reload: Reloader,
    path: Option<PathBuf>,
    watch_file: bool,
    stop: watch::Receiver<bool>,
) {
    let (tx, mut rx) = mpsc::channel::<Trigger>(16);

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
                        let _ = tx.send(Trigger::Signal).await;
                    }
                    () = &mut stop => break,
                }
            }
        });
    }

    let mut watched = match (&path, watch_file) {
        (Some(p), true) => FileWatch::start(p, tx.clone()),
        _ => None,
    };
    // What the file held when the service read it (or last reloaded it).
    let mut seen = path.as_deref().and_then(|p| std::fs::read(p).ok());

    let stop = stopped(stop);
    tokio::spawn(async move {
        tokio::pin!(stop);
        loop {
            tokio::select! {
                got = rx.recv() => {
                    let Some(mut trigger) = got else { break };
                    // Let a burst of events (write, chmod, rename, a directory swap) settle.
                    tokio::time::sleep(SETTLE).await;
                    while let Ok(more) = rx.try_recv() {
                        if more == Trigger::Signal {
                            trigger = Trigger::Signal;
                        }
                    }
                    if let Some(w) = &mut watched {
                        w.follow_target();
                    }
                    let now = path.as_deref().and_then(|p| std::fs::read(p).ok());
                    if trigger == Trigger::File && (now.is_none() || now == seen) {
                        continue;
                    }
                    seen = now;
                    let reload = reload.clone();
                    let _ = tokio::task::spawn_blocking(move || reload()).await;
                }
                () = &mut stop => break,
            }
        }
    });
}

/// The directory holding `path` (`.` for a bare file name).
fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
        _ => PathBuf::from("."),
    }
}

/// A watch on the configuration file's directory and on the directory of the file it
/// resolves to.
struct FileWatch {
    watcher: notify::RecommendedWatcher,
    path: PathBuf,
    dir: PathBuf,
    /// The resolved file's directory, when it is another one.
    target_dir: Option<PathBuf>,
}

impl FileWatch {
    fn start(path: &Path, tx: mpsc::Sender<Trigger>) -> Option<Self> {
        let handler = move |event: notify::Result<notify::Event>| {
            let Ok(event) = event else { return };
            if !event.kind.is_access() {
                let _ = tx.try_send(Trigger::File);
            }
        };
        let mut watcher = match notify::recommended_watcher(handler) {
            Ok(w) => w,
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch the configuration file; SIGHUP still reloads");
                return None;
            }
        };
        let dir = parent_dir(path);
        if let Err(e) = watcher.watch(&dir, RecursiveMode::NonRecursive) {
            tracing::warn!(error = %e, dir = %dir.display(), "cannot watch the configuration's directory");
            return None;
        }
        let mut w = FileWatch {
            watcher,
            path: path.to_owned(),
            dir,
            target_dir: None,
        };
        w.follow_target();
        Some(w)
    }

    /// Watches the directory of the file the path resolves to now (it moves when a symlinked
    /// directory is swapped).
    fn follow_target(&mut self) {
        let target = std::fs::canonicalize(&self.path)
            .ok()
            .map(|t| parent_dir(&t))
            .filter(|d| std::fs::canonicalize(&self.dir).ok().as_ref() != Some(d));
        if target == self.target_dir {
            return;
        }
        if let Some(old) = self.target_dir.take() {
            // Gone already when its directory was deleted.
            let _ = self.watcher.unwatch(&old);
        }
        if let Some(d) = target {
            match self.watcher.watch(&d, RecursiveMode::NonRecursive) {
                Ok(()) => self.target_dir = Some(d),
                Err(e) => {
                    tracing::warn!(error = %e, dir = %d.display(), "cannot watch the configuration's target directory");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(text: &str) -> Config {
        let mut c = Config::from_toml(text, "t.toml").unwrap_or_else(|e| panic!("{e}"));
        c.path = Some(PathBuf::from("conf/t.toml"));
        c
    }

    const RULES: &str = "[[rules]]\nname = \"r\"\nmatch = { tenant = \"*\" }\nlimits = [{ kind = \"requests\", amount = 1, per = \"hour\" }]\n";

    #[test]
    fn blank_and_rule_less_files_do_not_replace_rules() {
        let running = config(RULES);
        let e = admissible(&config(""), &running).unwrap_err();
        assert_eq!(e.field, "file");
        assert!(
            e.to_string().starts_with("conf/t.toml:1:1: file: is empty"),
            "{e}"
        );
        assert!(admissible(&config("# nothing yet\n"), &running).is_err());
        for text in ["[server]\nshadow = false\n", "rules = []\n"] {
            let e = admissible(&config(text), &running).unwrap_err();
            assert_eq!(e.field, "rules", "{text}");
            assert!(e.message.contains("allow_empty_policy"), "{e}");
        }
        // Saying so is enough.
        let empty = config("[server]\nallow_empty_policy = true\n");
        assert!(admissible(&empty, &running).is_ok());
        assert!(admissible(&config(RULES), &empty).is_ok());
        // A file without rules that ran the default policy may be reloaded as such.
        let default = config("[server]\nshadow = false\n");
        assert!(admissible(&config("[server]\nshadow = true\n"), &default).is_ok());
        // But not into the default from an explicitly empty policy.
        assert!(admissible(&default, &empty).is_err());
        assert!(admissible(&config(""), &default).is_err());
    }
}
