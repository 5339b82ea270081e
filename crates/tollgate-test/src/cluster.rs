//! A private six-node Redis Cluster.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::resp;
use crate::server::{cli_binary, RedisServer, POLL_INTERVAL, PROBE_TIMEOUT};

/// The number of hash slots in a Redis Cluster.
const SLOTS: u32 = 16_384;
/// How many nodes [`RedisCluster::start`] runs.
const NODES: usize = 6;
/// How long [`RedisCluster::start`] waits for a healthy cluster.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// Pause between health probes of the whole cluster.
const HEALTH_POLL: Duration = Duration::from_millis(50);
/// The configuration every cluster node runs with. A replica's full sync starts at once rather
/// than after the default 5 s wait for more replicas (`repl-diskless-sync-delay`).
const CLUSTER_ARGS: [&str; 8] = [
    "--cluster-enabled",
    "yes",
    "--cluster-config-file",
    "nodes.conf",
    "--cluster-node-timeout",
    "2000",
    "--repl-diskless-sync-delay",
    "0",
];

/// A private Redis Cluster of six [`RedisServer`]s on loopback ports: three masters with one
/// replica each, all slots assigned. Every node is killed and cleaned up when it is dropped.
///
/// Nodes run with `--cluster-enabled yes --cluster-config-file nodes.conf
/// --cluster-node-timeout 2000 --repl-diskless-sync-delay 0`, each in its own directory, so a replica takes over about two to
/// four seconds after its master is killed or paused. Node indices are stable: they index
/// [`nodes`](Self::nodes) and [`urls`](Self::urls), whatever roles the nodes have now. Nodes 0, 1
/// and 2 start as masters, but failovers change that: ask [`masters`](Self::masters).
#[derive(Debug)]
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
    reshards: AtomicUsize,
    // Declared last: dropped after the nodes.
    logs: TempDir,
}

/// Who serves what, as one node sees it: `(first slot, last slot, port of the master)`, sorted.
type SlotMap = Vec<(u16, u16, u16)>;

/// One line of `CLUSTER NODES`.
#[derive(Debug)]
struct NodeLine {
    port: u16,
    flags: Vec<String>,
    link_connected: bool,
    /// Slot ranges served, inclusive.
    slots: Vec<(u16, u16)>,
    /// Whether a slot of this node is being migrated or imported.
    open_slots: bool,
}

impl NodeLine {
    fn has_flag(&self, flag: &str) -> bool {
        self.flags.iter().any(|f| f == flag)
    }
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

fn parse_cluster_nodes(text: &str) -> io::Result<Vec<NodeLine>> {
    let mut lines = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() < 8 {
            return Err(invalid(format!("bad CLUSTER NODES line: {line}")));
        }
        // ip:port@cport[,hostname]
        let address = fields[1].split('@').next().unwrap_or_default();
        let port = address
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
        let mut slots = Vec::new();
        let mut open_slots = false;
        for range in &fields[8..] {
            if range.starts_with('[') {
                open_slots = true;
                continue;
            }
            let parse = |s: &str| {
                s.parse::<u16>()
                    .map_err(|_| invalid(format!("bad slot range {range:?} in: {line}")))
            };
            let (start, end) = match range.split_once('-') {
                Some((a, b)) => (parse(a)?, parse(b)?),
                None => (parse(range)?, parse(range)?),
            };
            slots.push((start, end));
        }
        lines.push(NodeLine {
            port,
            flags: fields[2].split(',').map(str::to_string).collect(),
            link_connected: fields[7] == "connected",
            slots,
            open_slots,
        });
    }
    Ok(lines)
}

/// `field:value` lines of an `INFO` or `CLUSTER INFO` reply.
fn info_fields(text: &str) -> HashMap<String, String> {
    text.lines()
        .filter_map(|l| l.trim().split_once(':'))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

impl RedisCluster {
    /// Starts six nodes, joins them with `redis-cli --cluster create ... --cluster-replicas 1
    /// --cluster-yes`, and returns once the cluster is healthy as defined by
    /// [`wait_healthy`](Self::wait_healthy) (within about 60 s, an error otherwise).
    pub fn start() -> io::Result<RedisCluster> {
        let logs = tempfile::Builder::new()
            .prefix("tollgate-cluster-")
            .tempdir()?;
        let nodes = (0..NODES)
            .map(|_| RedisServer::start_with(&CLUSTER_ARGS))
            .collect::<io::Result<Vec<_>>>()?;
        let cluster = RedisCluster {
            nodes,
            reshards: AtomicUsize::new(0),
            logs,
        };
        let deadline = Instant::now() + START_TIMEOUT;
        let log_path = cluster.logs.path().join("create.log");
        let log = File::create(&log_path)?;
        let mut create = Command::new(cli_binary());
        create.args(["--cluster", "create"]);
        for node in &cluster.nodes {
            create.arg(format!("127.0.0.1:{}", node.port()));
        }
        let mut child = create
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        let status = loop {
            if let Some(status) = child.try_wait()? {
                break status;
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "redis-cli --cluster create did not finish:\n{}",
                        std::fs::read_to_string(&log_path).unwrap_or_default()
                    ),
                ));
            }
            thread::sleep(POLL_INTERVAL);
        };
        if !status.success() {
            return Err(io::Error::other(format!(
                "redis-cli --cluster create failed ({status}):\n{}",
                std::fs::read_to_string(&log_path).unwrap_or_default()
            )));
        }
        cluster.wait_healthy(deadline.saturating_duration_since(Instant::now()))?;
        Ok(cluster)
    }

    /// The URLs of all six nodes (`redis://127.0.0.1:PORT/`), to use as seed nodes.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(RedisServer::url).collect()
    }

    /// All six nodes, by index.
    pub fn nodes(&self) -> &[RedisServer] {
        &self.nodes
    }

    /// Node `i`, to kill, pause or restart it.
    ///
    /// # Panics
    ///
    /// If `i` is not below 6.
    pub fn node_mut(&mut self, i: usize) -> &mut RedisServer {
        &mut self.nodes[i]
    }

    fn node(&self, i: usize) -> io::Result<&RedisServer> {
        self.nodes.get(i).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("no cluster node {i} (there are {NODES})"),
            )
        })
    }

    /// The cluster node id of node `i` (`CLUSTER MYID`).
    pub fn node_id(&self, i: usize) -> io::Result<String> {
        resp::text(self.node(i)?.port(), &["CLUSTER", "MYID"], PROBE_TIMEOUT)
    }

    /// The indices of the running nodes that are masters now, by their own account
    /// (`role:master` in `INFO replication`), in ascending order.
    pub fn masters(&self) -> io::Result<Vec<usize>> {
        let mut masters = Vec::new();
        for (i, node) in self.nodes.iter().enumerate() {
            if node.is_running() && self.role(i)? == "master" {
                masters.push(i);
            }
        }
        Ok(masters)
    }

    fn role(&self, i: usize) -> io::Result<String> {
        let info = resp::text(
            self.nodes[i].port(),
            &["INFO", "replication"],
            PROBE_TIMEOUT,
        )?;
        info_fields(&info)
            .remove("role")
            .ok_or_else(|| invalid(format!("no role in INFO replication of node {i}")))
    }

    fn index_of_port(&self, port: u16) -> Option<usize> {
        self.nodes.iter().position(|n| n.port() == port)
    }

    /// The index of the master that serves `slot`, according to `CLUSTER NODES` on the first
    /// running node. During a migration that is still the source node.
    pub fn slot_owner(&self, slot: u16) -> io::Result<usize> {
        let asked = self
            .nodes
            .iter()
            .position(RedisServer::is_running)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotConnected, "no node is running"))?;
        self.slot_owner_seen_by(asked, slot)
    }

    /// The index of the master that serves `slot` according to `CLUSTER NODES` on node `asked`
    /// (to ask a node other than one that is paused: after a failover, the replica that took
    /// over).
    pub fn slot_owner_seen_by(&self, asked: usize, slot: u16) -> io::Result<usize> {
        let text = resp::text(
            self.node(asked)?.port(),
            &["CLUSTER", "NODES"],
            PROBE_TIMEOUT,
        )?;
        parse_cluster_nodes(&text)?
            .iter()
            .find(|line| line.slots.iter().any(|&(a, b)| a <= slot && slot <= b))
            .and_then(|line| self.index_of_port(line.port))
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("slot {slot} has no owner among the cluster's nodes"),
                )
            })
    }

    /// Spawns `redis-cli --cluster reshard 127.0.0.1:P --cluster-from ID --cluster-to ID
    /// --cluster-slots N --cluster-yes` moving `slots` slots (the lowest-numbered ones `from`
    /// serves) with their keys from node `from` to node `to`, and returns the running child, so
    /// that the caller can put load on the cluster meanwhile, then `wait()` for it.
    ///
    /// The child's output goes to a `reshard-K.log` file in the cluster's log directory, so it
    /// never blocks on a full pipe. After it exits, [`wait_healthy`](Self::wait_healthy) waits
    /// until every node has learnt the new slot owners.
    pub fn reshard(&self, from: usize, to: usize, slots: u32) -> io::Result<Child> {
        let from_id = self.node_id(from)?;
        let to_id = self.node_id(to)?;
        let k = self.reshards.fetch_add(1, Ordering::Relaxed);
        let log = File::create(self.logs.path().join(format!("reshard-{k}.log")))?;
        Command::new(cli_binary())
            .args(["--cluster", "reshard"])
            .arg(format!("127.0.0.1:{}", self.node(from)?.port()))
            .args(["--cluster-from", from_id.as_str()])
            .args(["--cluster-to", to_id.as_str()])
            .args(["--cluster-slots", slots.to_string().as_str()])
            .arg("--cluster-yes")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
    }

    /// Waits until the cluster is healthy, counting only the nodes that are running (so it can
    /// follow a failover after a node was killed), or returns a `TimedOut` error naming what was
    /// still wrong.
    ///
    /// Healthy means, on every running node: `cluster_state:ok` with all 16384 slots assigned and
    /// ok in `CLUSTER INFO`; in its `CLUSTER NODES`, every running node is present, not failing,
    /// connected, with the role it reports itself, no slot migrating or importing, every slot
    /// served by a running node, and the same slot owners as every other node sees; and, if it is
    /// a replica, `master_link_status:up` in `INFO replication`.
    ///
    /// Right after a master is killed this therefore waits for its replica to take over (about
    /// two to four seconds). Each probe is bounded by a 1 s timeout, so a paused node makes this
    /// wait out `timeout` (overshooting it by a few probes) rather than hang.
    pub fn wait_healthy(&self, timeout: Duration) -> io::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let problem = match self.health_problem() {
                Ok(None) => return Ok(()),
                Ok(Some(problem)) => problem,
                Err(e) => format!("probe failed: {e}"),
            };
            if Instant::now() >= deadline {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("cluster not healthy after {timeout:?}: {problem}"),
                ));
            }
            thread::sleep(HEALTH_POLL);
        }
    }

    /// `None` when healthy, otherwise the first problem found.
    fn health_problem(&self) -> io::Result<Option<String>> {
        let running: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| self.nodes[i].is_running())
            .collect();
        if running.is_empty() {
            return Ok(Some("no node is running".to_string()));
        }
        let mut roles = HashMap::new();
        for &i in &running {
            let port = self.nodes[i].port();
            let replication =
                info_fields(&resp::text(port, &["INFO", "replication"], PROBE_TIMEOUT)?);
            let role = replication.get("role").cloned().unwrap_or_default();
            if role == "slave"
                && replication.get("master_link_status").map(String::as_str) != Some("up")
            {
                return Ok(Some(format!("replica {i}: master link not up")));
            }
            roles.insert(self.nodes[i].port(), role);
        }
        let mut first_map: Option<(usize, SlotMap)> = None;
        for &i in &running {
            let port = self.nodes[i].port();
            let info = info_fields(&resp::text(port, &["CLUSTER", "INFO"], PROBE_TIMEOUT)?);
            for (field, want) in [
                ("cluster_state", "ok".to_string()),
                ("cluster_slots_assigned", SLOTS.to_string()),
                ("cluster_slots_ok", SLOTS.to_string()),
            ] {
                let have = info.get(field).map(String::as_str).unwrap_or("?");
                if have != want {
                    return Ok(Some(format!("node {i}: {field}:{have}")));
                }
            }
            let lines =
                parse_cluster_nodes(&resp::text(port, &["CLUSTER", "NODES"], PROBE_TIMEOUT)?)?;
            for &j in &running {
                let port_j = self.nodes[j].port();
                let Some(line) = lines.iter().find(|l| l.port == port_j) else {
                    return Ok(Some(format!("node {i} does not know node {j}")));
                };
                for bad in ["fail", "fail?", "handshake", "noaddr"] {
                    if line.has_flag(bad) {
                        return Ok(Some(format!("node {i} sees node {j} as {bad}")));
                    }
                }
                if i != j && !line.link_connected {
                    return Ok(Some(format!("node {i} is not connected to node {j}")));
                }
                let role = roles[&port_j].as_str();
                if !line.has_flag(role) {
                    return Ok(Some(format!(
                        "node {i} sees node {j} as {:?}, but it is a {role}",
                        line.flags
                    )));
                }
            }
            if let Some(line) = lines.iter().find(|l| l.open_slots) {
                return Ok(Some(format!(
                    "node {i} sees slots migrating or importing at port {}",
                    line.port
                )));
            }
            if let Some(line) = lines.iter().find(|l| {
                !l.slots.is_empty()
                    && !self
                        .index_of_port(l.port)
                        .is_some_and(|k| running.contains(&k))
            }) {
                return Ok(Some(format!(
                    "node {i} sees slots served by port {}, which is not running",
                    line.port
                )));
            }
            let mut map: SlotMap = lines
                .iter()
                .flat_map(|l| l.slots.iter().map(|&(a, b)| (a, b, l.port)))
                .collect();
            map.sort_unstable();
            match &first_map {
                None => first_map = Some((i, map)),
                Some((k, first)) if *first != map => {
                    return Ok(Some(format!(
                        "nodes {k} and {i} disagree about slot owners"
                    )));
                }
                Some(_) => {}
            }
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cluster_nodes() {
        let text = "\
e7d1 127.0.0.1:30004@40004 slave 67ed 0 1426238317239 4 connected
67ed 127.0.0.1:30002@40002,host master - 0 1426238316232 2 connected 5461-10922 [10923->-292f]
292f 127.0.0.1:30003@40003 myself,master - 0 0 3 connected 10923 10924-16383
";
        let lines = parse_cluster_nodes(text).unwrap();
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[0].port, 30004);
        assert!(lines[0].has_flag("slave") && lines[0].slots.is_empty());
        assert_eq!(lines[1].port, 30002);
        assert_eq!(lines[1].slots, vec![(5461, 10922)]);
        assert!(lines[1].open_slots && !lines[2].open_slots);
        assert!(lines[2].has_flag("master") && lines[2].link_connected);
        assert_eq!(lines[2].slots, vec![(10923, 10923), (10924, 16383)]);
    }
}
