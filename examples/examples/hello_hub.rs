use std::time::{Duration, Instant};
fn main() {
    let v = greenhub::run(|| {
        let hs: Vec<_> = (0..5u64).map(|i| greenhub::spawn(move || { greenhub::sleep(Duration::from_millis(10 * (5 - i))); i })).collect();
        let order: Vec<u64> = hs.into_iter().map(|h| h.join().unwrap()).collect();
        println!("joined {order:?}");
        let (tx, rx) = greenhub::sync::channel();
        greenhub::spawn(move || for i in 0..3 { tx.send(i).unwrap(); greenhub::yield_now(); });
        while let Ok(v) = rx.recv() { println!("got {v}"); }
        let t = greenhub::timeout(Duration::from_millis(20), || greenhub::sleep(Duration::from_secs(5)));
        println!("timeout: {t:?}");
        let h = greenhub::spawn(|| { greenhub::sleep(Duration::from_secs(100)); });
        greenhub::yield_now();
        h.cancel();
        println!("cancel: {:?}", h.join());
        let p = greenhub::spawn(|| -> u8 { panic!("boom") });
        println!("panic: {}", p.join().unwrap_err());
        let b = greenhub::spawn_blocking(|| { std::thread::sleep(Duration::from_millis(20)); 42 });
        println!("blocking: {b}");
        let start = Instant::now();
        let n = 20000;
        let a = greenhub::spawn(move || for _ in 0..n { greenhub::yield_now() });
        for _ in 0..n { greenhub::yield_now() }
        a.join().unwrap();
        println!("switch: {:?}", start.elapsed() / (2 * n));
        7
    });
    println!("root value {v}");
    let r = std::panic::catch_unwind(|| greenhub::run(|| { let (_tx, rx) = greenhub::sync::channel::<u8>(); let _k = greenhub::spawn(|| greenhub::sleep(Duration::from_millis(1))); rx.recv() }));
    println!("deadlock caught: {}", r.is_err());
}
