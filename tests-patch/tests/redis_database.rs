//! A real database through an unmodified sync driver: the `redis` crate against a real
//! `redis-server`, 100 coroutines of one hub, each with its own connection, doing SET/GET and a
//! blocking BLPOP at the same time.
//!
//! `.ci/run` starts a redis-server on a free port and passes it in `GREENHUB_TEST_REDIS_PORT`.
//! The proof of concurrency is deterministic: every coroutine blocks in BLPOP on its own list,
//! and only once the server reports all 100 clients blocked does the root push the items (a hub
//! blocked by one BLPOP would never get there; the BLPOP's own 10 s timeout then fails it).

use std::time::{Duration, Instant};

use redis::Commands;

const CLIENTS: usize = 100;
const PORT_VAR: &str = "GREENHUB_TEST_REDIS_PORT";

fn redis_url() -> Option<String> {
    let Ok(port) = std::env::var(PORT_VAR) else {
        eprintln!(
            "\n\n*** SKIPPED: {PORT_VAR} is not set, so no redis-server to test against. \
             Run `bash .ci/run` (it installs and starts one), or start `redis-server --port N` \
             and set {PORT_VAR}=N. ***\n"
        );
        return None;
    };
    Some(format!("redis://127.0.0.1:{port}/"))
}

#[test]
fn a_hundred_coroutines_use_redis_concurrently_and_every_value_is_right() {
    let Some(url) = redis_url() else { return };
    greenhub::patch::install();
    let client = redis::Client::open(url).unwrap();
    let prefix = format!("greenhub-test-{}", std::process::id());
    greenhub::run(|| {
        let workers: Vec<_> = (0..CLIENTS)
            .map(|i| {
                let (client, prefix) = (client.clone(), prefix.clone());
                greenhub::spawn(move || {
                    let mut con = client.get_connection().unwrap();
                    let key = format!("{prefix}:key:{i}");
                    let _: () = con.set(&key, format!("value {i}")).unwrap();
                    let popped: Option<(String, String)> =
                        con.blpop(format!("{prefix}:list:{i}"), 10.0).unwrap();
                    let value: String = con.get(&key).unwrap();
                    let _: () = con.del(&key).unwrap();
                    (value, popped.map(|(_, item)| item))
                })
            })
            .collect();
        let mut admin = client.get_connection().unwrap();
        wait_for_blocked_clients(&mut admin, CLIENTS);
        for i in 0..CLIENTS {
            let _: () = admin.rpush(format!("{prefix}:list:{i}"), format!("item {i}")).unwrap();
        }
        for (i, worker) in workers.into_iter().enumerate() {
            let (value, item) = worker.join().unwrap();
            assert_eq!(value, format!("value {i}"));
            assert_eq!(item, Some(format!("item {i}")), "BLPOP {i} timed out: the hub was blocked");
        }
    });
}

/// Polls the server (cooperatively) until `n` clients are blocked in a list pop.
fn wait_for_blocked_clients(admin: &mut redis::Connection, n: usize) {
    let start = Instant::now();
    loop {
        let info: String = redis::cmd("INFO").arg("clients").query(admin).unwrap();
        let blocked = info
            .lines()
            .find_map(|l| l.strip_prefix("blocked_clients:"))
            .and_then(|v| v.trim().parse::<usize>().ok())
            .unwrap_or(0);
        if blocked >= n || start.elapsed() > Duration::from_secs(20) {
            return;
        }
        std::thread::sleep(Duration::from_millis(10)); // patched: a greenhub sleep
    }
}
