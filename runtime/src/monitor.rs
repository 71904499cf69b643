//! The blocking monitor: a watchdog thread that names the coroutine running too long without
//! suspending (gevent's monitor thread, `GEVENT_MONITOR_THREAD_ENABLE`).
//!
//! Guarantee: with [`Builder::monitor`](crate::Builder::monitor) or `GREENHUB_MONITOR` set, when
//! one coroutine runs longer than `max_blocking` without suspending, stderr gets one line naming
//! it and how long it has run so far; when it finally suspends (or ends), one more line with the
//! total. One report per episode, never one per check. Off, it costs nothing on the switch path
//! (the loop has a copy without it); on, one relaxed atomic store per switch. The watchdog thread
//! ends with its hub. Not guaranteed: precision; the watchdog samples every quarter of
//! `max_blocking` (at least 1 ms, at most 250 ms), so a report comes between `max_blocking` and
//! `max_blocking` plus two samples after the episode began, and the totals are accurate to about
//! one sample.
//!
//! # Implementation
//! The hub stores one word per resume into [`Shared::current`]: the coroutine's id and a resume
//! sequence number; zero before it sleeps in poll and when its loop ends. The watchdog reads the
//! word each sample: the same nonzero word for `max_blocking` is one resume that has not ended
//! (the hub's short bookkeeping after a coroutine suspends counts to that coroutine). Which copy
//! of the loop runs, `Hub::turn::<true>` or `::<false>`, is decided once per hub.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use crate::coroutine::CoroutineId;

/// The environment variable that turns the monitor on for every hub: `GREENHUB_MONITOR=100ms`.
pub(crate) const ENV_VAR: &str = "GREENHUB_MONITOR";

/// Bits of [`Shared::current`] that hold the resume sequence number; the coroutine id is above.
const SEQ_BITS: u32 = 24;

/// The shortest `max_blocking` (and sampling period) the watchdog works with.
const MIN_PERIOD: Duration = Duration::from_millis(1);

/// The longest sampling period.
const MAX_PERIOD: Duration = Duration::from_millis(250);

/// The hub's side of the monitor: nothing at all when it is off.
#[derive(Default)]
pub(crate) struct Monitor {
    /// Boxed: off, the hub carries one null pointer.
    on: Option<Box<Watched>>,
}

struct Watched {
    shared: Arc<Shared>,
    /// Resumes so far, for the sequence bits (only the hub's thread touches it).
    seq: std::cell::Cell<u64>,
    watchdog: Option<thread::JoinHandle<()>>,
}

/// What the hub and its watchdog share.
struct Shared {
    /// `id << SEQ_BITS | seq` of the coroutine running now, 0 while the loop has control.
    current: AtomicU64,
    /// The root coroutine's id, to tag it "[root]" as the deadlock report and `ext::dump` do.
    root: AtomicU64,
    stop: AtomicBool,
    /// How reports name each live coroutine (`coroutine #17 "conn 7" (spawned at ...)`), by id:
    /// written when a task enters or leaves the table, read by the watchdog when it reports.
    names: Mutex<HashMap<u64, String>>,
}

/// The hub's task table's handle on the watchdog's names: a task registers its name when it
/// is spawned and takes it out when it ends (only while the monitor is on; nothing on the switch
/// path).
#[derive(Clone)]
pub(crate) struct Names(Arc<Shared>);

impl Names {
    pub(crate) fn add(&self, id: CoroutineId, identity: String) {
        self.0.names.lock().unwrap_or_else(|e| e.into_inner()).insert(id.get(), identity);
    }

    pub(crate) fn remove(&self, id: CoroutineId) {
        self.0.names.lock().unwrap_or_else(|e| e.into_inner()).remove(&id.get());
    }
}

impl Monitor {
    /// The monitor for a new hub: `max_blocking` from the builder, else from `GREENHUB_MONITOR`;
    /// off if neither is set, or if the OS refuses the watchdog thread (said once on stderr).
    pub(crate) fn start(max_blocking: Option<Duration>) -> Monitor {
        let Some(max_blocking) = max_blocking.or_else(from_env) else { return Monitor::default() };
        let max_blocking = max_blocking.max(MIN_PERIOD);
        let shared = Arc::new(Shared {
            current: AtomicU64::new(0),
            root: AtomicU64::new(0),
            stop: AtomicBool::new(false),
            names: Mutex::default(),
        });
        let watchdog = thread::Builder::new().name("greenhub-monitor".into()).spawn({
            let shared = shared.clone();
            move || watch(&shared, max_blocking)
        });
        match watchdog {
            Ok(watchdog) => Monitor {
                on: Some(Box::new(Watched {
                    shared,
                    seq: Default::default(),
                    watchdog: Some(watchdog),
                })),
            },
            Err(e) => {
                crate::stderr::line(format_args!(
                    "greenhub monitor: the OS refused the watchdog thread ({e}); this hub runs \
                     without the blocking monitor"
                ));
                Monitor::default()
            }
        }
    }

    /// Tells the watchdog which coroutine is the root.
    pub(crate) fn set_root(&self, root: CoroutineId) {
        if let Some(on) = &self.on {
            on.shared.root.store(root.get(), Ordering::Relaxed);
        }
    }

    /// The names registry for the task table, if the monitor is on.
    pub(crate) fn names(&self) -> Option<Names> {
        self.on.as_ref().map(|on| Names(on.shared.clone()))
    }

    /// Whether the monitor is on: the loop asks once per hub and runs its monitored copy.
    pub(crate) fn is_on(&self) -> bool {
        self.on.is_some()
    }

    /// The loop is about to resume `id` (called only by the monitored copy of the loop).
    #[inline(always)]
    pub(crate) fn resuming(&self, id: CoroutineId) {
        if let Some(on) = &self.on {
            let seq = on.seq.get().wrapping_add(1);
            on.seq.set(seq);
            let word = id.get() << SEQ_BITS | (seq & ((1 << SEQ_BITS) - 1));
            on.shared.current.store(word, Ordering::Relaxed);
        }
    }

    /// No coroutine runs: the hub is about to sleep in poll, or its loop has ended. (The hub's
    /// own bookkeeping between two resumes counts to the coroutine that ran last: it is short,
    /// and not storing at every suspension halves the monitor's cost.)
    pub(crate) fn idle(&self) {
        if let Some(on) = &self.on {
            on.shared.current.store(0, Ordering::Relaxed);
        }
    }
}

impl Drop for Monitor {
    /// Stops the watchdog and waits for it: no thread outlives its hub. (A hub inherited through
    /// fork is leaked, never dropped: its watchdog does not exist in the child.)
    fn drop(&mut self) {
        self.stop();
    }
}

impl Monitor {
    /// Stops the watchdog, if any, and waits for it (also for a hub that is leaked, not dropped:
    /// `Hub::leak`).
    pub(crate) fn stop(&mut self) {
        let Some(on) = &mut self.on else { return };
        on.shared.stop.store(true, Ordering::Release);
        if let Some(watchdog) = on.watchdog.take() {
            watchdog.thread().unpark();
            let _ = watchdog.join();
        }
    }
}

impl fmt::Debug for Monitor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.on.is_some() { "Monitor(on)" } else { "Monitor(off)" })
    }
}

/// The watchdog thread's loop.
fn watch(shared: &Shared, max_blocking: Duration) {
    let period = (max_blocking / 4).clamp(MIN_PERIOD, MAX_PERIOD);
    let mut episode = Episode::default();
    loop {
        thread::park_timeout(period);
        // Look before stopping: the last resume of the hub may have ended a reported episode.
        episode.sample(shared, max_blocking);
        if shared.stop.load(Ordering::Acquire) {
            return;
        }
    }
}

/// What the watchdog knows about the resume it sees.
#[derive(Default)]
struct Episode {
    /// The word last read; 0: the loop had control.
    word: u64,
    /// When the watchdog first saw `word`.
    since: Option<Instant>,
    /// How the report named the coroutine (kept for the total: by then it may have ended).
    reported: Option<String>,
}

impl Episode {
    fn sample(&mut self, shared: &Shared, max_blocking: Duration) {
        let word = shared.current.load(Ordering::Relaxed);
        let now = Instant::now();
        let since = *self.since.get_or_insert(now);
        if word != self.word {
            if let Some(name) = self.reported.take() {
                let total = whole_ms(now - since);
                crate::stderr::line(format_args!(
                    "greenhub monitor: {name} suspended after running about {total:?} without \
                     suspending"
                ));
            }
            *self = Episode { word, since: Some(now), reported: None };
            return;
        }
        if word != 0 && self.reported.is_none() && now - since >= max_blocking {
            let name = Name::of(word, shared).to_string();
            crate::stderr::line(format_args!(
                "greenhub monitor: {name} has run for {:?} without suspending (max_blocking \
                 {max_blocking:?}); the hub and every other coroutine on its thread are stalled \
                 until it suspends",
                whole_ms(now - since),
            ));
            self.reported = Some(name);
        }
    }
}

/// A coroutine named as the deadlock report names it (id, name, spawn site), the root tagged.
struct Name {
    id: u64,
    identity: Option<String>,
    root: bool,
}

impl Name {
    fn of(word: u64, shared: &Shared) -> Name {
        let id = word >> SEQ_BITS;
        let names = shared.names.lock().unwrap_or_else(|e| e.into_inner());
        let identity = names.get(&id).cloned();
        Name { id, identity, root: id == shared.root.load(Ordering::Relaxed) }
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.identity {
            Some(identity) => f.write_str(identity)?,
            None => write!(f, "coroutine #{}", self.id)?,
        }
        if self.root { f.write_str(" [root]") } else { Ok(()) }
    }
}

fn whole_ms(d: Duration) -> Duration {
    Duration::from_millis(d.as_millis().try_into().unwrap_or(u64::MAX))
}

/// `GREENHUB_MONITOR`, parsed once per process (a bad value is reported once).
fn from_env() -> Option<Duration> {
    static PARSED: OnceLock<Option<Duration>> = OnceLock::new();
    *PARSED.get_or_init(|| {
        let value = std::env::var(ENV_VAR).ok()?;
        match parse_duration(&value) {
            Ok(d) => d,
            Err(why) => {
                crate::stderr::line(format_args!(
                    "greenhub: ignoring {ENV_VAR}={value:?} ({why}); the blocking monitor is off. \
                     Write a duration such as 100ms, 2s or 500us"
                ));
                None
            }
        }
    })
}

/// `"100ms"`, `"2s"`, `"1.5s"`, `"500us"` (or `"µs"`); `""`, `"0"` and `"off"` mean off.
pub(crate) fn parse_duration(text: &str) -> Result<Option<Duration>, &'static str> {
    let text = text.trim();
    if text.is_empty() || text == "0" || text.eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    let split = text.find(|c: char| !(c.is_ascii_digit() || c == '.')).ok_or("no unit")?;
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse().map_err(|_| "not a number")?;
    let seconds = match unit.trim() {
        "s" => number,
        "ms" => number / 1e3,
        "us" | "µs" => number / 1e6,
        _ => return Err("unknown unit: use s, ms or us"),
    };
    let d = Duration::try_from_secs_f64(seconds).map_err(|_| "out of range")?;
    Ok((!d.is_zero()).then_some(d))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_seconds_milliseconds_and_microseconds() {
        assert_eq!(parse_duration("100ms"), Ok(Some(Duration::from_millis(100))));
        assert_eq!(parse_duration(" 2s "), Ok(Some(Duration::from_secs(2))));
        assert_eq!(parse_duration("1.5s"), Ok(Some(Duration::from_millis(1500))));
        assert_eq!(parse_duration("500us"), Ok(Some(Duration::from_micros(500))));
        assert_eq!(parse_duration("250µs"), Ok(Some(Duration::from_micros(250))));
    }

    #[test]
    fn empty_zero_and_off_mean_off() {
        for off in ["", "0", "off", "OFF", "0ms", "0.0s"] {
            assert_eq!(parse_duration(off), Ok(None), "{off:?}");
        }
    }

    #[test]
    fn bad_values_are_errors() {
        for bad in ["100", "fast", "ms", "1.2.3s", "10 minutes", "-5ms", "1e400s", "5h"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn the_word_keeps_the_id_above_the_sequence_bits() {
        let shared = Shared {
            current: AtomicU64::new(0),
            root: AtomicU64::new(1),
            stop: AtomicBool::new(false),
            names: Mutex::default(),
        };
        let word = 17u64 << SEQ_BITS | 5;
        assert_eq!(Name::of(word, &shared).to_string(), "coroutine #17");
        assert_eq!(Name::of(1 << SEQ_BITS, &shared).to_string(), "coroutine #1 [root]");
    }
}
