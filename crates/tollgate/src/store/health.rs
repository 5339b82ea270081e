//! What a shared store can tell about its own server, so that a
//! [`FallbackStore`](super::fallback::FallbackStore) in front of it blames a slow call on the
//! server only when the server is the one at fault.
//!
//! A call can be slow because the server is failing (it stopped answering, its connection
//! broke) or because this host is busy (the process waited for a CPU, the call queued behind
//! others before it was written). Only the store sees the difference: it knows when a request
//! went onto a connection and when a reply came back. It reports that here; the fallback store
//! judges.

use std::time::Duration;

use tokio::time::Instant;

/// A snapshot of what a store sees on its connections (see [`Store::wire_health`]).
///
/// [`Store::wire_health`]: super::Store::wire_health
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WireHealth {
    /// How long the most silent connection has had requests written and no reply read (since
    /// its last reply, or since the first request written to it while it was idle), counted
    /// only while this process was running its tasks: a stall of the process itself (the host
    /// did not run it, or its runtime was too congested) is not the server's silence. Zero
    /// when no request is in flight.
    pub silence: Duration,
    /// How long the server's replies usually take, measured from the request being handed to
    /// its connection to the reply being read: the smoothed wire time plus four times its mean
    /// deviation (how TCP sets its retransmission timeout). Zero before the first reply.
    pub usual: Duration,
    /// The last time a connection could not be made or broke (refused, reset, closed).
    pub last_error: Option<Instant>,
    /// Requests on the connections, written and not yet answered.
    pub in_flight: u64,
    /// Calls waiting on this host to be written (queued behind the ones being sent): load on
    /// this host, not trouble at the server.
    pub backlog: u64,
    /// How long this host recently kept a ready task of this process waiting for a CPU (the
    /// worst lateness of a 1 ms timer over the last second or two). A server on the same
    /// busy host waits for a CPU as long, and part of its silence is that wait, not a
    /// failure. Zero when nothing measured it.
    pub host_delay: Duration,
}
