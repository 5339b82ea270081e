//! One private `redis-server` process.

use std::collections::HashSet;
use std::fs::{self, File};
use std::hash::{BuildHasher, RandomState};
use std::io;
use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use rustix::process::{kill_process, Pid, Signal};
use tempfile::TempDir;

use crate::resp;

/// How long [`RedisServer::start`] and [`RedisServer::restart`] wait for the first `PONG`.
pub(crate) const START_TIMEOUT: Duration = Duration::from_secs(10);
/// The bound on each step (connect, write, read) of an internal probe.
pub(crate) const PROBE_TIMEOUT: Duration = Duration::from_secs(1);
/// Pause between readiness probes.
pub(crate) const POLL_INTERVAL: Duration = Duration::from_millis(10);
/// Offset of the cluster bus port from the client port (fixed by Redis).
const BUS_OFFSET: u16 = 10_000;
/// The highest client port handed out, so that the bus port stays valid.
const MAX_PORT: u16 = 55_000;
/// How many fresh ports [`RedisServer::start_with`] tries when the one it picked was taken.
const START_ATTEMPTS: usize = 5;

/// The `redis-server` binary: `$TOLLGATE_REDIS_SERVER`, or `redis-server` on the `PATH`.
fn server_binary() -> String {
    std::env::var("TOLLGATE_REDIS_SERVER").unwrap_or_else(|_| "redis-server".to_string())
}

/// The `redis-cli` binary: `$TOLLGATE_REDIS_CLI`, or `redis-cli` on the `PATH`.
pub(crate) fn cli_binary() -> String {
    std::env::var("TOLLGATE_REDIS_CLI").unwrap_or_else(|_| "redis-cli".to_string())
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Ports handed out by [`free_port`] in this process; never handed out twice, so that two servers
/// started at once (or a server restarted on its port) cannot be given the same port.
fn reserved() -> &'static Mutex<HashSet<u16>> {
    static RESERVED: OnceLock<Mutex<HashSet<u16>>> = OnceLock::new();
    RESERVED.get_or_init(|| Mutex::new(HashSet::new()))
}

fn random_u64() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    RandomState::new().hash_one((
        COUNTER.fetch_add(1, Ordering::Relaxed),
        nanos,
        std::process::id(),
    ))
}

fn can_bind(port: u16) -> bool {
    TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok()
}

/// The lowest port the kernel picks for outgoing connections (Linux), if known.
fn ephemeral_low() -> Option<u16> {
    let range = fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok()?;
    range.split_whitespace().next()?.parse().ok()
}

/// Returns a loopback port that is free now, together with its cluster bus port (`port + 10000`).
///
/// Ports are drawn at random below the kernel's ephemeral range (on Linux, `ip_local_port_range`)
/// so that neither the port nor its bus port can be taken meanwhile by the local end of some
/// outgoing connection (the cluster bus and `redis-cli` open many). Where that range leaves no
/// room, the port comes from binding `127.0.0.1:0`. Either way the port is at most 55000, so
/// the bus port is valid, and a port is never returned twice by one process.
///
/// The port is only probed, not held: another process can still take it before it is used, which
/// is why [`RedisServer::start`] retries on a fresh port when its server fails to bind.
///
/// ```
/// let port = tollgate_test::free_port()?;
/// assert!(port <= 55_000);
/// std::net::TcpListener::bind(("127.0.0.1", port))?;
/// std::net::TcpListener::bind(("127.0.0.1", port + 10_000))?;
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn free_port() -> io::Result<u16> {
    const LOW: u16 = 10_000;
    let high = ephemeral_low()
        .map(|low| low.saturating_sub(BUS_OFFSET))
        .unwrap_or(0)
        .min(MAX_PORT);
    let mut reserved = lock(reserved());
    let mut take = |port: u16| -> bool {
        if port == 0
            || port > MAX_PORT
            || reserved.contains(&port)
            || !can_bind(port)
            || !can_bind(port + BUS_OFFSET)
        {
            return false;
        }
        reserved.insert(port);
        true
    };
    if high > LOW + 1_000 {
        let span = u64::from(high - LOW);
        for _ in 0..2_000 {
            let offset = u16::try_from(random_u64() % span).unwrap_or(0);
            let port = LOW + offset;
            if take(port) {
                return Ok(port);
            }
        }
    }
    for _ in 0..2_000 {
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
            .local_addr()?
            .port();
        if take(port) {
            return Ok(port);
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AddrNotAvailable,
        "no free loopback port (with a free cluster bus port) found",
    ))
}

/// A private `redis-server` on `127.0.0.1`, in a fresh temporary directory, killed and cleaned up
/// when dropped.
///
/// The server runs with `--save "" --appendonly no`: nothing persists across [`kill`](Self::kill)
/// and [`restart`](Self::restart), so a restarted server has an empty keyspace and an empty script
/// cache. Its log is `redis.log` in [`dir`](Self::dir).
///
/// The process handle sits behind a mutex, so a `RedisServer` can be shared between threads
/// (for example in an `Arc`) and paused or probed from any of them.
#[derive(Debug)]
pub struct RedisServer {
    port: u16,
    extra_args: Vec<String>,
    child: Mutex<Option<Child>>,
    // Declared last: dropped after the process is killed in `Drop`.
    dir: TempDir,
}

impl RedisServer {
    /// Starts a server on a [`free_port`] and returns once it answers `PING` (within about 10 s,
    /// an error otherwise).
    ///
    /// The server runs with `--bind 127.0.0.1 --port P --dir D --save "" --appendonly no
    /// --daemonize no`, where `D` is a fresh temporary directory. If the port turns out to be
    /// taken by the time the server binds it, the start is retried on another port.
    pub fn start() -> io::Result<RedisServer> {
        Self::start_with(&[])
    }

    /// Like [`start`](Self::start), with extra configuration arguments appended to the command
    /// line, for example `&["--cluster-enabled", "yes"]` or `&["--maxmemory", "10mb"]`. They are
    /// kept and used again by [`restart`](Self::restart).
    pub fn start_with(args: &[&str]) -> io::Result<RedisServer> {
        let dir = tempfile::Builder::new()
            .prefix("tollgate-redis-")
            .tempdir()?;
        let extra_args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        let mut last_error = None;
        for _ in 0..START_ATTEMPTS {
            let port = free_port()?;
            match launch(port, dir.path(), &extra_args) {
                Ok(child) => {
                    return Ok(RedisServer {
                        port,
                        extra_args,
                        child: Mutex::new(Some(child)),
                        dir,
                    })
                }
                Err(e) if e.kind() == io::ErrorKind::AddrInUse => last_error = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last_error.unwrap_or_else(|| io::Error::other("redis-server did not start")))
    }

    /// The server's port on `127.0.0.1`; it stays the same across [`restart`](Self::restart).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's URL, `redis://127.0.0.1:PORT/`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// The server's data directory (its `--dir`), which also holds its log, `redis.log`.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The process id of the running server, or `None` once it was killed or has exited.
    pub fn pid(&self) -> Option<u32> {
        let mut child = lock(&self.child);
        reap_if_exited(&mut child);
        child.as_ref().map(Child::id)
    }

    /// Kills the server with `SIGKILL` (which also ends a paused server) and waits for it to
    /// exit, so that its port refuses connections once this returns. Does nothing if the server is
    /// not running.
    pub fn kill(&mut self) {
        kill_and_reap(self.child.get_mut().unwrap_or_else(|p| p.into_inner()));
    }

    /// Pauses the server with `SIGSTOP`: it keeps its port, and the kernel still accepts
    /// connections, but no command is answered until [`resume`](Self::resume). Does nothing if
    /// the server is not running.
    pub fn pause(&self) {
        self.signal(Signal::STOP);
    }

    /// Resumes a paused server with `SIGCONT`. Does nothing if the server is not running.
    pub fn resume(&self) {
        self.signal(Signal::CONT);
    }

    fn signal(&self, signal: Signal) {
        let mut child = lock(&self.child);
        reap_if_exited(&mut child);
        if let Some(child) = child.as_ref() {
            // The child is not reaped yet, so its pid cannot have been reused.
            let _ = kill_process(Pid::from_child(child), signal);
        }
    }

    /// Kills the server if it is running, then starts it again on the same port, in the same
    /// directory and with the same arguments, and waits for `PING` (about 10 s at most).
    ///
    /// Nothing is saved, so the restarted server starts with an empty keyspace and script cache.
    /// A cluster node keeps its `nodes.conf`, so it rejoins its cluster under the same node id.
    pub fn restart(&mut self) -> io::Result<()> {
        self.kill();
        let child = launch(self.port, self.dir.path(), &self.extra_args)?;
        *self.child.get_mut().unwrap_or_else(|p| p.into_inner()) = Some(child);
        Ok(())
    }

    /// Removes every key, via `redis-cli -p PORT FLUSHALL`.
    pub fn flushall(&self) -> io::Result<()> {
        let out = self.cli(&["FLUSHALL"])?;
        if out.trim() == "OK" {
            Ok(())
        } else {
            Err(io::Error::other(format!(
                "FLUSHALL answered {:?}",
                out.trim()
            )))
        }
    }

    /// Runs `redis-cli -h 127.0.0.1 -p PORT <args>` and returns its standard output.
    ///
    /// Options may come first, e.g. `&["-c", "SET", "k", "v"]` to follow cluster redirections.
    /// The output is `redis-cli`'s non-interactive format (`PONG\n`, a nil prints as an empty
    /// line). Note that `redis-cli` exits with status 0 on an error *reply* (it prints `ERR ...`),
    /// so only failures of `redis-cli` itself (such as a refused connection) are errors here.
    /// `redis-cli` has no timeout: against a paused server this blocks until it is resumed.
    pub fn cli(&self, args: &[&str]) -> io::Result<String> {
        let port = self.port.to_string();
        let output = Command::new(cli_binary())
            .args(["-h", "127.0.0.1", "-p", port.as_str()])
            .args(args)
            .stdin(Stdio::null())
            .output()?;
        if !output.status.success() {
            return Err(io::Error::other(format!(
                "redis-cli -p {port} {args:?} failed ({}): {}{}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim(),
                String::from_utf8_lossy(&output.stdout).trim(),
            )));
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// Whether the server process is alive (a paused server is running).
    pub fn is_running(&self) -> bool {
        let mut child = lock(&self.child);
        reap_if_exited(&mut child);
        child.is_some()
    }
}

impl Drop for RedisServer {
    /// Kills the server (`SIGKILL`), waits for it, and removes its directory.
    fn drop(&mut self) {
        self.kill();
    }
}

/// Forgets (and thereby reaps) a child that has exited, so that it is never signalled again.
fn reap_if_exited(child: &mut Option<Child>) {
    let exited = match child.as_mut().map(Child::try_wait) {
        None => false,
        Some(Ok(None)) => false,
        Some(Ok(Some(_))) | Some(Err(_)) => true,
    };
    if exited {
        *child = None;
    }
}

fn kill_and_reap(child: &mut Option<Child>) {
    if let Some(mut child) = child.take() {
        let _ = child.kill();
        let _ = child.wait();
    }
}

fn log_tail(dir: &Path) -> String {
    let mut text = String::new();
    for name in ["stderr.log", "redis.log"] {
        if let Ok(content) = fs::read_to_string(dir.join(name)) {
            let lines: Vec<&str> = content.lines().collect();
            let from = lines.len().saturating_sub(15);
            text.push_str(&lines[from..].join("\n"));
            text.push('\n');
        }
    }
    text
}

/// Spawns `redis-server` and waits until it answers `PING` as the process just spawned.
fn launch(port: u16, dir: &Path, extra_args: &[String]) -> io::Result<Child> {
    let log = dir.join("redis.log");
    let stderr = File::create(dir.join("stderr.log"))?;
    let stdout = stderr.try_clone()?;
    let port_arg = port.to_string();
    let dir_arg: PathBuf = dir.to_path_buf();
    let mut command = Command::new(server_binary());
    command
        .arg("--port")
        .arg(&port_arg)
        .args(["--bind", "127.0.0.1"])
        .arg("--dir")
        .arg(&dir_arg)
        .arg("--logfile")
        .arg(&log)
        .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
        .args(extra_args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr);
    let mut child = command.spawn().map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("cannot run {} (is Redis installed?): {e}", server_binary()),
        )
    })?;
    let pid = child.id().to_string();
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if let Some(status) = child.try_wait()? {
            let tail = log_tail(dir);
            let kind = if tail.contains("in use") {
                io::ErrorKind::AddrInUse
            } else {
                io::ErrorKind::Other
            };
            return Err(io::Error::new(
                kind,
                format!("redis-server on port {port} exited ({status}):\n{tail}"),
            ));
        }
        // A PONG alone could come from some other process on this port: check the pid as well.
        if let Ok(info) = resp::text(port, &["INFO", "server"], PROBE_TIMEOUT) {
            if info
                .lines()
                .any(|l| l.trim().strip_prefix("process_id:") == Some(pid.as_str()))
                && resp::text(port, &["PING"], PROBE_TIMEOUT).is_ok_and(|p| p == "PONG")
            {
                return Ok(child);
            }
        }
        if Instant::now() >= deadline {
            let mut slot = Some(child);
            kill_and_reap(&mut slot);
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "redis-server on port {port} did not answer PING within {START_TIMEOUT:?}:\n{}",
                    log_tail(dir)
                ),
            ));
        }
        thread::sleep(POLL_INTERVAL);
    }
}
