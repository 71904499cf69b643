//! `select!`: exactly one arm takes effect (nothing taken or sent by the others, a send arm's
//! value evaluated only when chosen), disconnected arms are ready with their `Err`, no arm
//! starves, rendezvous pairings in every combination, and cancel/timeout unwind a selecting
//! coroutine with nothing lost.

use std::cell::Cell;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::rc::Rc;
use std::time::Duration;

use greenhub::sync::{
    Receiver, RecvError, SendError, TryRecvError, bounded, channel, thread_channel,
};
use greenhub::{spawn, yield_now};
use greenhub_tests::panic_message;

const FOREVER: Duration = Duration::from_secs(3600);

fn settle(n: usize) {
    for _ in 0..n {
        yield_now();
    }
}

#[test]
fn recv_arm_takes_from_the_ready_channel_only() {
    greenhub::run(|| {
        let (tx_a, rx_a) = channel::<u32>();
        let (tx_b, rx_b) = channel::<u32>();
        tx_b.send(2).unwrap();
        let got = greenhub::select! {
            recv(rx_a) -> m => ("a", m),
            recv(rx_b) -> m => ("b", m),
        };
        assert_eq!(got, ("b", Ok(2)));
        assert!(rx_a.is_empty() && rx_b.is_empty());
        drop(tx_a);
    });
}

#[test]
fn block_arms_may_be_followed_by_a_comma_as_the_contract_writes_them() {
    greenhub::run(|| {
        let (tx, rx) = channel::<u32>();
        let (out_tx, out_rx) = bounded::<u32>(1);
        tx.send(1).unwrap();
        let got = greenhub::select! {
            recv(rx) -> msg => { msg.unwrap() },
            send(out_tx, 9) -> _res => { 0 },
            default => { 100 },
        };
        assert!(got == 1 || (got == 0 && out_rx.try_recv() == Ok(9)), "{got}");
        let got = greenhub::select! {
            recv(rx) -> _msg => { 1 },
            default(Duration::from_millis(1)) => { 2 },
        };
        assert!(got == 1 || got == 2);
        let mixed = greenhub::select! {
            recv(rx) -> _msg => { "block, comma" },
            default => "expression, comma",
        };
        assert_eq!(mixed, "expression, comma");
    });
}

#[test]
fn exactly_one_of_several_ready_arms_takes_effect() {
    greenhub::run(|| {
        let (tx_a, rx_a) = channel::<u32>();
        let (tx_b, rx_b) = channel::<u32>();
        let (tx_c, rx_c) = bounded::<u32>(1);
        tx_a.send(1).unwrap();
        tx_b.send(2).unwrap();
        let chosen = greenhub::select! {
            recv(rx_a) -> m => { assert_eq!(m, Ok(1)); 'a' }
            recv(rx_b) -> m => { assert_eq!(m, Ok(2)); 'b' }
            send(tx_c, 3) -> r => { assert_eq!(r, Ok(())); 'c' }
        };
        // The chosen arm took (or sent) one item; the others touched nothing.
        match chosen {
            'a' => assert_eq!((rx_b.len(), rx_c.len()), (1, 0)),
            'b' => assert_eq!((rx_a.len(), rx_c.len()), (1, 0)),
            _ => assert_eq!((rx_a.len(), rx_b.len(), rx_c.try_recv()), (1, 1, Ok(3))),
        }
    });
}

#[test]
fn no_ready_arm_starves() {
    greenhub::run(|| {
        let (tx_a, rx_a) = channel::<()>();
        let (tx_b, rx_b) = channel::<()>();
        let (mut a, mut b) = (0, 0);
        for _ in 0..400 {
            tx_a.send(()).unwrap();
            tx_b.send(()).unwrap();
            greenhub::select! {
                recv(rx_a) -> _m => a += 1,
                recv(rx_b) -> _m => b += 1,
            }
        }
        // Each is chosen with probability 1/2 per round: a 0 here has probability 2^-399.
        assert!(a > 0 && b > 0, "a chosen {a} times, b {b} times");
        assert_eq!(a + b, 400);
        assert_eq!(rx_a.len() + rx_b.len(), 400, "each round took exactly one item");
    });
}

#[test]
fn send_arm_value_is_evaluated_only_when_chosen() {
    greenhub::run(|| {
        let (tx_full, rx_full) = bounded::<String>(1);
        tx_full.send("old".into()).unwrap();
        let (tx, rx) = channel::<u8>();
        tx.send(9).unwrap();
        let evaluated = Cell::new(false);
        let got = greenhub::select! {
            send(tx_full, { evaluated.set(true); String::from("new") }) -> _r => None,
            recv(rx) -> m => Some(m),
        };
        assert_eq!(got, Some(Ok(9)));
        assert!(!evaluated.get(), "the send arm was not ready: its value was never built");
        assert_eq!(rx_full.try_recv().as_deref(), Ok("old"));
        assert_eq!(rx_full.try_recv(), Err(TryRecvError::Empty));
    });
}

#[test]
fn disconnected_arms_are_ready_with_their_err() {
    greenhub::run(|| {
        let (tx, rx) = channel::<u8>();
        drop(tx);
        let (_keep_tx, idle) = channel::<u8>();
        let got = greenhub::select! {
            recv(idle) -> _m => unreachable!("nothing was sent"),
            recv(rx) -> m => m,
        };
        assert_eq!(got, Err(RecvError));

        let (tx, rx) = bounded::<u8>(0);
        drop(rx);
        let got = greenhub::select! {
            recv(idle) -> _m => unreachable!("nothing was sent"),
            send(tx, 4) -> r => r,
        };
        assert_eq!(got, Err(SendError(4)), "the value comes back");
    });
}

#[test]
fn disconnect_while_selecting_wakes_with_err() {
    greenhub::run(|| {
        let (tx, rx) = channel::<u8>();
        let (_keep, idle) = channel::<u8>();
        let dropper = spawn(move || drop(tx));
        let got = greenhub::select! {
            recv(idle) -> _m => None,
            recv(rx) -> m => Some(m),
        };
        assert_eq!(got, Some(Err(RecvError)));
        dropper.join().unwrap();
    });
}

#[test]
fn blocking_select_wakes_when_an_arm_becomes_ready() {
    greenhub::run(|| {
        let (tx_a, rx_a) = channel::<&str>();
        let (tx_b, rx_b) = channel::<&str>();
        let sender = spawn(move || {
            settle(2);
            tx_b.send("late").unwrap();
            tx_a
        });
        let got = greenhub::select! {
            recv(rx_a) -> m => m,
            recv(rx_b) -> m => m,
        };
        assert_eq!(got, Ok("late"));
        drop(sender.join().unwrap());
    });
}

#[test]
fn default_runs_when_no_arm_is_ready_now() {
    greenhub::run(|| {
        let (tx, rx) = channel::<u8>();
        let got = greenhub::select! {
            recv(rx) -> m => Some(m),
            default => None,
        };
        assert_eq!(got, None);
        tx.send(1).unwrap();
        let got = greenhub::select! {
            recv(rx) -> m => Some(m),
            default => None,
        };
        assert_eq!(got, Some(Ok(1)));
        let only_default = greenhub::select! { default => 5 };
        assert_eq!(only_default, 5);
    });
}

#[test]
fn default_with_timeout_waits_at_most_that_long() {
    greenhub::run(|| {
        let (tx, rx) = channel::<u8>();
        let got = greenhub::select! {
            recv(rx) -> m => Some(m),
            default(Duration::from_millis(2)) => None,
        };
        assert_eq!(got, None);
        let got = greenhub::select! {
            recv(rx) -> m => Some(m),
            default(Duration::ZERO) => None,
        };
        assert_eq!(got, None);
        let sender = spawn(move || {
            yield_now();
            tx.send(8).unwrap();
        });
        let got = greenhub::select! {
            recv(rx) -> m => Some(m),
            default(Duration::MAX) => None,
        };
        assert_eq!(got, Some(Ok(8)), "Duration::MAX waits like no default");
        sender.join().unwrap();
        let timed_out_alone = greenhub::select! { default(Duration::from_millis(1)) => true };
        assert!(timed_out_alone);
    });
}

#[test]
fn bodies_may_break_and_continue_a_loop() {
    greenhub::run(|| {
        let (tx, rx) = channel::<u32>();
        for i in 0..5 {
            tx.send(i).unwrap();
        }
        drop(tx);
        let mut sum = 0;
        loop {
            greenhub::select! {
                recv(rx) -> m => match m {
                    Ok(1) => continue,
                    Ok(v) => sum += v,
                    Err(_) => break,
                },
            }
        }
        assert_eq!(sum, 2 + 3 + 4);
    });
}

#[test]
fn bounded_send_arm_waits_for_room_and_respects_capacity() {
    greenhub::run(|| {
        let (tx, rx) = bounded::<u32>(1);
        tx.send(0).unwrap();
        let (_idle_tx, idle) = channel::<u8>();
        let receiver = spawn(move || {
            settle(2);
            let first = rx.recv();
            settle(2);
            (first, rx.try_recv(), rx.try_recv())
        });
        let r = greenhub::select! {
            send(tx, 1) -> r => r,
            recv(idle) -> _m => unreachable!(),
        };
        assert_eq!(r, Ok(()));
        assert_eq!(receiver.join().unwrap(), (Ok(0), Ok(1), Err(TryRecvError::Empty)));
    });
}

// ---------------------------------------------------------------------------------------------
// Rendezvous

#[test]
fn rendezvous_send_arm_is_not_ready_without_a_waiting_receiver() {
    greenhub::run(|| {
        let (tx, rx) = bounded::<u32>(0);
        let sent = greenhub::select! {
            send(tx, 1) -> _r => true,
            default => false,
        };
        assert!(!sent);
        assert_eq!(rx.try_recv(), Err(TryRecvError::Empty), "nothing was left in the channel");
    });
}

#[test]
fn rendezvous_select_send_pairs_with_a_plain_recv() {
    greenhub::run(|| {
        let (tx, rx) = bounded::<u32>(0);
        let receiver = spawn(move || rx.recv());
        let (_idle_tx, idle) = channel::<u8>();
        let r = greenhub::select! {
            send(tx, 5) -> r => r,
            recv(idle) -> _m => unreachable!(),
        };
        assert_eq!(r, Ok(()));
        assert_eq!(receiver.join().unwrap(), Ok(5));
    });
}

#[test]
fn rendezvous_plain_send_pairs_with_a_select_recv() {
    greenhub::run(|| {
        let (tx, rx) = bounded::<u32>(0);
        let sender = spawn(move || tx.send(6));
        let (_idle_tx, idle) = channel::<u8>();
        let got = greenhub::select! {
            recv(rx) -> m => m,
            recv(idle) -> _m => unreachable!(),
        };
        assert_eq!(got, Ok(6));
        assert_eq!(sender.join().unwrap(), Ok(()), "the plain send returned once taken");
    });
}

fn select_send_vs_select_recv(receiver_first: bool) {
    greenhub::run(|| {
        let (tx, rx) = bounded::<u32>(0);
        let (_idle_tx, idle) = channel::<u8>();
        let (_idle_tx2, idle2) = channel::<u8>();
        let recv_side = move || {
            greenhub::select! {
                recv(rx) -> m => m,
                recv(idle) -> _m => unreachable!(),
            }
        };
        let send_side = move || {
            greenhub::select! {
                send(tx, 7) -> r => r,
                recv(idle2) -> _m => unreachable!(),
            }
        };
        let (got, sent) = if receiver_first {
            let r = spawn(recv_side);
            let s = spawn(send_side);
            (r.join().unwrap(), s.join().unwrap())
        } else {
            let s = spawn(send_side);
            let r = spawn(recv_side);
            (r.join().unwrap(), s.join().unwrap())
        };
        assert_eq!((got, sent), (Ok(7), Ok(())));
    });
}

#[test]
fn rendezvous_select_send_pairs_with_select_recv_receiver_first() {
    select_send_vs_select_recv(true);
}

#[test]
fn rendezvous_select_send_pairs_with_select_recv_sender_first() {
    select_send_vs_select_recv(false);
}

#[test]
fn rendezvous_select_never_pairs_with_itself() {
    greenhub::run(|| {
        let (tx, rx) = bounded::<u32>(0);
        let paired = greenhub::select! {
            send(tx, 1) -> _r => "sent",
            recv(rx) -> _m => "received",
            default(Duration::from_millis(2)) => "none",
        };
        assert_eq!(paired, "none");
        assert_eq!(rx.try_recv(), Err(TryRecvError::Empty));
    });
}

/// Regression: a rendezvous item that a select send handed to a receiver waiting in a select
/// was left in the channel whenever that receiver's select took another arm that was ready
/// too (about half the time): the sender had `Ok(())` and nobody ever received the item.
#[test]
fn a_rendezvous_item_handed_to_a_selecting_receiver_is_the_arm_it_takes() {
    greenhub::run(|| {
        let selecting = |rx: Receiver<u32>, other: Receiver<u32>| {
            spawn(move || {
                greenhub::select! {
                    recv(rx) -> m => ("rendezvous", m.unwrap()),
                    recv(other) -> m => ("other", m.unwrap()),
                }
            })
        };
        for _ in 0..50 {
            let (tx, rx) = bounded::<u32>(0);
            let (other_tx, other_rx) = channel::<u32>();
            let receiver = selecting(rx.clone(), other_rx);
            settle(1); // it waits in its select
            let sent = greenhub::select! { send(tx, 100) -> r => r.is_ok(), default => false };
            assert!(sent, "a receiver waits");
            other_tx.send(200).unwrap(); // the other arm is ready too now
            assert_eq!(receiver.join().unwrap(), ("rendezvous", 100));
            assert_eq!(rx.len(), 0, "nothing is left in the channel");
        }
        // The other way round: a receiver woken through another arm may take that one, so it
        // does not count as waiting for a rendezvous item.
        let (tx, rx) = bounded::<u32>(0);
        let (other_tx, other_rx) = channel::<u32>();
        let receiver = selecting(rx.clone(), other_rx);
        settle(1);
        other_tx.send(200).unwrap();
        let sent = greenhub::select! { send(tx, 100) -> r => r.is_ok(), default => false };
        assert!(!sent, "no receiver is waiting for this item any more");
        assert_eq!(receiver.join().unwrap(), ("other", 200));
        assert_eq!(rx.len(), 0);
    });
}

// ---------------------------------------------------------------------------------------------
// Cancel, timeout, and notifications passed on

#[test]
fn cancelled_selector_takes_nothing_and_passes_its_wake_on() {
    greenhub::run(|| {
        let (tx_a, rx_a) = channel::<u32>();
        let (_tx_b, rx_b) = channel::<u32>();
        let (ra, rb) = (rx_a.clone(), rx_b.clone());
        let selector = spawn(move || {
            greenhub::select! {
                recv(ra) -> m => m,
                recv(rb) -> m => m,
            }
        });
        settle(1);
        let plain = {
            let rx_a = rx_a.clone();
            spawn(move || rx_a.recv())
        };
        settle(1); // queue of A: selector, then plain
        tx_a.send(1).unwrap(); // wakes the selector (first in line)...
        selector.cancel(); // ...which unwinds before it runs
        assert!(selector.join().unwrap_err().is_cancelled());
        assert_eq!(plain.join().unwrap(), Ok(1), "the notification went on to the next waiter");
        assert!(rx_b.is_empty());
    });
}

#[test]
fn a_notification_skips_a_selector_already_woken_by_another_arm() {
    greenhub::run(|| {
        let (tx_a, rx_a) = channel::<u32>();
        let (tx_b, rx_b) = channel::<u32>();
        let (ra, rb) = (rx_a.clone(), rx_b.clone());
        let selector = spawn(move || {
            greenhub::select! {
                recv(ra) -> m => m,
                recv(rb) -> m => m,
            }
        });
        settle(1);
        let on_a = {
            let rx_a = rx_a.clone();
            spawn(move || rx_a.recv())
        };
        let on_b = {
            let rx_b = rx_b.clone();
            spawn(move || rx_b.recv())
        };
        settle(1);
        tx_a.send(10).unwrap(); // wakes the selector through A
        tx_b.send(20).unwrap(); // must not be spent on the selector: goes to `on_b`
        let chose = selector.join().unwrap().unwrap();
        settle(2);
        // The selector took one item; the waiter of the other channel got the other one.
        let (a_done, b_done) = (on_a.is_finished(), on_b.is_finished());
        assert_eq!(rx_a.len() + rx_b.len(), 0, "both items were taken");
        assert!(a_done != b_done, "exactly one plain waiter got an item");
        if chose == 10 {
            assert_eq!(on_b.join().unwrap(), Ok(20));
            drop(tx_a);
            assert_eq!(on_a.join().unwrap(), Err(RecvError));
        } else {
            assert_eq!(on_a.join().unwrap(), Ok(10));
            drop(tx_b);
            assert_eq!(on_b.join().unwrap(), Err(RecvError));
        }
    });
}

#[test]
fn timeout_unwinds_a_selector_and_nothing_is_lost() {
    greenhub::run(|| {
        let (tx, rx) = bounded::<u32>(0);
        let (_idle_tx, idle) = channel::<u8>();
        let elapsed = greenhub::timeout(Duration::from_millis(2), || {
            greenhub::select! {
                recv(rx) -> m => m,
                recv(idle) -> _m => unreachable!(),
            }
        });
        assert!(elapsed.is_err());
        // The rendezvous is untouched: a plain pair still meets.
        let receiver = spawn(move || rx.recv());
        assert_eq!(tx.send(3), Ok(()));
        assert_eq!(receiver.join().unwrap(), Ok(3));
    });
}

#[test]
fn cancelled_select_send_leaves_the_value_unsent() {
    greenhub::run(|| {
        let (tx, rx) = bounded::<u32>(0);
        let (_idle_tx, idle) = channel::<u8>();
        let evaluated = Rc::new(Cell::new(false));
        let e = evaluated.clone();
        let selector = spawn(move || {
            greenhub::select! {
                send(tx, { e.set(true); 1 }) -> r => r,
                recv(idle) -> _m => unreachable!(),
            }
        });
        settle(2);
        selector.cancel();
        assert!(selector.join().unwrap_err().is_cancelled());
        assert!(!evaluated.get());
        assert_eq!(rx.try_recv(), Err(TryRecvError::Disconnected), "nothing was sent");
    });
}

#[test]
fn root_blocked_in_select_with_nothing_to_wake_it_reports_a_deadlock() {
    let (_tx_a, rx_a) = channel::<u8>();
    let (_tx_b, rx_b) = channel::<u8>();
    let err = catch_unwind(AssertUnwindSafe(|| {
        greenhub::run(|| {
            greenhub::select! {
                recv(rx_a) -> _m => (),
                recv(rx_b) -> _m => (),
            }
        })
    }))
    .unwrap_err();
    let msg = panic_message(&*err);
    assert!(msg.contains("would block forever") && msg.contains("select!"), "{msg}");
}

// ---------------------------------------------------------------------------------------------
// ThreadReceiver arms

#[test]
fn select_over_a_thread_receiver_and_a_channel() {
    greenhub::run(|| {
        let (ttx, trx) = thread_channel::<u32>();
        let (_tx, rx) = channel::<u32>();
        let thread = std::thread::spawn(move || ttx.send(42).unwrap());
        let got = greenhub::select! {
            recv(trx) -> m => m,
            recv(rx) -> _m => unreachable!(),
        };
        assert_eq!(got, Ok(42));
        thread.join().unwrap();
        let got = greenhub::select! {
            recv(trx) -> m => m,
            default(FOREVER) => unreachable!(),
        };
        assert_eq!(got, Err(RecvError), "the thread's sender is gone");
    });
}

/// Regression: a rendezvous item taken back (its sender cancelled) left the promise to the
/// receiver it had woken behind, so for a moment promises outnumbered items; a `select!` that
/// then chose its recv arm re-checked the promise as a newcomer at commit, was refused, and
/// panicked "select! chose a recv arm that was not ready".
#[test]
fn a_select_recv_after_a_rendezvous_take_back_commits_what_it_chose() {
    greenhub::run(|| {
        let (tx, rx) = bounded::<u32>(0);
        let (_keep, other) = channel::<u32>();
        let selecting = rx.clone();
        let x = spawn(move || {
            greenhub::select! { recv(selecting) -> m => m.ok(), recv(other) -> _m => None }
        });
        let plain = rx.clone();
        let r = spawn(move || plain.recv().ok());
        yield_now(); // the select, then the plain receiver, wait for an item
        let me = Rc::new(Cell::new(None::<greenhub::JoinHandle<()>>));
        let (handle, first) = (Rc::clone(&me), tx.clone());
        let cancelled_sender = spawn(move || {
            if let Some(h) = handle.take() {
                h.cancel(); // itself: its send's wait unwinds and takes the item back
                handle.set(Some(h));
            }
            let _ = first.send(1);
        });
        me.set(Some(cancelled_sender));
        yield_now(); // it pushed 1 (waking the select) and took it back
        assert_eq!(tx.try_send(2), Ok(()), "a receiver waits");
        let selected = greenhub::timeout(Duration::from_secs(10), || x.join()).expect("it ends");
        drop(tx); // the receiver that did not get 2 then sees the channel closed
        let plain = greenhub::timeout(Duration::from_secs(10), || r.join()).expect("it ends");
        let got = (selected.unwrap(), plain.unwrap());
        assert!(matches!(got, (Some(2), None) | (None, Some(2))), "{got:?}: the item once");
    });
}

/// Regression: on a rendezvous a freed slot woke the first waiting sender, a `select!` send
/// arm that also needs a waiting receiver; it went back to waiting and the notification was
/// gone, so a plain `send` behind it waited forever with the slot empty.
#[test]
fn a_plain_rendezvous_send_behind_a_select_send_arm_gets_the_free_slot() {
    greenhub::run(|| {
        let (tx, rx) = bounded::<u32>(0);
        let first = tx.clone();
        let s0 = spawn(move || first.send(0)); // pushes 0, waits until it is taken
        yield_now();
        let (selecting, (_keep, other)) = (tx.clone(), channel::<u32>());
        let x = spawn(move || {
            greenhub::select! {
                send(selecting, 100) -> r => r.map(|()| "sent"),
                recv(other) -> _m => Ok("other"),
            }
        });
        yield_now();
        let plain = tx.clone();
        let p = spawn(move || plain.send(1)); // the slot is full: it waits for room
        yield_now();
        drop(tx);
        let got = greenhub::timeout(Duration::from_secs(10), || {
            let mut got = Vec::new();
            while got.len() < 2 {
                match rx.try_recv() {
                    Ok(v) => got.push(v),
                    Err(_) => greenhub::sleep(Duration::from_millis(1)), // a polling consumer
                }
            }
            got
        });
        assert_eq!(got, Ok(vec![0, 1]), "the plain sender got the slot");
        assert_eq!(s0.join().unwrap(), Ok(()));
        assert_eq!(p.join().unwrap(), Ok(()));
        x.cancel();
        assert!(x.join().unwrap_err().is_cancelled());
    });
}
