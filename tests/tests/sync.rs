//! Synchronisation between coroutines: Event, channels (unbounded, bounded, rendezvous),
//! Semaphore and Mutex; FIFO fairness; disconnection; timeouts; and no notification lost to a
//! waiter that is cancelled after it was woken.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::{Duration, Instant};

use greenhub::sync::{
    Event, Mutex, RecvError, RecvTimeoutError, Semaphore, SendError, TryRecvError, bounded, channel,
};
use greenhub::{JoinHandle, spawn, yield_now};

const FOREVER: Duration = Duration::from_secs(3600);

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Yields `n` times: enough turns for every ready coroutine to run up to its next suspension.
fn settle(n: usize) {
    for _ in 0..n {
        yield_now();
    }
}

fn join_all<T>(handles: Vec<JoinHandle<T>>) -> Vec<T> {
    handles.into_iter().map(|h| h.join().unwrap()).collect()
}

// ---------------------------------------------------------------------------------------------
// Event

#[test]
fn event_set_clear_and_is_set() {
    greenhub::run(|| {
        let e = Event::new();
        assert!(!e.is_set());
        e.set();
        assert!(e.is_set());
        e.wait(); // returns at once
        assert!(e.wait_timeout(Duration::ZERO));
        e.clear();
        assert!(!e.is_set());
        assert!(!e.wait_timeout(ms(1)));
    });
}

#[test]
fn event_set_wakes_every_waiter() {
    greenhub::run(|| {
        let e = Rc::new(Event::new());
        let woken = Rc::new(Cell::new(0));
        let waiters: Vec<_> = (0..5)
            .map(|_| {
                let (e, woken) = (e.clone(), woken.clone());
                spawn(move || {
                    e.wait();
                    woken.set(woken.get() + 1);
                })
            })
            .collect();
        settle(3);
        assert_eq!(woken.get(), 0, "a waiter returned before the event was set");
        e.set();
        join_all(waiters);
        assert_eq!(woken.get(), 5);
    });
}

#[test]
fn event_wait_after_clear_suspends_until_the_next_set() {
    greenhub::run(|| {
        let e = Rc::new(Event::new());
        e.set();
        e.clear();
        let waiter = spawn({
            let e = e.clone();
            move || e.wait()
        });
        settle(3);
        assert!(!waiter.is_finished(), "wait returned on a cleared event");
        e.set();
        waiter.join().unwrap();
    });
}

#[test]
fn event_wait_timeout() {
    greenhub::run(|| {
        let e = Rc::new(Event::new());
        let start = Instant::now();
        assert!(!e.wait_timeout(ms(10)));
        assert!(start.elapsed() >= ms(10), "wait_timeout returned early");
        spawn({
            let e = e.clone();
            move || e.set()
        });
        assert!(e.wait_timeout(FOREVER), "set in time by another coroutine");
    });
}

// ---------------------------------------------------------------------------------------------
// Channels

#[test]
fn channel_delivers_in_order_from_several_senders() {
    greenhub::run(|| {
        let (tx, rx) = channel();
        let senders: Vec<_> = (0..3)
            .map(|s| {
                let tx = tx.clone();
                spawn(move || {
                    for i in 0..100 {
                        tx.send((s, i)).unwrap();
                        if i % 10 == 0 {
                            yield_now();
                        }
                    }
                })
            })
            .collect();
        drop(tx);
        let got: Vec<(i32, i32)> = std::iter::from_fn(|| rx.recv().ok()).collect();
        join_all(senders);
        assert_eq!(got.len(), 300);
        for s in 0..3 {
            let mine: Vec<_> = got.iter().filter(|(from, _)| *from == s).map(|p| p.1).collect();
            assert_eq!(mine, (0..100).collect::<Vec<_>>(), "sender {s}'s items out of order");
        }
    });
}

#[test]
fn recv_drains_queued_items_before_reporting_disconnection() {
    greenhub::run(|| {
        let (tx, rx) = channel();
        tx.send(1).unwrap();
        tx.send(2).unwrap();
        drop(tx);
        assert_eq!(rx.recv(), Ok(1));
        assert_eq!(rx.try_recv(), Ok(2));
        assert_eq!(rx.recv(), Err(RecvError));
        assert_eq!(rx.try_recv(), Err(TryRecvError::Disconnected));
        assert_eq!(rx.recv_timeout(FOREVER), Err(RecvTimeoutError::Disconnected));
    });
}

#[test]
fn a_waiting_receiver_sees_the_last_sender_go() {
    greenhub::run(|| {
        let (tx, rx) = channel::<u8>();
        let tx2 = tx.clone();
        let receiver = spawn(move || rx.recv());
        settle(2);
        drop(tx);
        settle(2);
        assert!(!receiver.is_finished(), "one sender is still alive");
        drop(tx2);
        assert_eq!(receiver.join().unwrap(), Err(RecvError));
    });
}

#[test]
fn send_fails_with_the_value_once_every_receiver_is_gone() {
    greenhub::run(|| {
        let (tx, rx) = channel::<String>();
        let rx2 = rx.clone();
        drop(rx);
        assert!(!tx.is_closed(), "a receiver clone is still alive");
        tx.send("kept".into()).unwrap();
        drop(rx2);
        assert!(tx.is_closed());
        let SendError(back) = tx.send("returned".into()).unwrap_err();
        assert_eq!(back, "returned");
    });
}

#[test]
fn a_sender_blocked_on_a_full_channel_fails_when_the_receivers_go() {
    greenhub::run(|| {
        let (tx, rx) = bounded::<u32>(1);
        tx.send(1).unwrap();
        let sender = spawn(move || tx.send(2));
        settle(2);
        assert!(!sender.is_finished(), "send on a full channel returned");
        drop(rx);
        assert_eq!(sender.join().unwrap(), Err(SendError(2)));
    });
}

#[test]
fn try_recv_and_recv_timeout() {
    greenhub::run(|| {
        let (tx, rx) = channel();
        assert_eq!(rx.try_recv(), Err(TryRecvError::Empty));
        let start = Instant::now();
        assert_eq!(rx.recv_timeout(ms(10)), Err(RecvTimeoutError::Timeout));
        assert!(start.elapsed() >= ms(10), "recv_timeout returned early");
        spawn({
            let tx = tx.clone();
            move || {
                yield_now();
                tx.send(5).unwrap();
            }
        });
        assert_eq!(rx.recv_timeout(FOREVER), Ok(5));
        tx.send(6).unwrap();
        assert_eq!(rx.try_recv(), Ok(6));
    });
}

#[test]
fn bounded_send_suspends_while_the_channel_is_full() {
    greenhub::run(|| {
        let (tx, rx) = bounded(2);
        let sent = Rc::new(Cell::new(0));
        let sender = spawn({
            let sent = sent.clone();
            move || {
                for i in 0..5 {
                    tx.send(i).unwrap();
                    sent.set(sent.get() + 1);
                }
            }
        });
        settle(3);
        assert_eq!((sent.get(), rx.len()), (2, 2), "capacity 2 holds two items");
        assert_eq!(rx.recv(), Ok(0));
        settle(3);
        assert_eq!((sent.get(), rx.len()), (3, 2), "one recv makes room for one send");
        let rest: Vec<_> = std::iter::from_fn(|| rx.recv().ok()).collect();
        assert_eq!(rest, [1, 2, 3, 4]);
        sender.join().unwrap();
    });
}

#[test]
fn rendezvous_send_returns_only_after_a_recv() {
    greenhub::run(|| {
        let (tx, rx) = bounded(0);
        let returned = Rc::new(Cell::new(false));
        let sender = spawn({
            let returned = returned.clone();
            move || {
                tx.send("hand-off").unwrap();
                returned.set(true);
            }
        });
        settle(5);
        assert!(!returned.get(), "a rendezvous send returned with no receiver");
        assert_eq!(rx.recv(), Ok("hand-off"));
        sender.join().unwrap();
        assert!(returned.get());
    });
}

#[test]
fn rendezvous_with_the_receiver_waiting_first() {
    greenhub::run(|| {
        let (tx, rx) = bounded(0);
        let receiver = spawn(move || (rx.recv(), rx.recv()));
        settle(2);
        tx.send(1).unwrap();
        tx.send(2).unwrap();
        drop(tx);
        assert_eq!(receiver.join().unwrap(), (Ok(1), Ok(2)));
    });
}

#[test]
fn a_cancelled_rendezvous_send_takes_its_item_back() {
    greenhub::run(|| {
        let (tx, rx) = bounded(0);
        let sender = spawn(move || tx.send("never delivered"));
        settle(2);
        sender.cancel();
        assert!(sender.join().unwrap_err().is_cancelled());
        assert_eq!(rx.try_recv(), Err(TryRecvError::Disconnected));
    });
}

#[test]
fn a_rendezvous_sender_fails_when_the_receiver_goes() {
    greenhub::run(|| {
        let (tx, rx) = bounded(0);
        let sender = spawn(move || tx.send(7));
        settle(2);
        drop(rx);
        assert_eq!(sender.join().unwrap(), Err(SendError(7)));
    });
}

#[test]
fn blocked_senders_are_served_in_fifo_order() {
    for capacity in [0, 1] {
        greenhub::run(|| {
            let (tx, rx) = bounded(capacity);
            if capacity == 1 {
                tx.send(-1).unwrap(); // full
            }
            let senders: Vec<_> = (0..4)
                .map(|i| {
                    let tx = tx.clone();
                    spawn(move || tx.send(i).unwrap())
                })
                .collect();
            drop(tx);
            settle(2); // all four wait, in spawn order
            let got: Vec<i32> = std::iter::from_fn(|| rx.recv().ok()).collect();
            join_all(senders);
            let expected: Vec<i32> =
                if capacity == 1 { vec![-1, 0, 1, 2, 3] } else { vec![0, 1, 2, 3] };
            assert_eq!(got, expected, "capacity {capacity}");
        });
    }
}

#[test]
fn a_sender_cancelled_after_its_wake_passes_the_room_on() {
    greenhub::run(|| {
        let (tx, rx) = bounded(1);
        tx.send(0).unwrap();
        let first = spawn({
            let tx = tx.clone();
            move || tx.send(1)
        });
        let second = spawn(move || tx.send(2));
        settle(2); // both wait for room, `first` in front
        assert_eq!(rx.recv(), Ok(0)); // wakes `first`...
        first.cancel(); // ...which is cancelled before it runs
        assert!(first.join().unwrap_err().is_cancelled());
        second.join().unwrap().expect("the second sender must get the room");
        assert_eq!(rx.recv(), Ok(2));
    });
}

#[test]
fn receivers_are_served_in_fifo_order() {
    greenhub::run(|| {
        let (tx, rx) = channel();
        let receivers: Vec<_> = (0..5)
            .map(|_| {
                let rx = rx.clone();
                spawn(move || rx.recv().unwrap())
            })
            .collect();
        settle(2); // all five wait, in spawn order
        for i in 0..5 {
            tx.send(i).unwrap();
        }
        assert_eq!(join_all(receivers), [0, 1, 2, 3, 4]);
    });
}

#[test]
fn each_item_goes_to_exactly_one_receiver_clone() {
    greenhub::run(|| {
        let (tx, rx) = channel();
        let got = Rc::new(RefCell::new(Vec::new()));
        let receivers: Vec<_> = (0..4)
            .map(|_| {
                let (rx, got) = (rx.clone(), got.clone());
                spawn(move || {
                    while let Ok(v) = rx.recv() {
                        got.borrow_mut().push(v);
                        yield_now();
                    }
                })
            })
            .collect();
        drop(rx);
        for i in 0..200 {
            tx.send(i).unwrap();
            if i % 7 == 0 {
                yield_now();
            }
        }
        drop(tx);
        join_all(receivers);
        let mut got = got.take();
        got.sort_unstable();
        assert_eq!(got, (0..200).collect::<Vec<_>>());
    });
}

// ---------------------------------------------------------------------------------------------
// Semaphore and Mutex

#[test]
fn semaphore_counts_permits() {
    greenhub::run(|| {
        let sem = Semaphore::new(2);
        let a = sem.acquire();
        let b = sem.try_acquire().expect("a second permit");
        assert!(sem.try_acquire().is_none());
        assert_eq!(sem.available_permits(), 0);
        drop(a);
        assert_eq!(sem.available_permits(), 1);
        b.forget();
        assert_eq!(sem.available_permits(), 1, "a forgotten permit is not returned");
    });
}

#[test]
fn semaphore_acquirers_are_served_in_fifo_order() {
    let order = Rc::new(RefCell::new(Vec::new()));
    greenhub::run(|| {
        let sem = Rc::new(Semaphore::new(1));
        let held = sem.acquire();
        let acquirers: Vec<_> = (0..5)
            .map(|i| {
                let (sem, order) = (sem.clone(), order.clone());
                spawn(move || {
                    let _permit = sem.acquire();
                    order.borrow_mut().push(i);
                    yield_now(); // hold it across a suspension
                })
            })
            .collect();
        settle(2);
        drop(held);
        join_all(acquirers);
        assert_eq!(sem.available_permits(), 1);
    });
    assert_eq!(*order.borrow(), [0, 1, 2, 3, 4]);
}

#[test]
fn try_acquire_never_takes_a_permit_handed_to_a_waiter() {
    greenhub::run(|| {
        let sem = Rc::new(Semaphore::new(1));
        let held = sem.acquire();
        let waiter = spawn({
            let sem = sem.clone();
            move || drop(sem.acquire())
        });
        settle(2); // the waiter is queued
        drop(held); // the permit is the waiter's now, though it has not run yet
        assert!(sem.try_acquire().is_none(), "try_acquire jumped the queue");
        waiter.join().unwrap();
        assert!(sem.try_acquire().is_some());
    });
}

#[test]
fn acquire_never_takes_a_permit_handed_to_a_waiter() {
    let order = Rc::new(RefCell::new(Vec::new()));
    greenhub::run(|| {
        let sem = Rc::new(Semaphore::new(1));
        let held = sem.acquire();
        let first = spawn({
            let (sem, order) = (sem.clone(), order.clone());
            move || {
                let _permit = sem.acquire();
                order.borrow_mut().push("waiter");
            }
        });
        settle(2);
        drop(held);
        // The root asks after the waiter did: it must not get the permit first.
        drop(sem.acquire());
        order.borrow_mut().push("root");
        first.join().unwrap();
    });
    assert_eq!(*order.borrow(), ["waiter", "root"]);
}

#[test]
fn lock_never_takes_a_lock_handed_to_a_waiter() {
    let order = Rc::new(RefCell::new(Vec::new()));
    greenhub::run(|| {
        let m = Rc::new(Mutex::new(()));
        let guard = m.lock();
        let waiter = spawn({
            let (m, order) = (m.clone(), order.clone());
            move || {
                let _held = m.lock();
                order.borrow_mut().push("waiter");
            }
        });
        settle(2);
        drop(guard);
        assert!(m.try_lock().is_none(), "try_lock jumped the queue");
        drop(m.lock());
        order.borrow_mut().push("root");
        waiter.join().unwrap();
    });
    assert_eq!(*order.borrow(), ["waiter", "root"]);
}

#[test]
fn mutex_lockers_are_served_in_fifo_order_and_hold_across_suspension() {
    greenhub::run(|| {
        let log = Rc::new(Mutex::new(Vec::new()));
        let guard = log.lock();
        let lockers: Vec<_> = (0..5)
            .map(|i| {
                let log = log.clone();
                spawn(move || {
                    let mut held = log.lock();
                    held.push(format!("{i} in"));
                    yield_now(); // nobody else gets in meanwhile
                    held.push(format!("{i} out"));
                })
            })
            .collect();
        settle(2);
        assert!(log.try_lock().is_none());
        drop(guard);
        join_all(lockers);
        let expected: Vec<String> =
            (0..5).flat_map(|i| [format!("{i} in"), format!("{i} out")]).collect();
        assert_eq!(*log.lock(), expected);
        drop(log.try_lock().expect("free again"));
        let log = Rc::try_unwrap(log).unwrap();
        assert_eq!(log.into_inner().len(), 10);
    });
}

// ---------------------------------------------------------------------------------------------
// No lost notifications

#[test]
fn a_semaphore_waiter_cancelled_after_its_wake_passes_the_permit_on() {
    greenhub::run(|| {
        let sem = Rc::new(Semaphore::new(1));
        let held = sem.acquire();
        let spawn_acquirer = |sem: &Rc<Semaphore>| {
            let sem = sem.clone();
            spawn(move || drop(sem.acquire()))
        };
        let first = spawn_acquirer(&sem);
        let second = spawn_acquirer(&sem);
        settle(2); // both wait, `first` in front
        drop(held); // wakes `first`...
        first.cancel(); // ...which is cancelled before it runs
        assert!(first.join().unwrap_err().is_cancelled());
        second.join().expect("the second waiter must get the permit");
        assert_eq!(sem.available_permits(), 1);
    });
}

#[test]
fn a_receiver_cancelled_after_its_wake_passes_the_item_on() {
    greenhub::run(|| {
        let (tx, rx) = channel();
        let first = spawn({
            let rx = rx.clone();
            move || rx.recv()
        });
        let second = spawn(move || rx.recv());
        settle(2);
        tx.send("only one").unwrap(); // wakes `first`...
        first.cancel(); // ...which is cancelled before it runs
        assert!(first.join().unwrap_err().is_cancelled());
        assert_eq!(second.join().unwrap(), Ok("only one"));
    });
}

#[test]
fn a_mutex_locker_cancelled_after_its_wake_passes_the_lock_on() {
    greenhub::run(|| {
        let m = Rc::new(Mutex::new(0));
        let guard = m.lock();
        let lockers: Vec<_> = (1..=2)
            .map(|i| {
                let m = m.clone();
                spawn(move || *m.lock() += i)
            })
            .collect();
        settle(2);
        drop(guard);
        lockers[0].cancel();
        let mut lockers = lockers.into_iter();
        assert!(lockers.next().unwrap().join().unwrap_err().is_cancelled());
        lockers.next().unwrap().join().unwrap();
        assert_eq!(*m.lock(), 2);
    });
}

#[test]
fn regression_rendezvous_send_after_a_timed_out_send_completes() {
    // A rendezvous send that timed out took its item back but left the sequence counter one
    // ahead, so every later send waited for a count that was never reached.
    greenhub::run(|| {
        let (tx, rx) = bounded::<u32>(0);
        let first = greenhub::timeout(Duration::from_millis(10), || tx.send(1));
        assert!(first.is_err(), "nobody receives yet: the first send times out");
        let receiver = greenhub::spawn(move || rx.recv());
        let second = greenhub::timeout(Duration::from_secs(10), || tx.send(2));
        assert_eq!(second, Ok(Ok(())), "the second send returns once the receiver has its item");
        assert_eq!(receiver.join().unwrap(), Ok(2));
    });
}

// ---------------------------------------------------------------------------------------------
// try_send, send_timeout, acquire_owned

use greenhub::sync::{SendTimeoutError, TrySendError};

#[test]
fn try_send_on_bounded_is_full_at_capacity_and_gives_the_value_back() {
    greenhub::run(|| {
        let (tx, rx) = bounded(2);
        assert_eq!(tx.try_send(1), Ok(()));
        assert_eq!(tx.try_send(2), Ok(()));
        assert_eq!(tx.try_send(3), Err(TrySendError::Full(3)));
        assert_eq!(rx.recv(), Ok(1));
        assert_eq!(tx.try_send(4), Ok(()));
        assert_eq!((rx.recv(), rx.recv()), (Ok(2), Ok(4)));
        drop(rx);
        assert_eq!(tx.try_send(5), Err(TrySendError::Disconnected(5)));
    });
}

#[test]
fn try_send_on_unbounded_never_full() {
    let (tx, rx) = channel();
    for i in 0..1000 {
        tx.try_send(i).unwrap();
    }
    assert_eq!(rx.len(), 1000);
}

#[test]
fn try_send_on_rendezvous_needs_a_waiting_receiver() {
    greenhub::run(|| {
        let (tx, rx) = bounded::<u32>(0);
        assert_eq!(tx.try_send(1), Err(TrySendError::Full(1)), "nobody waits");
        let rx2 = rx.clone();
        let receiver = spawn(move || rx2.recv());
        settle(2); // the receiver waits in recv
        assert_eq!(tx.try_send(2), Ok(()));
        assert_eq!(tx.try_send(3), Err(TrySendError::Full(3)), "one receiver, one item");
        assert_eq!(receiver.join().unwrap(), Ok(2));
        assert!(rx.is_empty());
    });
}

#[test]
fn try_send_errors_display_and_are_errors() {
    let full: Box<dyn std::error::Error> = Box::new(TrySendError::Full(1u8));
    assert_eq!(full.to_string(), "sending on a full channel");
    let gone = TrySendError::Disconnected(1u8);
    assert!(gone.to_string().contains("closed channel"));
    assert_eq!(format!("{gone:?}"), "Disconnected(..)");
    assert_eq!(gone.into_inner(), 1);
    let timeout: Box<dyn std::error::Error> = Box::new(SendTimeoutError::Timeout(1u8));
    assert_eq!(timeout.to_string(), "timed out sending on a channel");
    assert_eq!(format!("{:?}", SendTimeoutError::Disconnected(2u8)), "Disconnected(..)");
    assert_eq!(SendTimeoutError::Timeout(7u8).into_inner(), 7);
}

#[test]
fn send_timeout_times_out_on_a_full_channel_and_keeps_the_value() {
    greenhub::run(|| {
        let (tx, rx) = bounded(1);
        tx.send(1).unwrap();
        assert_eq!(tx.send_timeout(2, ms(2)), Err(SendTimeoutError::Timeout(2)));
        assert_eq!(rx.try_recv(), Ok(1));
        assert_eq!(rx.try_recv(), Err(TryRecvError::Empty), "the timed-out value never arrived");
        assert_eq!(tx.send_timeout(3, FOREVER), Ok(()));
        // Duration::MAX: no overflow, waits like `send` (a reader frees the slot).
        let reader = spawn(move || (rx.recv(), rx.recv()));
        assert_eq!(tx.send_timeout(4, Duration::MAX), Ok(()));
        assert_eq!(reader.join().unwrap(), (Ok(3), Ok(4)));
    });
}

#[test]
fn send_timeout_succeeds_when_room_frees_in_time() {
    greenhub::run(|| {
        let (tx, rx) = bounded(1);
        tx.send(1).unwrap();
        let reader = spawn(move || {
            yield_now();
            let first = rx.recv();
            (first, rx.recv())
        });
        assert_eq!(tx.send_timeout(2, FOREVER), Ok(()));
        drop(tx);
        assert_eq!(reader.join().unwrap(), (Ok(1), Ok(2)));
    });
}

#[test]
fn send_timeout_on_rendezvous_takes_the_value_back_when_nobody_receives() {
    greenhub::run(|| {
        let (tx, rx) = bounded::<u32>(0);
        assert_eq!(tx.send_timeout(1, ms(2)), Err(SendTimeoutError::Timeout(1)));
        assert_eq!(rx.try_recv(), Err(TryRecvError::Empty), "taken back: nobody receives it");
        let receiver = spawn(move || rx.recv());
        assert_eq!(tx.send_timeout(2, FOREVER), Ok(()));
        assert_eq!(receiver.join().unwrap(), Ok(2));
    });
}

#[test]
fn send_timeout_reports_disconnected() {
    greenhub::run(|| {
        let (tx, rx) = bounded::<u32>(1);
        tx.send(0).unwrap();
        let dropper = spawn(move || drop(rx));
        assert_eq!(tx.send_timeout(1, FOREVER), Err(SendTimeoutError::Disconnected(1)));
        dropper.join().unwrap();
        let (tx, rx) = bounded::<u32>(0);
        let dropper = spawn(move || drop(rx));
        assert_eq!(tx.send_timeout(2, FOREVER), Err(SendTimeoutError::Disconnected(2)));
        dropper.join().unwrap();
        let (tx, rx) = channel::<u32>();
        drop(rx);
        assert_eq!(tx.send_timeout(3, ms(1)), Err(SendTimeoutError::Disconnected(3)));
    });
}

#[test]
fn acquire_owned_permit_moves_into_a_spawned_coroutine() {
    greenhub::run(|| {
        let sem = Rc::new(Semaphore::new(2));
        let running = Rc::new(Cell::new(0));
        let peak = Rc::new(Cell::new(0));
        let mut workers = Vec::new();
        for _ in 0..6 {
            let permit = sem.acquire_owned();
            let (running, peak) = (running.clone(), peak.clone());
            workers.push(spawn(move || {
                let _permit = permit;
                running.set(running.get() + 1);
                peak.set(peak.get().max(running.get()));
                settle(3);
                running.set(running.get() - 1);
            }));
        }
        join_all(workers);
        assert_eq!(peak.get(), 2);
        assert_eq!(sem.available_permits(), 2);
        let permit = sem.try_acquire_owned().expect("a permit is free");
        assert!(Rc::ptr_eq(permit.semaphore(), &sem));
        assert_eq!(sem.available_permits(), 1);
        permit.forget();
        assert_eq!(sem.available_permits(), 1, "a forgotten permit is never returned");
        let _last = sem.try_acquire_owned().unwrap();
        assert!(sem.try_acquire_owned().is_none());
    });
}

#[test]
fn acquire_owned_waiter_cancelled_passes_the_permit_on() {
    greenhub::run(|| {
        let sem = Rc::new(Semaphore::new(1));
        let held = sem.acquire_owned();
        let first = spawn({
            let sem = sem.clone();
            move || drop(sem.acquire_owned())
        });
        let second = spawn({
            let sem = sem.clone();
            move || drop(sem.acquire_owned())
        });
        settle(2);
        drop(held); // wakes `first`...
        first.cancel(); // ...which is cancelled before it runs: `second` gets the permit
        assert!(first.join().unwrap_err().is_cancelled());
        second.join().unwrap();
        assert_eq!(sem.available_permits(), 1);
    });
}

/// Boxes `error` as a `std::error::Error` (which needs `Debug` and `Display`) and gives back
/// its message and its `Debug` form.
fn as_std_error<E: std::error::Error + 'static>(error: E) -> (String, String) {
    let boxed: Box<dyn std::error::Error> = Box::new(error);
    (boxed.to_string(), format!("{boxed:?}"))
}

#[test]
fn channel_errors_are_std_errors_whose_message_says_what_happened() {
    /// A payload without `Debug`: a `SendError` of it is still an error.
    struct Opaque;

    let pair = |message: &str, debug: &str| (message.to_string(), debug.to_string());
    greenhub::run(|| {
        let (tx, rx) = channel::<Opaque>();
        let Err(empty) = rx.try_recv() else { panic!("an item in a fresh channel") };
        assert_eq!(as_std_error(empty), pair("receiving on an empty channel", "Empty"));
        let Err(late) = rx.recv_timeout(ms(1)) else { panic!("an item in a fresh channel") };
        assert_eq!(as_std_error(late), pair("timed out waiting on a channel", "Timeout"));
        drop(rx);
        let Err(closed) = tx.send(Opaque) else { panic!("sent with every receiver gone") };
        let closed_message = "sending on a closed channel (every receiver is gone)";
        assert_eq!(as_std_error(closed), pair(closed_message, "SendError { .. }"));

        let (tx, rx) = channel::<u8>();
        drop(tx);
        let gone = "receiving on an empty channel whose senders are all gone";
        assert_eq!(as_std_error(rx.recv().unwrap_err()), pair(gone, "RecvError"));
        let error = rx.recv_timeout(FOREVER).unwrap_err();
        assert_eq!(error, RecvTimeoutError::Disconnected);
        assert_eq!(as_std_error(error), pair(gone, "Disconnected"));
        let error = rx.try_recv().unwrap_err();
        assert_eq!(error, TryRecvError::Disconnected);
        assert_eq!(as_std_error(error), pair(gone, "Disconnected"));
    });
}

/// Regression (FIFO among waiters): an item a send had promised to the receiver it woke went
/// to whoever ran first: a `try_recv`, a later receiver, or one woken by its own timer (a
/// probe saw the second waiter get the item and the first none, 10 of 10 runs).
#[test]
fn an_item_promised_to_a_woken_receiver_is_left_for_it() {
    greenhub::run(|| {
        for capacity in [None, Some(1), Some(0)] {
            let (tx, rx) = match capacity {
                None => channel::<u32>(),
                Some(n) => bounded(n),
            };
            let (first_rx, other_rx) = (rx.clone(), rx.clone());
            let first = spawn(move || first_rx.recv());
            settle(1); // it waits
            let sender = spawn({
                let tx = tx.clone(); // `tx` stays: with every sender gone, whoever comes takes
                move || tx.send(1)
            });
            settle(1); // the item is in, `first` woken and not yet run
            assert_eq!(other_rx.try_recv(), Err(TryRecvError::Empty), "{capacity:?}");
            let late = other_rx.recv_timeout(Duration::ZERO);
            assert_eq!(late, Err(RecvTimeoutError::Timeout), "{capacity:?}");
            assert_eq!(first.join().unwrap(), Ok(1), "{capacity:?}");
            assert_eq!(sender.join().unwrap(), Ok(()));
        }
    });
}

/// The same for senders: a place freed in a full channel is promised to the sender it woke.
#[test]
fn a_place_promised_to_a_woken_sender_is_left_for_it() {
    greenhub::run(|| {
        let (tx, rx) = bounded::<&str>(1);
        tx.send("queued").unwrap();
        let first_tx = tx.clone();
        let first = spawn(move || first_tx.send("first"));
        settle(1); // it waits for room
        assert_eq!(rx.try_recv(), Ok("queued")); // frees the place, wakes `first`
        assert_eq!(tx.try_send("thief"), Err(TrySendError::Full("thief")));
        assert_eq!(first.join().unwrap(), Ok(()));
        assert_eq!(rx.try_recv(), Ok("first"));
    });
}
