//! Server-side counters: `INFO commandstats` (calls and microseconds per command), `INFO cpu`
//! (the process's user and system CPU) and `INFO stats` (read and write events, network bytes),
//! summed over every node.

use std::collections::BTreeMap;

use redis::aio::MultiplexedConnection;

use crate::BoxError;

/// Connections to every node whose counters are read.
#[derive(Clone)]
pub struct ServerStats {
    conns: Vec<MultiplexedConnection>,
}

/// Counters of all nodes at one moment.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    /// Per command: calls and microseconds.
    pub commands: BTreeMap<String, (u64, u64)>,
    /// User + system CPU seconds of the server processes.
    pub cpu_s: f64,
    /// Nodes read.
    pub nodes: usize,
    /// `INFO stats`: `total_reads_processed`, `total_writes_processed`, `total_net_input_bytes`,
    /// `total_net_output_bytes`.
    pub io: [u64; 4],
}

/// The difference of two snapshots.
#[derive(Clone, Debug, Default)]
pub struct StatsDelta {
    /// Nodes read.
    pub nodes: usize,
    /// `EVALSHA` calls.
    pub evalsha_calls: u64,
    /// Microseconds spent in `EVALSHA`.
    pub evalsha_usec: u64,
    /// `EVAL` calls (script cache misses re-sent with the source).
    pub eval_calls: u64,
    /// Script calls: `EVALSHA`, `EVAL` and `FCALL`.
    pub script_calls: u64,
    /// Microseconds spent in script calls (the commands they run included).
    pub script_usec: u64,
    /// User + system CPU seconds of the server processes.
    pub cpu_s: f64,
    /// Per command with calls: name, calls, microseconds.
    pub commands: Vec<(String, u64, u64)>,
    /// Read events (each one `read` of a client socket), write events, bytes in, bytes out
    /// (`INFO stats`; the reads of the counters themselves included, a few per run).
    pub io: [u64; 4],
}

impl StatsDelta {
    /// Microseconds per `EVALSHA` call.
    pub fn evalsha_usec_per_call(&self) -> Option<f64> {
        (self.evalsha_calls > 0).then(|| self.evalsha_usec as f64 / self.evalsha_calls as f64)
    }
}

impl ServerStats {
    /// Connects to `urls`; for a cluster, to every node `CLUSTER NODES` lists (replicas too:
    /// they replay the scripts' writes on the same machine).
    ///
    /// # Errors
    /// If a node cannot be reached.
    pub async fn connect(urls: &[String], cluster: bool) -> Result<ServerStats, BoxError> {
        let mut targets: Vec<String> = urls.to_vec();
        if cluster {
            if let Some(seed) = urls.first() {
                let mut c = redis::Client::open(seed.as_str())?
                    .get_multiplexed_async_connection()
                    .await?;
                let nodes: String = redis::cmd("CLUSTER")
                    .arg("NODES")
                    .query_async(&mut c)
                    .await?;
                targets = nodes
                    .lines()
                    .filter_map(|l| l.split_whitespace().nth(1))
                    .filter_map(|addr| addr.split('@').next())
                    .map(|addr| format!("redis://{addr}/"))
                    .collect();
            }
        }
        targets.sort();
        targets.dedup();
        let mut conns = Vec::new();
        for url in &targets {
            conns.push(
                redis::Client::open(url.as_str())?
                    .get_multiplexed_async_connection()
                    .await?,
            );
        }
        Ok(ServerStats { conns })
    }

    /// Reads the counters of every node.
    ///
    /// # Errors
    /// If a node does not answer.
    pub async fn snapshot(&self) -> Result<Snapshot, BoxError> {
        let mut snap = Snapshot {
            nodes: self.conns.len(),
            ..Snapshot::default()
        };
        for conn in &self.conns {
            let mut conn = conn.clone();
            let text: String = redis::cmd("INFO")
                .arg("commandstats")
                .query_async(&mut conn)
                .await?;
            for (cmd, calls, usec) in parse_commandstats(&text) {
                let e = snap.commands.entry(cmd).or_default();
                e.0 += calls;
                e.1 += usec;
            }
            let text: String = redis::cmd("INFO")
                .arg("stats")
                .query_async(&mut conn)
                .await?;
            for line in text.lines() {
                if let Some((k, v)) = line.trim().split_once(':') {
                    let i = match k {
                        "total_reads_processed" => 0,
                        "total_writes_processed" => 1,
                        "total_net_input_bytes" => 2,
                        "total_net_output_bytes" => 3,
                        _ => continue,
                    };
                    snap.io[i] += v.parse::<u64>().unwrap_or(0);
                }
            }
            let text: String = redis::cmd("INFO").arg("cpu").query_async(&mut conn).await?;
            for line in text.lines() {
                if let Some((k, v)) = line.trim().split_once(':') {
                    if k == "used_cpu_sys" || k == "used_cpu_user" {
                        snap.cpu_s += v.parse::<f64>().unwrap_or(0.0);
                    }
                }
            }
        }
        Ok(snap)
    }
}

impl Snapshot {
    /// What happened between `before` and this snapshot. The reads of the counters themselves
    /// (`info`) are left out.
    pub fn since(&self, before: &Snapshot) -> StatsDelta {
        let mut d = StatsDelta {
            nodes: self.nodes,
            cpu_s: (self.cpu_s - before.cpu_s).max(0.0),
            io: std::array::from_fn(|i| self.io[i].saturating_sub(before.io[i])),
            ..StatsDelta::default()
        };
        for (cmd, &(calls, usec)) in &self.commands {
            if cmd == "info" {
                continue;
            }
            let (c0, u0) = before.commands.get(cmd).copied().unwrap_or_default();
            let (calls, usec) = (calls.saturating_sub(c0), usec.saturating_sub(u0));
            if calls == 0 {
                continue;
            }
            match cmd.as_str() {
                "evalsha" => {
                    d.evalsha_calls = calls;
                    d.evalsha_usec = usec;
                }
                "eval" => d.eval_calls = calls,
                _ => {}
            }
            if matches!(cmd.as_str(), "evalsha" | "eval" | "fcall") {
                d.script_calls += calls;
                d.script_usec += usec;
            }
            d.commands.push((cmd.clone(), calls, usec));
        }
        d
    }
}

/// `(command, calls, usec)` of each `cmdstat_<name>:calls=..,usec=..,...` line.
pub fn parse_commandstats(text: &str) -> Vec<(String, u64, u64)> {
    text.lines()
        .filter_map(|line| {
            let (name, fields) = line.trim().strip_prefix("cmdstat_")?.split_once(':')?;
            let mut calls = 0;
            let mut usec = 0;
            for f in fields.split(',') {
                match f.split_once('=') {
                    Some(("calls", v)) => calls = v.parse().unwrap_or(0),
                    Some(("usec", v)) => usec = v.parse().unwrap_or(0),
                    _ => {}
                }
            }
            Some((name.to_owned(), calls, usec))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commandstats_lines_are_parsed() {
        let text = "# Commandstats\r\ncmdstat_evalsha:calls=10,usec=55,usec_per_call=5.50,rejected_calls=0,failed_calls=0\r\ncmdstat_info:calls=2,usec=40,usec_per_call=20.00\r\n";
        assert_eq!(
            parse_commandstats(text),
            vec![("evalsha".to_owned(), 10, 55), ("info".to_owned(), 2, 40)]
        );
    }

    #[test]
    fn deltas_leave_out_info() {
        let mut before = Snapshot::default();
        before.commands.insert("evalsha".into(), (10, 100));
        before.commands.insert("info".into(), (1, 10));
        let mut after = before.clone();
        after.commands.insert("evalsha".into(), (30, 300));
        after.commands.insert("info".into(), (5, 50));
        after.cpu_s = 1.5;
        let d = after.since(&before);
        assert_eq!(
            (d.evalsha_calls, d.evalsha_usec, d.script_calls),
            (20, 200, 20)
        );
        assert_eq!(d.evalsha_usec_per_call(), Some(10.0));
    }
}
