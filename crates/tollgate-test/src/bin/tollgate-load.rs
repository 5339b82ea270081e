//! `tollgate-load`: one client process of the load tests. It keeps one HTTP/1.1 keep-alive
//! connection per `--body` (one thread each, closed loop: each sends its next
//! `POST /v1/check` with its body as soon as the previous answer is read), connection `i` to
//! target `i % targets`, and prints what it saw, one line per connection:
//!
//! ```text
//! body=0 sent=812 allowed=500 denied=312 unavailable=0 degraded=0 other=0 errors=0 max_ms=41
//! ```
//!
//! A `--hot-body` connection stops after `--denials` 429 answers (its limit was reached); the
//! process ends once every hot connection has stopped and `--min-ms` have passed, or after
//! `--max-ms` in any case. `degraded` counts answers with `x-tollgate-degraded: true`; `other`
//! any status but 200, 429 and 503; `errors` calls that got no answer (a broken connection,
//! or none within 30 s). Standard library only, so that the process measures the service,
//! not a client runtime.

use std::io::{self, BufRead, BufReader, Write};
use std::net::TcpStream;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What one request body's calls came to.
#[derive(Default)]
struct Counts {
    sent: AtomicU64,
    allowed: AtomicU64,
    denied: AtomicU64,
    unavailable: AtomicU64,
    degraded: AtomicU64,
    other: AtomicU64,
    errors: AtomicU64,
    max_us: AtomicU64,
}

struct Args {
    targets: Vec<String>,
    min: Duration,
    max: Duration,
    denials: u64,
    /// Each connection's body, and whether it is hot.
    bodies: Vec<(String, bool)>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        targets: Vec::new(),
        min: Duration::ZERO,
        max: Duration::from_secs(60),
        denials: 1,
        bodies: Vec::new(),
    };
    let mut it = std::env::args().skip(1);
    let ms = |flag: &str, v: &str| {
        v.parse::<u64>()
            .map(Duration::from_millis)
            .map_err(|e| format!("{flag} {v}: {e}"))
    };
    while let Some(flag) = it.next() {
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--target" => args.targets.push(value),
            "--min-ms" => args.min = ms(&flag, &value)?,
            "--max-ms" => args.max = ms(&flag, &value)?,
            "--denials" => {
                args.denials = value
                    .parse()
                    .map_err(|e| format!("--denials {value}: {e}"))?;
            }
            "--body" => args.bodies.push((value, false)),
            "--hot-body" => args.bodies.push((value, true)),
            other => return Err(format!("unknown flag {other}")),
        }
    }
    if args.targets.is_empty() || args.bodies.is_empty() {
        return Err("usage: tollgate-load --target HOST:PORT... (--body JSON | --hot-body JSON)... [--denials N] [--min-ms MS] [--max-ms MS]".into());
    }
    Ok(args)
}

/// One answer: its status, whether it was degraded.
fn call(stream: &mut BufReader<TcpStream>, target: &str, body: &str) -> io::Result<(u16, bool)> {
    let request = format!(
        "POST /v1/check HTTP/1.1\r\nhost: {target}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.get_mut().write_all(request.as_bytes())?;
    let mut line = String::new();
    if stream.read_line(&mut line)? == 0 {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, line.clone()))?;
    let mut length = 0usize;
    let mut degraded = false;
    loop {
        line.clear();
        if stream.read_line(&mut line)? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        let header = line.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            let (name, value) = (name.trim(), value.trim());
            if name.eq_ignore_ascii_case("content-length") {
                length = value
                    .parse()
                    .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, header.to_owned()))?;
            } else if name.eq_ignore_ascii_case("x-tollgate-degraded") {
                degraded = value == "true";
            }
        }
    }
    let mut rest = vec![0u8; length];
    io::Read::read_exact(stream, &mut rest)?;
    Ok((status, degraded))
}

fn connect(target: &str) -> io::Result<BufReader<TcpStream>> {
    let stream = TcpStream::connect(target)?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    Ok(BufReader::new(stream))
}

/// When connections stop.
struct Stop {
    /// Every connection stops (the process ends).
    all: AtomicBool,
    /// Hot connections still running.
    hot_running: AtomicU64,
}

fn run(target: &str, body: &str, hot: Option<u64>, stop: &Stop, counts: &Counts) {
    let mut stream = None;
    let mut denials = 0u64;
    while !stop.all.load(Ordering::Relaxed) {
        if hot.is_some_and(|n| denials >= n) {
            break;
        }
        let conn = match stream.as_mut() {
            Some(s) => s,
            None => match connect(target) {
                Ok(s) => stream.insert(s),
                Err(_) => {
                    counts.errors.fetch_add(1, Ordering::Relaxed);
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                }
            },
        };
        let began = Instant::now();
        counts.sent.fetch_add(1, Ordering::Relaxed);
        match call(conn, target, body) {
            Ok((status, degraded)) => {
                let us = u64::try_from(began.elapsed().as_micros()).unwrap_or(u64::MAX);
                counts.max_us.fetch_max(us, Ordering::Relaxed);
                let slot = match status {
                    200 => &counts.allowed,
                    429 => {
                        denials += 1;
                        &counts.denied
                    }
                    503 => &counts.unavailable,
                    _ => &counts.other,
                };
                slot.fetch_add(1, Ordering::Relaxed);
                if degraded {
                    counts.degraded.fetch_add(1, Ordering::Relaxed);
                }
            }
            Err(_) => {
                counts.errors.fetch_add(1, Ordering::Relaxed);
                stream = None;
            }
        }
    }
    if hot.is_some() {
        stop.hot_running.fetch_sub(1, Ordering::Relaxed);
    }
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("tollgate-load: {e}");
            return ExitCode::from(2);
        }
    };
    let counts: Arc<Vec<Counts>> =
        Arc::new(args.bodies.iter().map(|_| Counts::default()).collect());
    let hot = args.bodies.iter().filter(|(_, h)| *h).count() as u64;
    let stop = Arc::new(Stop {
        all: AtomicBool::new(false),
        hot_running: AtomicU64::new(hot),
    });
    let began = Instant::now();
    let threads: Vec<_> = args
        .bodies
        .iter()
        .enumerate()
        .map(|(i, (body, is_hot))| {
            let target = args.targets[i % args.targets.len()].clone();
            let body = body.clone();
            let hot = is_hot.then_some(args.denials);
            let (counts, stop) = (Arc::clone(&counts), Arc::clone(&stop));
            std::thread::spawn(move || run(&target, &body, hot, &stop, &counts[i]))
        })
        .collect();
    loop {
        let elapsed = began.elapsed();
        let hot_done = stop.hot_running.load(Ordering::Relaxed) == 0;
        if elapsed >= args.max || (hot_done && elapsed >= args.min) {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    stop.all.store(true, Ordering::Relaxed);
    for t in threads {
        let _ = t.join();
    }
    for (i, c) in counts.iter().enumerate() {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        println!(
            "body={i} sent={} allowed={} denied={} unavailable={} degraded={} other={} errors={} max_ms={}",
            get(&c.sent),
            get(&c.allowed),
            get(&c.denied),
            get(&c.unavailable),
            get(&c.degraded),
            get(&c.other),
            get(&c.errors),
            get(&c.max_us) / 1000
        );
    }
    ExitCode::SUCCESS
}
