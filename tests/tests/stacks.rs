//! Stacks: greenhub's own allocator. Sizes outside the rule panic where they are given; a size
//! that is not whole pages is rounded up, and all of it is usable; a stack the OS refuses is a
//! `JoinError` naming what ran out (the address-space limit, or the mapping limit on the
//! `mprotect` fallback), said once and then refused cheaply; finished coroutines give their pages
//! back past a bound; and a forked child's fresh hub never hands out a stack that the inherited
//! hub still has live. Tests that change process-wide limits, force the fallback, or overflow,
//! rerun themselves in a child process.

use std::cell::Cell;
use std::panic;
use std::rc::Rc;

use greenhub::sync::Event;
use greenhub::{JoinHandle, spawn};
use greenhub_tests::{panic_message, process_lock, rerun_test_in_child};

/// Set in a child: the test body to run there.
const CHILD: &str = "GREENHUB_TEST_STACKS_CHILD";

/// Forces the mprotect guards in a child (read once, when its first hub starts).
const FORCE_FALLBACK: &str = "GREENHUB_STACK_GUARDS";

fn in_child() -> bool {
    std::env::var_os(CHILD).is_some()
}

/// Runs the child part and turns its outcome into this test's.
fn run_child(test: &str, var: &str, value: &str) {
    let out = rerun_test_in_child(test, var, value);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "child failed: {}\n{stdout}\n{stderr}", out.status);
    assert!(stdout.contains("1 passed"), "the child ran no test:\n{stdout}\n{stderr}");
}

/// Resident memory of this process, in bytes.
fn vm_rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line[6..].trim().trim_end_matches("kB").trim().parse::<u64>().unwrap() * 1024
}

/// Touches about `bytes` of the calling coroutine's stack (the optimiser cannot drop it).
fn touch_stack(bytes: usize) {
    let mut buf = [0u8; 4096];
    buf.fill(bytes as u8);
    std::hint::black_box(&mut buf);
    if bytes > 4096 {
        touch_stack(bytes - 4096);
    }
    std::hint::black_box(&buf);
}

#[test]
fn stack_size_zero_panics_naming_the_rule() {
    let caught = panic::catch_unwind(|| greenhub::Builder::new().stack_size(0));
    let msg = panic_message(&*caught.unwrap_err());
    assert!(
        msg.contains("Builder::stack_size(0)") && msg.contains("between 1 byte and 1 TiB"),
        "{msg}"
    );
}

#[test]
fn stack_size_usize_max_panics_naming_the_rule_not_inside_corosensei() {
    let caught = panic::catch_unwind(|| greenhub::Builder::new().stack_size(usize::MAX));
    let msg = panic_message(&*caught.unwrap_err());
    assert!(msg.contains("between 1 byte and 1 TiB"), "{msg}");
    assert!(!msg.contains("integer overflow"), "{msg}");
}

#[test]
fn a_stack_the_address_space_limit_refuses_is_a_join_error_naming_rlimit_as() {
    if in_child() {
        let _ = greenhub_tests::limit_address_space(512 << 20); // a few 64 MiB stacks, not forty
        let (ok, refused) = greenhub::Builder::new().stack_size(64 << 20).run(|| {
            let gate = Rc::new(Event::new());
            let handles: Vec<JoinHandle<()>> = (0..40)
                .map(|_| {
                    let gate = gate.clone();
                    spawn(move || gate.wait())
                })
                .collect();
            greenhub::yield_now(); // every one has tried to start (they ran before the root)
            gate.set();
            let mut refused = Vec::new();
            let mut ok = 0;
            for h in handles {
                match h.join() {
                    Ok(()) => ok += 1,
                    Err(e) => refused.push(e.to_string()),
                }
            }
            (ok, refused)
        });
        assert!(ok >= 1, "some stacks fit under the limit");
        assert!(!refused.is_empty(), "the limit refused none of 40 64 MiB stacks");
        for msg in &refused {
            assert!(
                msg.contains("RLIMIT_AS") && msg.contains("refused a coroutine stack"),
                "{msg}"
            );
            assert!(!msg.contains("max_map_count"), "blames the wrong limit: {msg}");
        }
        return;
    }
    run_child(
        "a_stack_the_address_space_limit_refuses_is_a_join_error_naming_rlimit_as",
        CHILD,
        "1",
    );
}

/// Regression: after the OS refused a stack, the hub refused every later one by itself while no
/// coroutine ended, even once the limit was raised: a hub whose coroutines all live on (a
/// server's root and acceptor) never started another coroutine. It asks the OS again 10 ms
/// after its last refusal.
#[test]
fn a_refused_stack_is_asked_for_again_once_the_limit_is_raised() {
    if in_child() {
        let (refused, later) = greenhub::Builder::new().stack_size(512 << 20).run(|| {
            let old = greenhub_tests::limit_address_space(32 << 20); // not one more 512 MiB stack
            let refused = spawn(|| ()).join().map_err(|e| e.to_string());
            greenhub_tests::restore_address_space(old);
            greenhub::sleep(std::time::Duration::from_millis(20)); // past the 10 ms
            (refused, spawn(|| 7).join().map_err(|e| e.to_string()))
        });
        assert!(refused.is_err_and(|msg| msg.contains("RLIMIT_AS")), "not refused at first");
        assert_eq!(later, Ok(7), "still refused after the limit was raised");
        return;
    }
    run_child("a_refused_stack_is_asked_for_again_once_the_limit_is_raised", CHILD, "1");
}

#[test]
fn with_mprotect_guards_the_mapping_limit_refuses_stacks_naming_vm_max_map_count() {
    if std::env::var_os(FORCE_FALLBACK).is_some() {
        assert!(!greenhub::ext::lightweight_stack_guards(), "the fallback was not forced");
        let max = std::fs::read_to_string("/proc/sys/vm/max_map_count").unwrap();
        let max: usize = max.trim().parse().unwrap();
        let n = max / 2 + 1000; // two mappings per stack: more than fit
        let (ok, refused, first) = greenhub::Builder::new().stack_size(16 * 1024).run(|| {
            let gate = Rc::new(Event::new());
            let handles: Vec<JoinHandle<()>> = (0..n)
                .map(|_| {
                    let gate = gate.clone();
                    spawn(move || gate.wait())
                })
                .collect();
            greenhub::yield_now();
            gate.set();
            let (mut ok, mut refused, mut first) = (0, 0, None);
            for h in handles {
                match h.join() {
                    Ok(()) => ok += 1,
                    Err(e) => {
                        refused += 1;
                        first.get_or_insert_with(|| e.to_string());
                    }
                }
            }
            (ok, refused, first)
        });
        assert!(ok > max / 2 - 2000, "only {ok} stacks before the limit");
        assert!(refused > 0, "none refused past the limit");
        let msg = first.unwrap();
        assert!(msg.contains("vm.max_map_count") && msg.contains("MADV_GUARD_INSTALL"), "{msg}");
        return;
    }
    run_child(
        "with_mprotect_guards_the_mapping_limit_refuses_stacks_naming_vm_max_map_count",
        FORCE_FALLBACK,
        "mprotect",
    );
}

#[test]
fn lightweight_guards_keep_many_stacks_in_few_mappings() {
    if !greenhub::ext::lightweight_stack_guards() {
        eprintln!("skipped: this kernel has no MADV_GUARD_INSTALL");
        return;
    }
    let maps = || std::fs::read_to_string("/proc/self/maps").unwrap().lines().count();
    greenhub::Builder::new().stack_size(16 * 1024).run(|| {
        let before = maps();
        let gate = Rc::new(Event::new());
        let handles: Vec<_> = (0..20_000)
            .map(|_| {
                let gate = gate.clone();
                spawn(move || gate.wait())
            })
            .collect();
        greenhub::yield_now(); // all started, all waiting
        let during = maps();
        gate.set();
        handles.into_iter().for_each(|h| h.join().unwrap());
        // Other tests of this binary map things meanwhile; 20k stacks with their own guard
        // mappings would add 40,000.
        assert!(during < before + 1000, "{before} mappings before, {during} with 20k stacks");
    });
}

#[test]
fn finished_coroutines_give_their_stack_pages_back_past_the_warm_bound() {
    if in_child() {
        const N: usize = 6_000;
        greenhub::Builder::new().stack_size(64 * 1024).run(|| {
            let gate = Rc::new(Event::new());
            let handles: Vec<_> = (0..N)
                .map(|_| {
                    let gate = gate.clone();
                    spawn(move || {
                        touch_stack(16 * 1024);
                        gate.wait();
                    })
                })
                .collect();
            greenhub::yield_now();
            let live = vm_rss();
            gate.set();
            handles.into_iter().for_each(|h| h.join().unwrap());
            let after = vm_rss();
            // 6,000 stacks x 16 KiB touched is about 100 MB; at most 1,056 stay warm.
            assert!(after < live / 2, "{live} bytes resident while live, {after} after");
        });
        return;
    }
    run_child("finished_coroutines_give_their_stack_pages_back_past_the_warm_bound", CHILD, "1");
}

#[test]
fn refusals_after_the_first_are_cheap_and_printed_once() {
    if in_child() {
        let _ = greenhub_tests::limit_address_space(256 << 20);
        // The root's 16 MiB stack fits; no 16 MiB stack after the first few does.
        greenhub::Builder::new().stack_size(16 << 20).run(|| {
            let mut messages = std::collections::HashSet::new();
            for _ in 0..100 {
                let gate = Rc::new(Event::new());
                let handles: Vec<_> = (0..1000)
                    .map(|_| {
                        let gate = gate.clone();
                        spawn(move || gate.wait())
                    })
                    .collect();
                greenhub::yield_now();
                gate.set();
                for h in handles {
                    messages.insert(h.join().map_or_else(|e| e.to_string(), |()| "ok".into()));
                }
            }
            messages.remove("ok");
            assert_eq!(messages.len(), 1, "one shared message: {messages:?}");
        });
        return;
    }
    let out =
        rerun_test_in_child("refusals_after_the_first_are_cheap_and_printed_once", CHILD, "1");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{}\n{stderr}", out.status);
    assert_eq!(stderr.matches("refused a coroutine stack").count(), 1, "{stderr}");
}

#[test]
fn a_forked_childs_hub_never_hands_out_a_stack_the_inherited_hub_has_live() {
    let _lock = process_lock();
    greenhub::run(|| {
        // Parked coroutines, each with a canary array on its own stack.
        let gate = Rc::new(Event::new());
        let addresses = Rc::new(Cell::new(Vec::<usize>::new()));
        let parked: Vec<_> = (0..200u64)
            .map(|i| {
                let (gate, addresses) = (gate.clone(), addresses.clone());
                spawn(move || {
                    let canary = std::hint::black_box([i; 64]);
                    let mut all = addresses.take();
                    all.push(canary.as_ptr() as usize);
                    addresses.set(all);
                    gate.wait();
                    assert_eq!(std::hint::black_box(canary), [i; 64]);
                })
            })
            .collect();
        greenhub::yield_now();
        let addresses = addresses.take();
        assert_eq!(addresses.len(), 200);
        // The child scribbles over the stacks of 2,000 coroutines of its fresh hub, then checks
        // the inherited canaries (copies at the same addresses).
        let child = greenhub_ipc::start_process((), move |()| -> Result<(), String> {
            let scribblers: Vec<_> = (0..2000).map(|_| spawn(|| touch_stack(32 * 1024))).collect();
            scribblers.into_iter().for_each(|h| h.join().unwrap());
            for (i, &at) in addresses.iter().enumerate() {
                // SAFETY: `at` points to a live [u64; 64] on an inherited (leaked, never freed)
                // coroutine stack, copied into this process by fork.
                let canary = unsafe { std::ptr::read_volatile(at as *const [u64; 64]) };
                if canary != [i as u64; 64] {
                    return Err(format!("canary {i} at {at:#x} overwritten"));
                }
            }
            Ok(())
        })
        .unwrap();
        let status = child.join().unwrap();
        assert!(status.success(), "child: {status}");
        gate.set();
        parked.into_iter().for_each(|h| h.join().unwrap());
    });
}

/// A size that is not a whole number of pages: 64 KiB and one byte.
const PAGES_AND_A_BYTE: usize = 64 * 1024 + 1;

/// Writes 1 KiB frames down the calling coroutine's stack until the lowest written byte is at
/// least `bytes` below this call's own frame: so the coroutine has used at least `bytes` of
/// stack (more, counting the frames above this call).
fn use_stack(bytes: usize) {
    let marker = 0u8; // on this frame (a `&0u8` would point to a promoted constant)
    let top = std::hint::black_box(&marker) as *const u8 as usize;
    write_frames_down_to(top - bytes);
}

fn write_frames_down_to(lowest: usize) {
    let mut frame = [0u8; 1024];
    frame.fill(0x5a); // the lowest byte of the frame included
    std::hint::black_box(&mut frame);
    if frame.as_ptr() as usize > lowest {
        write_frames_down_to(lowest);
    }
    std::hint::black_box(&frame);
}

#[test]
fn a_coroutine_stack_size_that_is_not_whole_pages_is_rounded_up_and_usable_to_its_last_byte() {
    // Recovering: if the stack were short, this coroutine would end with an overflow error
    // instead of aborting the test binary.
    greenhub::Builder::new().recover_stack_overflow(true).run(|| {
        let h = greenhub::coroutine::Builder::new()
            .stack_size(PAGES_AND_A_BYTE)
            .spawn(|| use_stack(PAGES_AND_A_BYTE));
        if let Err(e) = h.join() {
            panic!("{PAGES_AND_A_BYTE} bytes of stack were not usable: {e}");
        }
    });
}

#[test]
fn a_whole_page_size_one_byte_smaller_overflows_under_the_same_stack_use() {
    // The test above would prove nothing if its stack use fitted in 64 KiB already.
    if in_child() {
        greenhub::Builder::new().recover_stack_overflow(true).run(|| {
            let h = greenhub::coroutine::Builder::new()
                .stack_size(PAGES_AND_A_BYTE - 1)
                .spawn(|| use_stack(PAGES_AND_A_BYTE));
            assert!(h.join().unwrap_err().is_stack_overflow());
        });
        return;
    }
    let out = rerun_test_in_child(
        "a_whole_page_size_one_byte_smaller_overflows_under_the_same_stack_use",
        CHILD,
        "1",
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "child failed: {}\n{stdout}\n{stderr}", out.status);
    assert!(stdout.contains("1 passed"), "the child ran no test:\n{stdout}\n{stderr}");
    assert_eq!(stderr.matches("overflowed its stack (size 65536 bytes)").count(), 1, "{stderr}");
}

/// A probe set `GREENHUB_STACK_GUARDS=MPROTECT` and got the lightweight guards without a word:
/// a value other than `mprotect` is now named on stderr (and the guards are the kernel's).
#[test]
fn an_unknown_stack_guards_setting_is_named_on_stderr() {
    let test = "an_unknown_stack_guards_setting_is_named_on_stderr";
    if std::env::var_os(FORCE_FALLBACK).is_some() {
        greenhub::run(|| spawn(|| ()).join().unwrap());
        return;
    }
    let out = rerun_test_in_child(test, FORCE_FALLBACK, "MPROTECT");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "child failed: {}\n{stderr}", out.status);
    assert!(
        stderr.contains("GREENHUB_STACK_GUARDS=\"MPROTECT\" is not understood"),
        "no word about the setting:\n{stderr}"
    );
}
