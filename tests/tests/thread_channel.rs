//! `sync::thread_channel`: a way into a hub from a plain thread, a `spawn_blocking` job and
//! another hub; disconnection; timeouts; and the deadlock check (a receiver waiting while a
//! thread still holds a sender is not a deadlock; one waiting when every sender is gone gets
//! `Err`).

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use greenhub::sync::{
    Event, RecvError, RecvTimeoutError, SendError, ThreadSender, TryRecvError, thread_channel,
};
use greenhub::{spawn, yield_now};
use greenhub_tests::{assert_no_fd_leak, panic_message, process_lock};

#[test]
fn thread_sender_is_send_sync_and_clone() {
    let _serial = process_lock(); // every test opens fds (a hub's); one counts them
    fn assert_send_sync_clone<T: Send + Sync + Clone>() {}
    assert_send_sync_clone::<ThreadSender<String>>();
}

#[test]
fn items_from_a_plain_thread_arrive_in_order_then_err() {
    let _serial = process_lock(); // every test opens fds (a hub's); one counts them
    greenhub::run(|| {
        let (tx, rx) = thread_channel();
        let producer = thread::spawn(move || {
            for i in 0..1000 {
                tx.send(i).unwrap();
            }
        });
        let got: Vec<i32> = std::iter::from_fn(|| rx.recv().ok()).collect();
        assert_eq!(got, (0..1000).collect::<Vec<_>>());
        assert_eq!(rx.recv(), Err(RecvError));
        assert_eq!(rx.try_recv(), Err(TryRecvError::Disconnected));
        producer.join().unwrap();
    });
}

#[test]
fn the_hub_runs_other_coroutines_while_a_receiver_waits() {
    let _serial = process_lock(); // every test opens fds (a hub's); one counts them
    greenhub::run(|| {
        let (tx, rx) = thread_channel::<&str>();
        let (go_tx, go_rx) = mpsc::channel::<()>();
        let thread = thread::spawn(move || {
            go_rx.recv().unwrap(); // until the hub has run the other coroutine
            tx.send("from the thread").unwrap();
        });
        let other = spawn(move || {
            yield_now();
            go_tx.send(()).unwrap();
            "other ran"
        });
        assert_eq!(rx.recv(), Ok("from the thread"));
        assert_eq!(other.join().unwrap(), "other ran");
        thread.join().unwrap();
    });
}

#[test]
fn many_threads_many_senders() {
    let _serial = process_lock(); // every test opens fds (a hub's); one counts them
    greenhub::run(|| {
        let (tx, rx) = thread_channel::<(usize, usize)>();
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let tx = tx.clone();
                thread::spawn(move || (0..500).for_each(|i| tx.send((t, i)).unwrap()))
            })
            .collect();
        drop(tx);
        let mut next = [0usize; 4];
        while let Ok((t, i)) = rx.recv() {
            assert_eq!(i, next[t], "items of one sender keep their order");
            next[t] += 1;
        }
        assert_eq!(next, [500; 4]);
        threads.into_iter().for_each(|t| t.join().unwrap());
    });
}

#[test]
fn from_a_spawn_blocking_job() {
    let _serial = process_lock(); // every test opens fds (a hub's); one counts them
    greenhub::run(|| {
        let (tx, rx) = thread_channel::<u32>();
        let receiver = spawn(move || std::iter::from_fn(|| rx.recv().ok()).sum::<u32>());
        let sent = greenhub::spawn_blocking(move || {
            (1..=10).for_each(|i| tx.send(i).unwrap());
            10
        });
        assert_eq!(sent, 10);
        assert_eq!(receiver.join().unwrap(), 55);
    });
}

#[test]
fn two_hubs_on_two_threads_talk() {
    let _serial = process_lock(); // every test opens fds (a hub's); one counts them
    // Each hub owns a receiver and hands its sender to the other through std's channel.
    let (give_a, take_a) = mpsc::channel::<ThreadSender<u32>>();
    let (give_b, take_b) = mpsc::channel::<ThreadSender<u32>>();
    let hub_b = thread::spawn(move || {
        greenhub::run(|| {
            let (tx_b, rx_b) = thread_channel::<u32>();
            give_b.send(tx_b).unwrap();
            let to_a = take_a.recv().unwrap();
            // Echo every number back, plus one, until A hangs up.
            let mut echoed = 0;
            while let Ok(n) = rx_b.recv() {
                to_a.send(n + 1).unwrap();
                echoed += 1;
            }
            echoed
        })
    });
    let last = greenhub::run(|| {
        let (tx_a, rx_a) = thread_channel::<u32>();
        give_a.send(tx_a).unwrap();
        let to_b = take_b.recv().unwrap();
        let mut n = 0;
        for _ in 0..100 {
            to_b.send(n).unwrap();
            n = rx_a.recv().unwrap();
        }
        n
    });
    assert_eq!(last, 100);
    assert_eq!(hub_b.join().unwrap(), 100);
}

#[test]
fn send_after_the_receiver_is_gone_gives_the_value_back() {
    let _serial = process_lock(); // every test opens fds (a hub's); one counts them
    let (tx, rx) = thread_channel::<String>();
    assert!(!tx.is_closed());
    drop(rx);
    assert!(tx.is_closed());
    assert_eq!(tx.send("x".into()), Err(SendError("x".to_string())));
}

#[test]
fn recv_timeout_and_try_recv() {
    let _serial = process_lock(); // every test opens fds (a hub's); one counts them
    greenhub::run(|| {
        let (tx, rx) = thread_channel::<u8>();
        assert_eq!(rx.try_recv(), Err(TryRecvError::Empty));
        assert_eq!(rx.recv_timeout(Duration::from_millis(2)), Err(RecvTimeoutError::Timeout));
        tx.send(1).unwrap();
        assert_eq!((rx.len(), rx.is_empty()), (1, false));
        assert_eq!(rx.recv_timeout(Duration::MAX), Ok(1));
        drop(tx);
        assert_eq!(rx.recv_timeout(Duration::MAX), Err(RecvTimeoutError::Disconnected));
    });
}

#[test]
fn a_receiver_made_outside_the_hub_works_inside() {
    let _serial = process_lock(); // every test opens fds (a hub's); one counts them
    let (tx, rx) = thread_channel::<u8>();
    tx.send(1).unwrap();
    assert_eq!(rx.try_recv(), Ok(1));
    let thread = thread::spawn(move || tx.send(2).unwrap());
    let got = greenhub::run(|| rx.recv());
    assert_eq!(got, Ok(2));
    thread.join().unwrap();
    // And in a second hub on the same thread: it binds to the new one.
    let (tx2, rx2) = thread_channel::<u8>();
    greenhub::run(|| rx2.recv_timeout(Duration::from_millis(1))).unwrap_err();
    let thread = thread::spawn(move || tx2.send(3).unwrap());
    assert_eq!(greenhub::run(|| rx2.recv()), Ok(3));
    thread.join().unwrap();
}

#[test]
fn root_waiting_while_a_thread_will_send_is_not_a_deadlock() {
    let _serial = process_lock(); // every test opens fds (a hub's); one counts them
    greenhub::run(|| {
        let (tx, rx) = thread_channel::<&str>();
        let (go_tx, go_rx) = mpsc::channel::<()>();
        let thread = thread::spawn(move || {
            go_rx.recv().unwrap();
            tx.send("late").unwrap();
        });
        // Runs once the root has suspended in recv; after it, nothing in the hub is ready,
        // no timer is set: only the thread can wake the root.
        spawn(move || go_tx.send(()).unwrap());
        assert_eq!(rx.recv(), Ok("late"));
        thread.join().unwrap();
    });
}

#[test]
fn root_waiting_when_the_last_sender_drops_gets_err_not_a_hang() {
    let _serial = process_lock(); // every test opens fds (a hub's); one counts them
    greenhub::run(|| {
        let (tx, rx) = thread_channel::<u8>();
        let (go_tx, go_rx) = mpsc::channel::<()>();
        let thread = thread::spawn(move || {
            go_rx.recv().unwrap();
            drop(tx);
        });
        spawn(move || go_tx.send(()).unwrap());
        assert_eq!(rx.recv(), Err(RecvError));
        thread.join().unwrap();
    });
}

#[test]
fn a_live_sender_nobody_waits_on_does_not_hide_a_deadlock() {
    let _serial = process_lock(); // every test opens fds (a hub's); one counts them
    let (tx, _rx) = thread_channel::<u8>();
    let err = catch_unwind(AssertUnwindSafe(|| {
        greenhub::run(|| {
            let _rx_in_hub = &_rx;
            Event::new().wait(); // nothing can set it; the thread channel has no waiter
        })
    }))
    .unwrap_err();
    let msg = panic_message(&*err);
    assert!(msg.contains("would block forever"), "{msg}");
    drop(tx);
}

#[test]
fn recv_with_every_sender_gone_returns_err_at_once() {
    let _serial = process_lock(); // every test opens fds (a hub's); one counts them
    // Every sender gone: recv returns Err at once instead of waiting, so no deadlock at all.
    let (tx, rx) = thread_channel::<u8>();
    drop(tx);
    assert_eq!(greenhub::run(|| rx.recv()), Err(RecvError));
}

#[test]
fn two_receivers_share_one_channel() {
    let _serial = process_lock(); // every test opens fds (a hub's); one counts them
    greenhub::run(|| {
        let (tx, rx) = thread_channel::<u32>();
        let rx2 = rx.clone();
        let a = spawn(move || rx2.recv());
        let b = {
            let rx = rx.clone();
            spawn(move || rx.recv())
        };
        yield_now();
        let thread = thread::spawn(move || {
            tx.send(1).unwrap();
            tx.send(2).unwrap();
        });
        let mut got = [a.join().unwrap().unwrap(), b.join().unwrap().unwrap()];
        got.sort();
        assert_eq!(got, [1, 2]);
        thread.join().unwrap();
    });
}

#[test]
fn no_fd_leak() {
    let _serial = process_lock(); // every test opens fds (a hub's); one counts them
    assert_no_fd_leak(3, || {
        greenhub::run(|| {
            let (tx, rx) = thread_channel::<u8>();
            let thread = thread::spawn(move || tx.send(1).unwrap());
            assert_eq!(rx.recv(), Ok(1));
            thread.join().unwrap();
        });
    });
}
