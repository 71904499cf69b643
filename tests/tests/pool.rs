//! `sync::Group` and `sync::Pool` (gevent.pool): membership, join (including members added
//! while joining), join_timeout, cancel_all, detaching on drop, the pool's bound, `map` and
//! `imap_unordered`.

use std::cell::{Cell, RefCell};
use std::panic::catch_unwind;
use std::rc::Rc;
use std::time::Duration;

use greenhub::sync::{Event, Group, Pool};
use greenhub::{spawn, yield_now};
use greenhub_tests::{DropFlag, panic_message};

fn settle(n: usize) {
    for _ in 0..n {
        yield_now();
    }
}

/// Counts how many bodies run at once, and the most ever.
#[derive(Default)]
struct Concurrency {
    now: Cell<usize>,
    peak: Cell<usize>,
}

impl Concurrency {
    fn enter(&self) {
        self.now.set(self.now.get() + 1);
        self.peak.set(self.peak.get().max(self.now.get()));
    }
    fn leave(&self) {
        self.now.set(self.now.get() - 1);
    }
}

/// A `local!` value whose destructor suspends (a buffered writer flushing on drop) and then
/// records that it is done.
struct Linger(Rc<RefCell<Vec<String>>>, &'static str);

impl Drop for Linger {
    fn drop(&mut self) {
        settle(3);
        self.0.borrow_mut().push(format!("{} dropped", self.1));
    }
}

greenhub::local! { static LINGER: RefCell<Option<Linger>> = const { RefCell::new(None) }; }

/// A member body that records its start and leaves a `Linger` in its locals.
fn lingering(log: &Rc<RefCell<Vec<String>>>, name: &'static str) -> impl FnOnce() + 'static {
    let log = Rc::clone(log);
    move || {
        log.borrow_mut().push(format!("{name} started"));
        LINGER.with(|l| *l.borrow_mut() = Some(Linger(log, name)));
    }
}

// ---------------------------------------------------------------------------------------------
// Group

#[test]
fn group_len_counts_members_until_they_end() {
    greenhub::run(|| {
        let group = Group::new();
        assert!(group.is_empty());
        let gate = Rc::new(Event::new());
        let handles: Vec<_> = (0..3)
            .map(|i| {
                let gate = gate.clone();
                group.spawn(move || {
                    gate.wait();
                    i
                })
            })
            .collect();
        assert_eq!(group.len(), 3, "unstarted members count");
        settle(2);
        assert_eq!(group.len(), 3, "suspended members count");
        gate.set();
        let values: Vec<i32> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        assert_eq!(values, [0, 1, 2]);
        assert_eq!(group.len(), 0);
        assert!(group.is_empty());
    });
}

#[test]
fn group_join_waits_for_members_added_while_joining() {
    greenhub::run(|| {
        let group = Rc::new(Group::new());
        let log = Rc::new(RefCell::new(Vec::new()));
        let (g, l) = (group.clone(), log.clone());
        group.spawn(move || {
            yield_now();
            l.borrow_mut().push("first");
            let l2 = l.clone();
            g.spawn(move || {
                greenhub::sleep(Duration::from_millis(2));
                l2.borrow_mut().push("added");
            });
        });
        group.join();
        assert_eq!(*log.borrow(), ["first", "added"]);
        assert!(group.is_empty());
    });
}

#[test]
fn group_join_returns_at_once_when_empty() {
    greenhub::run(|| {
        let group = Group::new();
        group.join();
        assert!(group.join_timeout(Duration::ZERO));
    });
}

#[test]
fn group_join_timeout_reports_whether_all_ended() {
    greenhub::run(|| {
        let group = Group::new();
        let gate = Rc::new(Event::new());
        let g = gate.clone();
        group.spawn(move || g.wait());
        assert!(!group.join_timeout(Duration::from_millis(2)));
        assert_eq!(group.len(), 1);
        gate.set();
        assert!(group.join_timeout(Duration::MAX));
        assert!(group.is_empty());
    });
}

#[test]
fn group_counts_panicked_and_cancelled_members_as_ended() {
    greenhub::run(|| {
        let group = Group::new();
        let panicked = group.spawn(|| -> () { panic!("member failed") });
        let never_started = group.spawn(|| unreachable!("cancelled before it started"));
        never_started.cancel();
        assert_eq!(group.len(), 1, "a member cancelled unstarted leaves at once");
        group.join();
        assert!(panicked.join().unwrap_err().is_panic());
        assert!(never_started.join().unwrap_err().is_cancelled());
    });
}

#[test]
fn group_cancel_all_returns_once_every_member_has_unwound() {
    greenhub::run(|| {
        let group = Group::new();
        let mut flags = Vec::new();
        let mut handles = Vec::new();
        for _ in 0..3 {
            let (guard, flag) = DropFlag::new();
            flags.push(flag);
            handles.push(group.spawn(move || {
                let _guard = guard;
                greenhub::sleep(Duration::from_secs(3600));
            }));
        }
        settle(1);
        let (guard, unstarted_flag) = DropFlag::new();
        let unstarted = group.spawn(move || drop(guard));
        group.cancel_all();
        assert!(flags.iter().all(|f| f.get()), "every member's destructors ran");
        assert!(unstarted_flag.get());
        assert!(group.is_empty());
        for h in handles {
            assert!(h.join().unwrap_err().is_cancelled());
        }
        assert!(unstarted.join().unwrap_err().is_cancelled(), "cancelled before it started");
        group.cancel_all(); // nothing to cancel: returns at once
    });
}

#[test]
fn group_cancel_all_also_cancels_members_spawned_while_unwinding() {
    greenhub::run(|| {
        let group = Rc::new(Group::new());
        let (late_guard, late_flag) = DropFlag::new();
        let late_guard = Rc::new(RefCell::new(Some(late_guard)));
        struct SpawnOnDrop(Rc<Group>, Rc<RefCell<Option<DropFlag>>>);
        impl Drop for SpawnOnDrop {
            fn drop(&mut self) {
                let guard = self.1.borrow_mut().take();
                self.0.spawn(move || {
                    let _guard = guard;
                    greenhub::sleep(Duration::from_secs(3600));
                });
            }
        }
        let on_drop = SpawnOnDrop(group.clone(), late_guard);
        group.spawn(move || {
            let _on_drop = on_drop;
            greenhub::sleep(Duration::from_secs(3600));
        });
        settle(1);
        group.cancel_all();
        assert!(late_flag.get(), "the member spawned during unwinding was cancelled too");
        assert!(group.is_empty());
    });
}

#[test]
fn dropping_a_group_detaches_its_members() {
    greenhub::run(|| {
        let group = Group::new();
        let done = Rc::new(Cell::new(false));
        let d = done.clone();
        let handle = group.spawn(move || {
            settle(2);
            d.set(true);
            5
        });
        drop(group);
        assert_eq!(handle.join().unwrap(), 5);
        assert!(done.get());
    });
}

#[test]
fn group_cancel_all_ends_a_member_that_catches_the_unwind() {
    greenhub::run(|| {
        let group = Rc::new(Group::new());
        group.spawn(|| {
            let _ = catch_unwind(|| greenhub::sleep(Duration::from_secs(3600)));
            // Caught the cancel; every later suspension unwinds again.
            greenhub::sleep(Duration::from_secs(3600));
        });
        settle(1);
        let g = group.clone();
        let canceller = spawn(move || g.cancel_all());
        canceller.join().unwrap();
        assert!(group.is_empty());
    });
}

// ---------------------------------------------------------------------------------------------
// Pool

#[test]
fn pool_new_zero_panics_naming_the_rule() {
    let err = catch_unwind(|| Pool::new(0)).unwrap_err();
    let msg = panic_message(&*err);
    assert!(msg.contains("Pool::new(0)") && msg.contains("at least 1"), "{msg}");
}

#[test]
fn pool_spawn_suspends_while_size_members_run() {
    greenhub::run(|| {
        let pool = Rc::new(Pool::new(2));
        let gate = Rc::new(Event::new());
        let spawn_gated = |pool: &Pool| {
            let gate = gate.clone();
            pool.spawn(move || gate.wait())
        };
        let a = spawn_gated(&pool);
        let b = spawn_gated(&pool);
        assert_eq!((pool.len(), pool.free_count()), (2, 0));
        let spawned_third = Rc::new(Cell::new(false));
        let spawner = spawn({
            let (pool, gate, flag) = (pool.clone(), gate.clone(), spawned_third.clone());
            move || {
                let c = pool.spawn(move || gate.wait());
                flag.set(true);
                c.join().unwrap();
            }
        });
        settle(3);
        assert!(!spawned_third.get(), "spawn waits while the pool is full");
        gate.set();
        a.join().unwrap();
        b.join().unwrap();
        spawner.join().unwrap();
        assert!(spawned_third.get());
        assert_eq!((pool.len(), pool.free_count(), pool.size()), (0, 2, 2));
    });
}

#[test]
fn pool_never_runs_more_than_size_at_once() {
    greenhub::run(|| {
        let pool = Pool::new(3);
        let c = Rc::new(Concurrency::default());
        for i in 0..20u64 {
            let c = c.clone();
            pool.spawn(move || {
                c.enter();
                greenhub::sleep(Duration::from_micros(100 * (i % 4)));
                c.leave();
            });
        }
        pool.join();
        assert_eq!(c.peak.get(), 3);
    });
}

#[test]
fn pool_slots_are_handed_out_in_the_order_asked() {
    greenhub::run(|| {
        let pool = Rc::new(Pool::new(1));
        let gate = Rc::new(Event::new());
        let g = gate.clone();
        pool.spawn(move || g.wait());
        let order = Rc::new(RefCell::new(Vec::new()));
        let spawners: Vec<_> = (0..4)
            .map(|i| {
                let (pool, order) = (pool.clone(), order.clone());
                spawn(move || {
                    let o = order.clone();
                    pool.spawn(move || o.borrow_mut().push(i)).join().unwrap();
                })
            })
            .collect();
        settle(2);
        gate.set();
        spawners.into_iter().for_each(|s| s.join().unwrap());
        assert_eq!(*order.borrow(), [0, 1, 2, 3]);
    });
}

#[test]
fn pool_member_cancelled_before_it_starts_frees_its_slot() {
    greenhub::run(|| {
        let pool = Pool::new(1);
        let h = pool.spawn(|| unreachable!("cancelled before it started"));
        assert_eq!(pool.free_count(), 0);
        h.cancel();
        assert_eq!(pool.free_count(), 1);
        assert_eq!(pool.spawn(|| 3).join().unwrap(), 3);
    });
}

#[test]
fn pool_join_join_timeout_and_cancel_all() {
    greenhub::run(|| {
        let pool = Pool::new(2);
        let (guard, flag) = DropFlag::new();
        pool.spawn(move || {
            let _guard = guard;
            greenhub::sleep(Duration::from_secs(3600));
        });
        pool.spawn(|| ());
        assert!(!pool.join_timeout(Duration::from_millis(2)));
        assert_eq!(pool.len(), 1);
        pool.cancel_all();
        assert!(flag.get());
        assert!(pool.is_empty());
        pool.join();
    });
}

#[test]
fn pool_map_returns_results_in_input_order() {
    greenhub::run(|| {
        let pool = Pool::new(4);
        let c = Rc::new(Concurrency::default());
        let c2 = c.clone();
        let out = pool
            .map(0..50u64, move |i| {
                c2.enter();
                greenhub::sleep(Duration::from_micros(50 * ((i * 7) % 5)));
                c2.leave();
                i * 2
            })
            .unwrap();
        assert_eq!(out, (0..50).map(|i| i * 2).collect::<Vec<_>>());
        assert_eq!(c.peak.get(), 4, "at most size at once, and the pool is used fully");
        assert!(pool.is_empty());
        assert!(pool.map(Vec::<u8>::new(), |x| x).unwrap().is_empty());
    });
}

#[test]
fn pool_map_first_failure_cancels_the_rest_and_is_returned() {
    greenhub::run(|| {
        let pool = Pool::new(3);
        let started = Rc::new(RefCell::new(Vec::new()));
        let unwound = Rc::new(Cell::new(0));
        let (s, u) = (started.clone(), unwound.clone());
        let result = pool.map(0..100u32, move |i| {
            s.borrow_mut().push(i);
            struct Count(Rc<Cell<u32>>);
            impl Drop for Count {
                fn drop(&mut self) {
                    self.0.set(self.0.get() + 1);
                }
            }
            let _count = Count(u.clone());
            if i == 1 {
                panic!("item 1 failed");
            }
            greenhub::sleep(Duration::from_secs(3600));
            i
        });
        let err = result.unwrap_err();
        assert!(err.is_panic());
        assert_eq!(panic_message(&*err.into_panic()), "item 1 failed");
        let started = started.borrow().clone();
        assert!(started.len() <= 4, "items not yet pulled never ran: {started:?}");
        assert_eq!(unwound.get() as usize, started.len(), "the others unwound before map returned");
        assert!(pool.is_empty(), "nothing of the map still runs");
    });
}

#[test]
fn pool_map_pulls_items_lazily() {
    greenhub::run(|| {
        let pool = Pool::new(2);
        let pulled = Rc::new(Cell::new(0));
        let running = Rc::new(Concurrency::default());
        let (p, r) = (pulled.clone(), running.clone());
        let items = (0..10).inspect(move |_| p.set(p.get() + 1));
        let pulled_when_started = Rc::new(RefCell::new(Vec::new()));
        let (p2, log) = (pulled.clone(), pulled_when_started.clone());
        pool.map(items, move |_| {
            r.enter();
            log.borrow_mut().push(p2.get());
            yield_now();
            r.leave();
        })
        .unwrap();
        assert_eq!(pulled.get(), 10);
        // Item k starts when at most k + 2 items have been pulled (two slots).
        for (k, &n) in pulled_when_started.borrow().iter().enumerate() {
            assert!(n <= k + 2, "item {k} started after {n} pulls");
        }
        assert_eq!(running.peak.get(), 2);
    });
}

#[test]
fn pool_imap_unordered_yields_in_completion_order() {
    greenhub::run(|| {
        let pool = Pool::new(3);
        // Each item yields `n` times before it returns: fewer yields, sooner done.
        let order: Vec<usize> = pool
            .imap_unordered([5usize, 1, 3], |n| {
                settle(n);
                n
            })
            .map(Result::unwrap)
            .collect();
        assert_eq!(order, [1, 3, 5]);
    });
}

#[test]
fn pool_imap_unordered_is_lazy_and_bounded() {
    greenhub::run(|| {
        let pool = Pool::new(2);
        let pulled = Rc::new(Cell::new(0));
        let c = Rc::new(Concurrency::default());
        let p = pulled.clone();
        let c2 = c.clone();
        let mut results =
            pool.imap_unordered((0..6).inspect(move |_| p.set(p.get() + 1)), move |i| {
                c2.enter();
                yield_now();
                c2.leave();
                i
            });
        assert_eq!(pulled.get(), 0, "nothing is pulled before the first next()");
        let first = results.next().unwrap().unwrap();
        assert!(first < 2);
        assert!(pulled.get() <= 3, "pulled {} items for one result", pulled.get());
        let mut rest: Vec<i32> = results.map(Result::unwrap).collect();
        rest.push(first);
        rest.sort();
        assert_eq!(rest, [0, 1, 2, 3, 4, 5]);
        assert_eq!(c.peak.get(), 2);
    });
}

#[test]
fn pool_imap_unordered_yields_failures_and_goes_on() {
    greenhub::run(|| {
        let pool = Pool::new(2);
        let results: Vec<_> = pool
            .imap_unordered(0..4, |i| {
                if i == 2 {
                    panic!("item 2");
                }
                i
            })
            .collect();
        assert_eq!(results.len(), 4);
        assert_eq!(results.iter().filter(|r| r.as_ref().is_err_and(|e| e.is_panic())).count(), 1);
        let mut ok: Vec<i32> = results.into_iter().filter_map(Result::ok).collect();
        ok.sort();
        assert_eq!(ok, [0, 1, 3]);
    });
}

#[test]
fn dropping_imap_unordered_early_cancels_the_items_in_flight() {
    greenhub::run(|| {
        let pool = Pool::new(3);
        let pulled = Rc::new(Cell::new(0));
        let unwound = Rc::new(Cell::new(0));
        let p = pulled.clone();
        let u = unwound.clone();
        {
            let mut results =
                pool.imap_unordered((0..100u64).inspect(move |_| p.set(p.get() + 1)), move |i| {
                    struct Count(Rc<Cell<u32>>);
                    impl Drop for Count {
                        fn drop(&mut self) {
                            self.0.set(self.0.get() + 1);
                        }
                    }
                    let _count = Count(u.clone());
                    if i > 0 {
                        greenhub::sleep(Duration::from_secs(3600));
                    }
                    i
                });
            assert_eq!(results.next().unwrap().unwrap(), 0);
        }
        let pulled_at_drop = pulled.get();
        assert!(pulled_at_drop <= 4);
        pool.join(); // the cancelled members unwind promptly
        assert!(pool.is_empty());
        assert_eq!(pulled.get(), pulled_at_drop, "no item is pulled after the drop");
        assert_eq!(unwound.get() as usize, pulled_at_drop, "every started item unwound");
    });
}

#[test]
fn pool_map_while_others_use_the_pool_shares_its_slots() {
    greenhub::run(|| {
        let pool = Rc::new(Pool::new(2));
        let c = Rc::new(Concurrency::default());
        let other = {
            let (pool, c) = (pool.clone(), c.clone());
            spawn(move || {
                pool.map(0..10, move |_| {
                    c.enter();
                    yield_now();
                    c.leave();
                })
                .unwrap()
            })
        };
        let c2 = c.clone();
        let mine = pool
            .map(0..10, move |i| {
                c2.enter();
                yield_now();
                c2.leave();
                i
            })
            .unwrap();
        assert_eq!(mine, (0..10).collect::<Vec<_>>());
        other.join().unwrap();
        assert_eq!(c.peak.get(), 2, "two maps on one pool still run at most size at once");
    });
}

#[test]
fn pool_map_propagates_a_cancel_of_the_caller() {
    greenhub::run(|| {
        let pool = Rc::new(Pool::new(2));
        let p = pool.clone();
        let caller = spawn(move || {
            let _ = p.map(0..10, |_| greenhub::sleep(Duration::from_secs(3600)));
        });
        settle(3);
        caller.cancel();
        assert!(caller.join().unwrap_err().is_cancelled());
        pool.join(); // the map's members were cancelled when its iterator dropped
        assert!(pool.is_empty());
    });
}

/// The members of `map` and `imap_unordered` are named in the reports as spawned where `map` or
/// `imap_unordered` was called, not at a line inside greenhub (`ext::dump` shows it).
#[test]
fn map_members_are_spawned_at_the_callers_line() {
    let own_line = || {
        let me = greenhub::current().to_string();
        let dump = greenhub::ext::dump();
        let line = dump.lines().find(|l| l.starts_with(&format!("coroutine {me} "))).unwrap();
        line.to_string()
    };
    greenhub::run(|| {
        let pool = Pool::new(2);
        let line = line!() + 1;
        let mapped = pool.map([0u8], move |_| own_line()).unwrap();
        let site = format!("(spawned at tests/tests/pool.rs:{line}:");
        assert!(mapped[0].contains(&site), "{} lacks {site}", mapped[0]);
        let line = line!() + 1;
        let unordered: Vec<_> = pool.imap_unordered([0u8], move |_| own_line()).collect();
        let site = format!("(spawned at tests/tests/pool.rs:{line}:");
        assert!(unordered[0].as_ref().unwrap().contains(&site), "{unordered:?} lacks {site}");
    });
}

/// Regression: a member left its group, and freed its pool slot, before its `local!` values
/// were dropped: `join` returned (and the next pool member started) while a destructor of the
/// member was still running.
#[test]
fn a_member_leaves_its_group_and_its_pool_slot_only_once_its_locals_are_dropped() {
    greenhub::run(|| {
        let log = Rc::new(RefCell::new(Vec::new()));
        let group = Group::new();
        let member = group.spawn(lingering(&log, "a"));
        group.join();
        assert_eq!(*log.borrow(), ["a started", "a dropped"], "join returned too early");
        assert!(member.is_finished());

        log.borrow_mut().clear();
        let pool = Pool::new(1);
        pool.spawn(lingering(&log, "b"));
        pool.spawn(lingering(&log, "c"));
        pool.join();
        assert_eq!(*log.borrow(), ["b started", "b dropped", "c started", "c dropped"]);
    });
}

/// Regression: `join` from a member of its own group waited forever instead of panicking as
/// its rustdoc says.
#[test]
fn join_from_a_member_of_the_group_or_pool_panics_naming_the_rule() {
    greenhub::run(|| {
        let group = Rc::new(Group::new());
        let pool = Rc::new(Pool::new(2));
        let (g, p) = (Rc::clone(&group), Rc::clone(&pool));
        let in_group = group.spawn(move || g.join());
        let in_pool = pool.spawn(move || p.join());
        for (handle, what) in [(in_group, "Group::join"), (in_pool, "Pool::join")] {
            let err = handle.join().unwrap_err();
            assert!(err.is_panic(), "{err}");
            let message = panic_message(&*err.into_panic());
            assert!(message.contains(&format!("{what} called by a member")), "{message}");
        }
    });
}
