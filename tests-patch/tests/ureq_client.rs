//! A sync HTTP client crate, unmodified (`ureq`): 20 requests from 20 coroutines of one hub
//! are in flight at once against a local server that holds its replies until they all are.

use std::time::Duration;

use greenhub_patch_tests::{Protocol, slow_server, spawn_ticker};

const REQUESTS: usize = 20;

#[test]
fn twenty_ureq_requests_run_concurrently_on_one_hub() {
    greenhub::patch::install();
    let (addr, stats) = slow_server(Protocol::Http, REQUESTS, Duration::from_millis(200));
    greenhub::run(|| {
        let ticker = spawn_ticker(stats.clone(), REQUESTS);
        let requests: Vec<_> = (0..REQUESTS)
            .map(|i| {
                greenhub::spawn(move || {
                    let url = format!("http://{addr}/item/{i}");
                    ureq::get(&url).call().unwrap().into_string().unwrap()
                })
            })
            .collect();
        for (i, request) in requests.into_iter().enumerate() {
            assert_eq!(request.join().unwrap(), format!("/item/{i}"));
        }
        assert!(ticker.join().unwrap() >= 1, "the hub did not run while the requests waited");
    });
    assert_eq!(stats.peak(), REQUESTS, "the requests were not all in flight at once");
}

#[test]
fn a_ureq_timeout_still_applies_under_the_patch() {
    greenhub::patch::install();
    // A server that never answers: ureq's own read timeout (SO_RCVTIMEO on the socket) fires.
    let (addr, _stats) = slow_server(Protocol::Http, usize::MAX, Duration::ZERO);
    greenhub::run(|| {
        let agent = ureq::AgentBuilder::new().timeout_read(Duration::from_millis(100)).build();
        let other = greenhub::spawn(|| 7);
        let err = agent.get(&format!("http://{addr}/")).call().unwrap_err();
        assert!(err.to_string().contains("timed out reading response"), "{err}");
        assert_eq!(other.join().unwrap(), 7);
    });
}
