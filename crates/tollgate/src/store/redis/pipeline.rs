//! Pipelining of concurrent script calls on one standalone connection.
//!
//! The multiplexed connection writes each command as soon as its driver task runs, and tokio
//! runs that task right after the caller that queued a command (the scheduler's LIFO slot), so
//! under load every decision paid its own `writev` and Redis its own `read`. The [`Pipeliner`]
//! instead hands calls to a task that first lets every other ready caller queue its call
//! (`yield_now`), then sends all of them, at most [`MAX_PIPELINE`], as one pipeline: one write
//! for the client and one read for Redis. Each call keeps its own reply; a pipeline that fails
//! (timeout, dropped connection) fails each of its calls, and none is retried. An idle store
//! pays one task hop per call.
//!
//! Calls queued for the task and not yet sent are the store's backlog: load on this host,
//! reported apart from the time calls spend on the wire (see `wire.rs`), so that a busy host
//! is not mistaken for a slow Redis.

use std::sync::Arc;

use redis::aio::ConnectionLike as _;
use redis::{RedisError, Value};
use tokio::sync::{mpsc, oneshot};

use super::home::Home;
use super::wire::Wire;
use super::Conn;

/// At most this many calls go into one pipeline (`redis-benchmark -P 16` sends 16 per
/// connection; a few pipelines in flight let Redis start on one while the client prepares the
/// next).
pub(super) const MAX_PIPELINE: usize = 32;

/// One call waiting for the pipeline task.
struct Call {
    cmd: redis::Cmd,
    reply: oneshot::Sender<Result<Value, RedisError>>,
}

/// Sends concurrent calls together (see the module docs). Standalone servers only.
pub(super) struct Pipeliner {
    tx: parking_lot::Mutex<Option<mpsc::UnboundedSender<Call>>>,
    /// Where the pipeline task runs.
    home: Home,
    /// Where the backlog is counted.
    wire: Arc<Wire>,
}

impl Pipeliner {
    /// A pipeliner whose task runs on `home` (see [`Home`]).
    pub(super) fn new(home: Home, wire: Arc<Wire>) -> Self {
        Pipeliner {
            tx: parking_lot::Mutex::new(None),
            home,
            wire,
        }
    }

    /// Sends `cmd` in the next pipeline on `conn` and answers its reply (an error reply as
    /// `Err`, so that the caller can tell `NOSCRIPT`). `None` if there is no runtime to run
    /// the pipeline task on: the caller then sends `cmd` itself.
    pub(super) async fn query(
        &self,
        conn: &Arc<arc_swap::ArcSwapOption<Conn>>,
        cmd: redis::Cmd,
    ) -> Option<Result<Value, RedisError>> {
        let (reply, answer) = oneshot::channel();
        let call = Call { cmd, reply };
        self.wire.queued();
        {
            let mut tx = self.tx.lock();
            let unsent = match tx.as_ref() {
                Some(t) => t.send(call).err().map(|e| e.0),
                None => Some(call),
            };
            if let Some(call) = unsent {
                // Start (or restart, if its runtime has ended) the task.
                let wire = &self.wire;
                let Ok(t) = self
                    .home
                    .start(call, |rx| run(rx, Arc::clone(conn), Arc::clone(wire)))
                else {
                    wire.dequeued(1);
                    return None;
                };
                *tx = Some(t);
            }
        }
        Some(answer.await.unwrap_or_else(|_| {
            Err(RedisError::from(std::io::Error::other(
                "the pipeline task ended; the outcome is unknown",
            )))
        }))
    }
}

/// The pipeline task: gathers the calls queued while the other ready tasks run, and sends
/// them as one pipeline without waiting for the previous one. Ends when the store is dropped.
async fn run(
    mut rx: mpsc::UnboundedReceiver<Call>,
    conn: Arc<arc_swap::ArcSwapOption<Conn>>,
    wire: Arc<Wire>,
) {
    while let Some(first) = rx.recv().await {
        // Let the callers that are ready now queue theirs.
        tokio::task::yield_now().await;
        let mut calls = Vec::with_capacity(MAX_PIPELINE);
        calls.push(first);
        while calls.len() < MAX_PIPELINE {
            match rx.try_recv() {
                Ok(c) => calls.push(c),
                Err(_) => break,
            }
        }
        wire.dequeued(calls.len() as u64);
        metrics::gauge!("tollgate_redis_backlog").set(wire.backlog() as f64);
        let conn = conn.load_full();
        tokio::spawn(send(conn, calls));
    }
}

/// Sends `calls` as one pipeline and answers each.
async fn send(conn: Option<Arc<Conn>>, calls: Vec<Call>) {
    let Some(conn) = conn.as_deref() else {
        for c in calls {
            let _ = c.reply.send(Err(RedisError::from(std::io::Error::other(
                "not connected yet",
            ))));
        }
        return;
    };
    let Conn::Single(cm, line) = conn else {
        // Not used in a cluster; answer one by one.
        for c in calls {
            let r = conn.query(&c.cmd).await;
            let _ = c.reply.send(r);
        }
        return;
    };
    if let [_] = calls.as_slice() {
        if let Some(c) = calls.into_iter().next() {
            let r = conn.query(&c.cmd).await;
            let _ = c.reply.send(r);
        }
        return;
    }
    let mut pipe = redis::pipe();
    let mut replies = Vec::with_capacity(calls.len());
    for c in calls {
        pipe.add_command(c.cmd);
        replies.push(c.reply);
    }
    let n = replies.len();
    let on = line.begin();
    let result = cm.clone().req_packed_commands(&pipe, 0, n).await;
    on.done(&result);
    match result {
        Ok(values) if values.len() == n => {
            for (v, reply) in values.into_iter().zip(replies) {
                let r = match v {
                    Value::ServerError(e) => Err(RedisError::from(e)),
                    v => Ok(v),
                };
                let _ = reply.send(r);
            }
        }
        Ok(values) => {
            let e = RedisError::from(std::io::Error::other(format!(
                "a pipeline of {n} calls answered {} replies",
                values.len()
            )));
            for reply in replies {
                let _ = reply.send(Err(e.clone()));
            }
        }
        Err(e) => {
            for reply in replies {
                let _ = reply.send(Err(e.clone()));
            }
        }
    }
}
