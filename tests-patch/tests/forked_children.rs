//! Children started with greenhub-ipc keep the patch on their fresh hub.

use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;

#[test]
fn a_forked_child_runs_patched_std_code_cooperatively() {
    let _serial = greenhub_tests::process_lock();
    greenhub::patch::install();
    greenhub::run(|| {
        let child = greenhub_ipc::start_process((), |()| -> Result<(), String> {
            if !greenhub::patch::is_installed() {
                return Err("the patch is not installed in the child".into());
            }
            let inside = Rc::new(Cell::new(0usize));
            let peak = Rc::new(Cell::new(0usize));
            let sleepers: Vec<_> = (0..20)
                .map(|_| {
                    let (inside, peak) = (inside.clone(), peak.clone());
                    greenhub::spawn(move || {
                        inside.set(inside.get() + 1);
                        peak.set(peak.get().max(inside.get()));
                        std::thread::sleep(Duration::from_millis(20));
                        inside.set(inside.get() - 1);
                    })
                })
                .collect();
            sleepers.into_iter().for_each(|s| s.join().unwrap());
            match peak.get() {
                20 => Ok(()),
                n => Err(format!("only {n} of 20 std sleeps overlapped in the child")),
            }
        })
        .unwrap();
        assert!(child.join().unwrap().success());
    });
    assert_eq!(greenhub_tests::zombie_children(), Vec::<u32>::new());
}
