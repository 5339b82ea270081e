//! A look at the configured Redis before the service starts, to tell a setting that is wrong
//! from a server that is down.
//!
//! Behind the fallback store the service starts while Redis is down and decides by the rules'
//! failure modes until it answers: right for an outage, which ends. A wrong password, a
//! database that does not exist or a host name that does not resolve never fix themselves, and
//! a service started with one would admit (or refuse) everything by its failure modes for as
//! long as it runs, looking healthy. So those refuse to start, naming what is wrong; anything
//! else (refused or timed-out connections, a server still loading, a name server that did not
//! answer) lets the service start degraded, as before.

use std::time::Duration;

use redis::{ConnectionAddr, ErrorKind, RedisError};

/// What the look at one Redis URL found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Preflight {
    /// Redis answered `PING` with these settings.
    Ready,
    /// Redis could not be reached now (down, slow, not resolvable right now): the service
    /// may start degraded and connect when it answers.
    Down(String),
    /// The setting is wrong and waiting will not fix it: the service must not start.
    Misconfigured(String),
}

/// Looks at the Redis server of `url`, each step within `timeout`: the URL, the host name,
/// the connection (with its `AUTH` and `SELECT`), then `PING`.
pub async fn check(url: &str, timeout: Duration) -> Preflight {
    let client = match redis::Client::open(url) {
        Ok(c) => c,
        Err(e) => return Preflight::Misconfigured(format!("not a usable Redis URL: {e}")),
    };
    let host_port = match client.get_connection_info().addr() {
        ConnectionAddr::Tcp(host, port) | ConnectionAddr::TcpTls { host, port, .. } => {
            Some((host.clone(), *port))
        }
        _ => None,
    };
    if let Some((host, port)) = host_port {
        if host.parse::<std::net::IpAddr>().is_err() {
            match tokio::time::timeout(timeout, tokio::net::lookup_host((host.as_str(), port)))
                .await
            {
                Ok(Ok(_)) => {}
                Ok(Err(e)) if temporary_lookup_failure(&e) => {
                    return Preflight::Down(format!("looking up {host:?}: {e}"))
                }
                Ok(Err(e)) => {
                    return Preflight::Misconfigured(format!(
                        "the host name {host:?} does not resolve ({e})"
                    ))
                }
                Err(_) => {
                    return Preflight::Down(format!(
                        "looking up {host:?} took longer than {timeout:?}"
                    ))
                }
            }
        }
    }
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(timeout))
        .set_response_timeout(Some(timeout));
    let mut conn = match client
        .get_multiplexed_async_connection_with_config(&config)
        .await
    {
        Ok(c) => c,
        Err(e) => return classify(&e),
    };
    match redis::cmd("PING").query_async::<String>(&mut conn).await {
        Ok(_) => Preflight::Ready,
        Err(e) => classify(&e),
    }
}

/// Whether a failed host lookup may succeed later: the name server did not answer
/// (`EAI_AGAIN`), as opposed to answering that the name does not exist.
fn temporary_lookup_failure(e: &std::io::Error) -> bool {
    let text = e.to_string().to_ascii_lowercase();
    e.kind() == std::io::ErrorKind::TimedOut
        || text.contains("temporary failure")
        || text.contains("try again")
}

/// Sorts a connection or `PING` failure into what waiting may cure and what it will not.
fn classify(e: &RedisError) -> Preflight {
    let text = e.to_string();
    let lower = text.to_ascii_lowercase();
    let wrong_credentials = e.kind() == ErrorKind::AuthenticationFailed
        || matches!(e.code(), Some("WRONGPASS" | "NOAUTH" | "NOPERM"))
        || lower.contains("invalid password")
        || lower.contains("invalid username-password")
        || lower.contains("authentication required")
        || lower.contains("without any password configured");
    if wrong_credentials {
        return Preflight::Misconfigured(format!(
            "Redis refused the credentials in the URL (wrong or missing password or user): \
             {text}"
        ));
    }
    if lower.contains("db index is out of range") || lower.contains("invalid db index") {
        return Preflight::Misconfigured(format!(
            "the database number in the URL does not exist on this server: {text}"
        ));
    }
    if lower.contains("select is not allowed in cluster mode") {
        return Preflight::Misconfigured(format!(
            "a Redis Cluster has only database 0; remove the database number from the URL: \
             {text}"
        ));
    }
    if e.kind() == ErrorKind::InvalidClientConfig {
        return Preflight::Misconfigured(text);
    }
    Preflight::Down(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn urls_that_cannot_work_are_misconfigured() {
        let t = Duration::from_millis(500);
        for url in ["redis://127.0.0.1:6379/notanumber", "http://127.0.0.1:6379"] {
            assert!(
                matches!(check(url, t).await, Preflight::Misconfigured(_)),
                "{url}"
            );
        }
        // `.invalid` never resolves (RFC 2606).
        let p = check("redis://redis.tollgate-test.invalid:6379", t).await;
        assert!(
            matches!(&p, Preflight::Misconfigured(m) if m.contains("does not resolve")),
            "{p:?}"
        );
    }

    #[tokio::test]
    async fn a_port_with_no_server_is_down_not_misconfigured() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let p = check(
            &format!("redis://127.0.0.1:{port}"),
            Duration::from_millis(500),
        )
        .await;
        assert!(matches!(p, Preflight::Down(_)), "{p:?}");
    }
}
