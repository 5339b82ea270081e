//! A Redis setting that is wrong refuses to start the service; a Redis that is only down lets
//! it start degraded. Against private redis-server processes.

mod common;

use common::*;
use tollgate_server::config::{RedisOptions, StoreConfig};
use tollgate_server::server::{self, Options, StartError};
use tollgate_test::RedisServer;

const PASSWORD: &str = "s3cret-redis-pass";

fn redis_config(url: String) -> tollgate_server::config::Config {
    let mut c = config("");
    c.store = StoreConfig::Redis {
        url,
        options: RedisOptions::default(),
    };
    c
}

async fn refused(url: String) -> String {
    let err = server::start(Options {
        config: redis_config(url),
        ..Options::default()
    })
    .await
    .expect_err("a wrong setting must refuse to start");
    assert!(matches!(err, StartError::Misconfigured { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        !text.contains(PASSWORD),
        "the message shows the password: {text}"
    );
    assert!(
        !text.contains("wrong-pass"),
        "the message shows the password: {text}"
    );
    text
}

#[tokio::test]
async fn wrong_settings_refuse_to_start_naming_what_is_wrong() {
    let redis = RedisServer::start().unwrap();
    let out = redis
        .cli(&["CONFIG", "SET", "requirepass", PASSWORD])
        .unwrap();
    assert_eq!(out.trim(), "OK");
    let port = redis.port();

    let text = refused(format!("redis://:wrong-pass@127.0.0.1:{port}/0")).await;
    assert!(text.contains("credentials"), "{text}");
    let text = refused(format!("redis://127.0.0.1:{port}/0")).await;
    assert!(text.contains("credentials"), "no password at all: {text}");
    // The default server has 16 databases.
    let text = refused(format!("redis://:{PASSWORD}@127.0.0.1:{port}/99")).await;
    assert!(text.contains("database number"), "{text}");
    let text = refused(format!("redis://redis.tollgate-test.invalid:{port}/0")).await;
    assert!(text.contains("does not resolve"), "{text}");
    assert!(text.contains("does not start"), "{text}");

    // The right settings start, and decide through Redis.
    let s = start_config(redis_config(format!(
        "redis://:{PASSWORD}@127.0.0.1:{port}/3"
    )))
    .await;
    s.until_ready().await;
    let a = s
        .check(
            None,
            serde_json::json!({ "tenant": "t", "provider": "p" }),
            serde_json::json!({}),
        )
        .await;
    assert!(a.allowed(), "{}", a.body);
    s.stop().await;
}

#[tokio::test]
async fn a_redis_that_is_down_still_starts_degraded() {
    let mut redis = RedisServer::start().unwrap();
    let url = redis.url();
    redis.kill();
    let s = start_config(redis_config(url)).await;
    let ready = s.get("/readyz", None).await;
    assert_eq!(ready.status, 200, "{}", ready.body);
    assert_eq!(ready.body["status"], "degraded", "{}", ready.body);
    s.stop().await;
}
