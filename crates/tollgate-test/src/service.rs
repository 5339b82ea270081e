//! The `tollgate` service as a child process: the real binary, built by cargo for the test.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::server::free_port;

/// How long [`Service::start`] waits for `/readyz` to say `ready`.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// The `tollgate` binary: `$TOLLGATE_BIN` if set (a binary built beforehand, as `scripts/test`
/// does with the workspace's own build), otherwise built now, once per process, with
/// `cargo build -p tollgate-server --bin tollgate` in the profile the test was built in, next
/// to the test's own binaries.
///
/// # Errors
/// The build failed, or the binary is not where cargo puts it.
pub fn tollgate_binary() -> io::Result<PathBuf> {
    static BUILT: OnceLock<Mutex<Option<PathBuf>>> = OnceLock::new();
    if let Some(bin) = std::env::var_os("TOLLGATE_BIN") {
        return Ok(PathBuf::from(bin));
    }
    let mut built = BUILT
        .get_or_init(|| Mutex::new(None))
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(bin) = built.as_ref() {
        return Ok(bin.clone());
    }
    // A test binary lives in <target>/<profile>/deps.
    let exe = std::env::current_exe()?;
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .ok_or_else(|| io::Error::other(format!("{} is not in a target dir", exe.display())))?;
    let target_dir = profile_dir.parent().unwrap_or(profile_dir);
    let profile = profile_dir
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("debug");
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&workspace)
        .args([
            "build",
            "--quiet",
            "-p",
            "tollgate-server",
            "--bin",
            "tollgate",
        ])
        .arg("--target-dir")
        .arg(target_dir);
    match profile {
        "debug" => {}
        "release" => {
            cmd.arg("--release");
        }
        other => {
            cmd.args(["--profile", other]);
        }
    }
    let status = cmd.status()?;
    if !status.success() {
        return Err(io::Error::other(format!(
            "cargo build -p tollgate-server failed: {status}"
        )));
    }
    let bin = profile_dir.join("tollgate");
    if !bin.exists() {
        return Err(io::Error::other(format!(
            "no {} after the build",
            bin.display()
        )));
    }
    *built = Some(bin.clone());
    Ok(bin)
}

/// A `tollgate serve` child process on a free loopback port, HTTP only, killed when dropped.
/// Its configuration file and its log live in a temporary directory.
#[derive(Debug)]
pub struct Service {
    child: Child,
    port: u16,
    dir: TempDir,
}

impl Service {
    /// Starts `tollgate serve` with `config` (a configuration file's text, without the
    /// listeners: they are given on the command line) and `args` (more `serve` flags, such as
    /// `--redis URL`), and returns once `/readyz` answers `ready`.
    ///
    /// # Errors
    /// The binary cannot be built or started, or the service is not ready in 30 s (the error
    /// carries the end of its log).
    pub fn start(config: &str, args: &[&str]) -> io::Result<Service> {
        let bin = tollgate_binary()?;
        let dir = tempfile::Builder::new()
            .prefix("tollgate-serve")
            .tempdir()?;
        let path = dir.path().join("tollgate.toml");
        fs::write(&path, config)?;
        let port = free_port()?;
        let log = File::create(dir.path().join("serve.log"))?;
        let child = Command::new(bin)
            .arg("serve")
            .arg("--config")
            .arg(&path)
            .args(["--http", &format!("127.0.0.1:{port}"), "--grpc", "off"])
            .args(["--no-watch", "--log-level", "warn"])
            .args(args)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()?;
        let mut service = Service { child, port, dir };
        service.wait_ready()?;
        Ok(service)
    }

    fn wait_ready(&mut self) -> io::Result<()> {
        let began = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Err(io::Error::other(format!(
                    "tollgate serve exited ({status}): {}",
                    self.log_tail()
                )));
            }
            if let Ok((200, body)) = self.get("/readyz") {
                if body.contains("\"ready\"") {
                    return Ok(());
                }
            }
            if began.elapsed() > READY_TIMEOUT {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("tollgate serve not ready in 30 s: {}", self.log_tail()),
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The last 2,000 bytes of the service's log.
    pub fn log_tail(&self) -> String {
        let log = fs::read_to_string(self.dir.path().join("serve.log")).unwrap_or_default();
        let start = log.len().saturating_sub(2000);
        let start = (start..log.len())
            .find(|&i| log.is_char_boundary(i))
            .unwrap_or(log.len());
        log[start..].to_owned()
    }

    /// `host:port` of the HTTP listener.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `GET path` on a fresh connection: the status and the body.
    ///
    /// # Errors
    /// No answer within 5 s, or not HTTP.
    pub fn get(&self, path: &str) -> io::Result<(u16, String)> {
        let mut stream = TcpStream::connect((Ipv4Addr::LOCALHOST, self.port))?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nhost: {}\r\nconnection: close\r\n\r\n",
            self.addr()
        )?;
        let mut reply = String::new();
        stream.read_to_string(&mut reply)?;
        let status = reply
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, reply.clone()))?;
        let body = reply
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_owned())
            .unwrap_or_default();
        Ok((status, body))
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Processes that keep one CPU core each busy (a shell's empty loop), as other tenants of a
/// shared node would; killed when dropped.
#[derive(Debug)]
pub struct CpuHogs(Vec<Child>);

impl CpuHogs {
    /// One busy process per core this process may run on.
    ///
    /// # Errors
    /// `sh` cannot be started.
    pub fn one_per_core() -> io::Result<CpuHogs> {
        let cores = std::thread::available_parallelism().map_or(2, usize::from);
        let mut hogs = CpuHogs(Vec::with_capacity(cores));
        for _ in 0..cores {
            hogs.0.push(
                Command::new("sh")
                    .args(["-c", "while :; do :; done"])
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()?,
            );
        }
        Ok(hogs)
    }
}

impl Drop for CpuHogs {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
