//! The process helpers against real `redis-server`s on private loopback ports.

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, TcpStream};
use std::time::{Duration, Instant};

use tollgate_test::{free_port, key_slot, RedisCluster, RedisServer};

/// Sends `PING` on a fresh connection and returns the raw reply, with `timeout` on every step.
fn raw_ping(port: u16, timeout: Duration) -> io::Result<String> {
    let mut stream = TcpStream::connect((Ipv4Addr::LOCALHOST, port))?;
    stream.set_read_timeout(Some(timeout))?;
    stream.write_all(b"PING\r\n")?;
    read_reply_line(&mut stream)
}

fn read_reply_line(stream: &mut TcpStream) -> io::Result<String> {
    let mut reply = Vec::new();
    let mut byte = [0u8; 1];
    while !reply.ends_with(b"\r\n") {
        if stream.read(&mut byte)? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        reply.push(byte[0]);
    }
    Ok(String::from_utf8_lossy(&reply).into_owned())
}

#[test]
fn start_answers_ping() {
    let server = RedisServer::start().unwrap();
    assert_eq!(server.cli(&["PING"]).unwrap(), "PONG\n");
    assert_eq!(
        server.url(),
        format!("redis://127.0.0.1:{}/", server.port())
    );
    assert!(server.is_running());
    let pid = server.pid().unwrap();
    let info = server.cli(&["INFO", "server"]).unwrap();
    assert!(info.contains(&format!("process_id:{pid}")), "{info}");
    // Persistence is off.
    assert_eq!(server.cli(&["CONFIG", "GET", "save"]).unwrap(), "save\n\n");
    assert_eq!(
        server.cli(&["CONFIG", "GET", "appendonly"]).unwrap(),
        "appendonly\nno\n"
    );
}

#[test]
fn kill_refuses_connections_and_restart_comes_back_empty() {
    let mut server = RedisServer::start().unwrap();
    let port = server.port();
    assert_eq!(server.cli(&["SET", "k", "v"]).unwrap().trim(), "OK");
    assert_eq!(
        server.cli(&["SCRIPT", "LOAD", "return 1"]).unwrap().trim(),
        "e0e1f9fabfc9d4800c877a703b823ac0578ff8db"
    );

    server.kill();
    assert!(!server.is_running());
    assert_eq!(server.pid(), None);
    let refused = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).unwrap_err();
    assert_eq!(refused.kind(), io::ErrorKind::ConnectionRefused);
    assert!(server.cli(&["PING"]).is_err());
    server.kill(); // idempotent
    server.pause(); // no-ops on a dead server
    server.resume();

    server.restart().unwrap();
    assert_eq!(server.port(), port);
    assert!(server.is_running());
    assert_eq!(raw_ping(port, Duration::from_secs(5)).unwrap(), "+PONG\r\n");
    assert_eq!(server.cli(&["GET", "k"]).unwrap(), "\n");
    assert_eq!(server.cli(&["DBSIZE"]).unwrap().trim(), "0");
    assert_eq!(
        server
            .cli(&[
                "SCRIPT",
                "EXISTS",
                "e0e1f9fabfc9d4800c877a703b823ac0578ff8db"
            ])
            .unwrap()
            .trim(),
        "0"
    );

    // A restart of a running server works too.
    let pid = server.pid();
    server.restart().unwrap();
    assert_ne!(server.pid(), pid);
    assert_eq!(server.cli(&["PING"]).unwrap().trim(), "PONG");
}

#[test]
fn pause_stalls_and_resume_answers() {
    let server = RedisServer::start().unwrap();
    let port = server.port();
    server.pause();
    assert!(server.is_running());

    // The kernel still accepts the connection, but nobody answers.
    let mut stalled = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).unwrap();
    stalled
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    stalled.write_all(b"PING\r\n").unwrap();
    let err = read_reply_line(&mut stalled).unwrap_err();
    assert!(
        matches!(
            err.kind(),
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
        ),
        "{err:?}"
    );

    server.resume();
    // The stalled request is answered once the server runs again, and so are new ones.
    stalled
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    assert_eq!(read_reply_line(&mut stalled).unwrap(), "+PONG\r\n");
    assert_eq!(raw_ping(port, Duration::from_secs(5)).unwrap(), "+PONG\r\n");
}

#[test]
fn kill_ends_a_paused_server() {
    let mut server = RedisServer::start().unwrap();
    let port = server.port();
    server.pause();
    server.kill();
    assert!(!server.is_running());
    assert!(TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_err());
}

#[test]
fn flushall_empties_the_keyspace() {
    let server = RedisServer::start().unwrap();
    for key in ["a", "b", "c"] {
        server.cli(&["SET", key, "1"]).unwrap();
    }
    assert_eq!(server.cli(&["DBSIZE"]).unwrap().trim(), "3");
    server.flushall().unwrap();
    assert_eq!(server.cli(&["DBSIZE"]).unwrap().trim(), "0");
}

#[test]
fn start_with_passes_arguments_and_drop_cleans_up() {
    let mut server = RedisServer::start_with(&["--maxmemory", "12mb"]).unwrap();
    assert_eq!(
        server.cli(&["CONFIG", "GET", "maxmemory"]).unwrap(),
        "maxmemory\n12582912\n"
    );
    // Restarts keep the arguments.
    server.restart().unwrap();
    assert_eq!(
        server.cli(&["CONFIG", "GET", "maxmemory"]).unwrap(),
        "maxmemory\n12582912\n"
    );
    let dir = server.dir().to_path_buf();
    assert!(dir.join("redis.log").exists());
    let port = server.port();
    drop(server);
    assert!(!dir.exists());
    assert!(TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_err());
}

#[test]
fn bad_arguments_fail_fast() {
    let started = Instant::now();
    let err = RedisServer::start_with(&["--no-such-option", "1"]).unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(err.to_string().contains("no-such-option"), "{err}");
}

#[test]
fn free_ports_are_distinct_and_leave_room_for_the_bus() {
    let ports: Vec<u16> = (0..50).map(|_| free_port().unwrap()).collect();
    let mut unique = ports.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(unique.len(), ports.len());
    for port in ports {
        assert!(port <= 55_000);
        assert_ne!(port, 6379);
    }
}

/// `n` keys whose slots are all below `below`.
fn keys_in_low_slots(n: usize, below: u16) -> Vec<String> {
    (0..)
        .map(|i| format!("key:{i}"))
        .filter(|k| key_slot(k.as_bytes()) < below)
        .take(n)
        .collect()
}

#[test]
fn cluster_starts_healthy_and_reshards() {
    let started = Instant::now();
    let cluster = RedisCluster::start().unwrap();
    eprintln!("cluster healthy after {:?}", started.elapsed());
    assert_eq!(cluster.urls().len(), 6);
    assert_eq!(cluster.nodes().len(), 6);
    let masters = cluster.masters().unwrap();
    assert_eq!(masters.len(), 3, "{masters:?}");
    let ids: std::collections::HashSet<String> =
        (0..6).map(|i| cluster.node_id(i).unwrap()).collect();
    assert_eq!(ids.len(), 6);

    // A key written through one node is readable through another, and lives on its slot's owner.
    let node0 = &cluster.nodes()[0];
    let node5 = &cluster.nodes()[5];
    assert_eq!(
        node0
            .cli(&["-c", "SET", "greeting", "hello"])
            .unwrap()
            .trim(),
        "OK"
    );
    assert_eq!(
        node5.cli(&["-c", "GET", "greeting"]).unwrap().trim(),
        "hello"
    );
    let slot: u16 = node0
        .cli(&["CLUSTER", "KEYSLOT", "greeting"])
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(slot, key_slot(b"greeting"));
    let owner = cluster.slot_owner(slot).unwrap();
    assert!(masters.contains(&owner));
    assert_eq!(
        cluster.nodes()[owner]
            .cli(&["GET", "greeting"])
            .unwrap()
            .trim(),
        "hello"
    );

    // Move the 100 lowest slots of slot 0's owner, with keys in them, to another master.
    let from = cluster.slot_owner(0).unwrap();
    let to = *masters.iter().find(|&&m| m != from).unwrap();
    let moved = keys_in_low_slots(20, 100);
    for key in &moved {
        assert_eq!(node0.cli(&["-c", "SET", key, key]).unwrap().trim(), "OK");
    }
    let resharding = Instant::now();
    let status = cluster.reshard(from, to, 100).unwrap().wait().unwrap();
    assert!(status.success(), "{status}");
    cluster.wait_healthy(Duration::from_secs(30)).unwrap();
    eprintln!("reshard done and healthy after {:?}", resharding.elapsed());
    assert_eq!(cluster.slot_owner(0).unwrap(), to);
    assert_eq!(cluster.slot_owner(99).unwrap(), to);
    assert_eq!(cluster.slot_owner(100).unwrap(), from);
    for key in &moved {
        assert_eq!(cluster.nodes()[to].cli(&["GET", key]).unwrap().trim(), key);
        assert_eq!(node5.cli(&["-c", "GET", key]).unwrap().trim(), key);
    }
    assert_eq!(
        node5.cli(&["-c", "GET", "greeting"]).unwrap().trim(),
        "hello"
    );
    eprintln!("cluster test took {:?}", started.elapsed());
}

#[test]
fn cluster_fails_over_and_heals() {
    let started = Instant::now();
    let mut cluster = RedisCluster::start().unwrap();
    let victim = cluster.slot_owner(0).unwrap();
    cluster.node_mut(victim).kill();
    let failover = Instant::now();
    cluster.wait_healthy(Duration::from_secs(30)).unwrap();
    eprintln!("failover healthy after {:?}", failover.elapsed());
    let masters = cluster.masters().unwrap();
    assert_eq!(masters.len(), 3, "{masters:?}");
    assert!(!masters.contains(&victim));
    let owner = cluster.slot_owner(0).unwrap();
    assert_ne!(owner, victim);

    // The old master comes back as a replica of the promoted one.
    cluster.node_mut(victim).restart().unwrap();
    cluster.wait_healthy(Duration::from_secs(30)).unwrap();
    assert_eq!(cluster.masters().unwrap(), masters);
    assert_eq!(cluster.slot_owner(0).unwrap(), owner);
    eprintln!("failover test took {:?}", started.elapsed());
}
