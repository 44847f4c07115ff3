//! A small deterministic mutation fuzzer that runs under stable `cargo test` (cargo-fuzz needs
//! nightly). Shared by `init/tests/fuzz_inputs.rs` and `image-build/tests/fuzz_inputs.rs`
//! (`#[path = "…"] mod fuzz;`): this file is the only copy of the engine.
//!
//! Each target starts from valid seed inputs and runs mutated copies (seeded xorshift: bit
//! flips, interesting bytes and numbers, byte insertion and deletion, truncation, dictionary
//! tokens spliced in, chunks duplicated or repeated, two inputs crossed) for a bounded time:
//! `BERTH_FUZZ_SECONDS` per target (default 8), `BERTH_FUZZ_SEED` to change the sequence. Inputs
//! the target accepted are kept (up to a bound) and mutated further, a cheap stand-in for
//! coverage feedback: they reach deeper than their seeds' random mutations.
//!
//! Every case is checked for: no panic (a panic fails the test with the input as an escaped byte
//! string, ready to become a regression case, and writes it to `CARGO_TARGET_TMPDIR`), no hang
//! (each case within `BERTH_FUZZ_CASE_SECONDS`, default 2: the loop runs in a thread watched by
//! the test's), no huge allocation (the test binary's global allocator refuses any single
//! allocation over [`ALLOCATION_LIMIT`], printing the input first), and a non-empty message for
//! a rejected input (the target checks where the message must point). `BERTH_FUZZ_VERBOSE=1`
//! prints every rejection message.

#![allow(dead_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::{Cell, RefCell};
use std::io::Write as _;
use std::panic::{self, AssertUnwindSafe};
use std::sync::{mpsc, Arc, Mutex, Once};
use std::time::{Duration, Instant};

/// The largest single allocation a case may make.
pub const ALLOCATION_LIMIT: usize = 256 << 20;

/// The global allocator of a fuzz test binary: [`System`], refusing any allocation over
/// [`ALLOCATION_LIMIT`] (the process then aborts with "memory allocation of N bytes failed",
/// after the input that asked for it is printed).
pub struct LimitedAlloc;

thread_local! {
    /// The input of the case running on this thread, and its target's name (for the report of
    /// a refused allocation, which must not allocate).
    static CURRENT: Cell<(*const u8, usize, *const u8, usize)> =
        const { Cell::new((std::ptr::null(), 0, std::ptr::null(), 0)) };
    /// Panics raised on this thread since the last case started (caught or not).
    static PANICS: Cell<u64> = const { Cell::new(0) };
    /// The first panic's message and location since the last case started.
    static PANIC_TEXT: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Writes to stderr without allocating.
fn raw_stderr(bytes: &[u8]) {
    let mut rest = bytes;
    while !rest.is_empty() {
        // SAFETY: writing a valid buffer to fd 2.
        let n = unsafe { libc::write(2, rest.as_ptr().cast(), rest.len()) };
        if n <= 0 {
            return;
        }
        rest = &rest[n as usize..];
    }
}

fn refuse(size: usize) {
    let mut digits = [0u8; 20];
    let mut n = size;
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b"0123456789"[n % 10];
        n /= 10;
        if n == 0 {
            break;
        }
    }
    raw_stderr(b"\nfuzz: refused an allocation of ");
    raw_stderr(&digits[at..]);
    raw_stderr(b" bytes (limit 256 MiB)");
    let (input, len, name, name_len) = CURRENT.with(Cell::get);
    if !input.is_null() {
        // SAFETY: set by `run_case` to a live buffer for the duration of the case.
        let (input, name) =
            unsafe { (std::slice::from_raw_parts(input, len), std::slice::from_raw_parts(name, name_len)) };
        raw_stderr(b" in fuzz target ");
        raw_stderr(name);
        raw_stderr(b" on input b\"");
        let mut buf = [0u8; 256];
        let mut used = 0;
        for &b in input {
            for e in std::ascii::escape_default(b) {
                buf[used] = e;
                used += 1;
            }
            if used > buf.len() - 8 {
                raw_stderr(&buf[..used]);
                used = 0;
            }
        }
        raw_stderr(&buf[..used]);
        raw_stderr(b"\"");
    }
    raw_stderr(b"\n");
}

// SAFETY: forwards to `System`, only refusing (null) some requests, as an allocator may.
unsafe impl GlobalAlloc for LimitedAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.size() > ALLOCATION_LIMIT {
            refuse(layout.size());
            return std::ptr::null_mut();
        }
        System.alloc(layout)
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if layout.size() > ALLOCATION_LIMIT {
            refuse(layout.size());
            return std::ptr::null_mut();
        }
        System.alloc_zeroed(layout)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size > ALLOCATION_LIMIT {
            refuse(new_size);
            return std::ptr::null_mut();
        }
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static ALLOCATOR: LimitedAlloc = LimitedAlloc;

/// xorshift64* — small, fast, deterministic.
pub struct Rng(u64);

impl Rng {
    /// A generator; a zero seed is replaced (xorshift never leaves zero).
    pub fn new(seed: u64) -> Rng {
        Rng(if seed == 0 { 0x9E37_79B9_7F4A_7C15 } else { seed })
    }

    /// The next 64 random bits.
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number below `n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            usize::try_from(self.next() % n as u64).expect("the remainder is below n, a usize")
        }
    }

    /// True one time in `n`.
    pub fn one_in(&mut self, n: usize) -> bool {
        self.below(n) == 0
    }
}

/// Bytes that often matter to parsers.
const INTERESTING_BYTES: &[u8] = b"\0\x01\x7f\x80\xff\n\r\t \"'\\=[]{}:,.-+/#0129aAzZ\xc3\xe2\xf0";

/// Numbers that often matter to parsers, spliced over a decimal run.
const INTERESTING_NUMBERS: &[&[u8]] = &[
    b"0",
    b"-1",
    b"1",
    b"255",
    b"256",
    b"65535",
    b"65536",
    b"2147483647",
    b"2147483648",
    b"4294967295",
    b"4294967296",
    b"9223372036854775807",
    b"9223372036854775808",
    b"18446744073709551615",
    b"18446744073709551616",
    b"-9223372036854775808",
    b"1e309",
    b"-0",
    b"0.5",
    b"99999999999999999999999999999",
];

/// Returns a mutated copy of `base`: 1 to 4 mutations (sometimes up to 16), at most `max_len`
/// bytes. `other` is another input for crossovers; `dict` holds tokens of the format.
pub fn mutate(rng: &mut Rng, base: &[u8], other: &[u8], dict: &[&[u8]], max_len: usize) -> Vec<u8> {
    let mut data = base.to_vec();
    let rounds = if rng.one_in(8) { 1 + rng.below(16) } else { 1 + rng.below(4) };
    for _ in 0..rounds {
        let len = data.len();
        match rng.below(12) {
            // Flip a bit.
            0 if len > 0 => {
                let i = rng.below(len);
                data[i] ^= 1 << rng.below(8);
            }
            // Set a byte to an interesting value.
            1 if len > 0 => {
                let i = rng.below(len);
                data[i] = INTERESTING_BYTES[rng.below(INTERESTING_BYTES.len())];
            }
            // Insert random or interesting bytes.
            2 => {
                let i = rng.below(len + 1);
                let n = 1 + rng.below(4);
                for k in 0..n {
                    let b = if rng.one_in(2) {
                        rng.next().to_le_bytes()[0] // a random byte: the low 8 bits
                    } else {
                        INTERESTING_BYTES[rng.below(INTERESTING_BYTES.len())]
                    };
                    data.insert(i + k, b);
                }
            }
            // Delete a range.
            3 if len > 0 => {
                let i = rng.below(len);
                let span = if rng.one_in(4) { 256 } else { 8 };
                let n = 1 + rng.below((len - i).min(span));
                data.drain(i..i + n);
            }
            // Truncate.
            4 if len > 0 => data.truncate(rng.below(len)),
            // Insert a dictionary token.
            5 | 6 if !dict.is_empty() => {
                let token = dict[rng.below(dict.len())];
                let i = rng.below(len + 1);
                data.splice(i..i, token.iter().copied());
            }
            // Overwrite with a dictionary token.
            7 if !dict.is_empty() && len > 0 => {
                let token = dict[rng.below(dict.len())];
                let i = rng.below(len);
                let end = (i + token.len()).min(len);
                data.splice(i..end, token.iter().copied());
            }
            // Duplicate a chunk elsewhere, or repeat it in place many times.
            8 if len > 0 => {
                let i = rng.below(len);
                let n = 1 + rng.below((len - i).min(64));
                let chunk = data[i..i + n].to_vec();
                if rng.one_in(4) {
                    let most = if rng.one_in(4) { 512 } else { 16 };
                    let times = 2 + rng.below(most);
                    let repeated: Vec<u8> = chunk.iter().copied().cycle().take(n * times).collect();
                    data.splice(i..i, repeated);
                } else {
                    let at = rng.below(len + 1);
                    data.splice(at..at, chunk);
                }
            }
            // Replace a decimal number with an interesting one.
            9 if len > 0 => {
                let start = rng.below(len);
                if let Some(p) = data[start..].iter().position(u8::is_ascii_digit) {
                    let i = start + p;
                    let end =
                        data[i..].iter().position(|b| !b.is_ascii_digit()).map_or(data.len(), |e| i + e);
                    let number = INTERESTING_NUMBERS[rng.below(INTERESTING_NUMBERS.len())];
                    data.splice(i..end, number.iter().copied());
                }
            }
            // Cross over with the other input.
            10 if !other.is_empty() => {
                let cut = rng.below(len + 1);
                let from = rng.below(other.len());
                data.truncate(cut);
                data.extend_from_slice(&other[from..]);
            }
            // Swap two bytes.
            _ if len > 1 => {
                let (a, b) = (rng.below(len), rng.below(len));
                data.swap(a, b);
            }
            _ => {}
        }
        data.truncate(max_len);
    }
    data
}

/// The input as a Rust byte string literal.
pub fn escape(bytes: &[u8]) -> String {
    let mut s = String::from("b\"");
    for &b in bytes {
        s.extend(std::ascii::escape_default(b).map(char::from));
    }
    s.push('"');
    s
}

/// The seconds each target runs (`BERTH_FUZZ_SECONDS`, default 8).
pub fn budget() -> Duration {
    let secs = std::env::var("BERTH_FUZZ_SECONDS").ok().and_then(|s| s.parse::<f64>().ok()).unwrap_or(8.0);
    Duration::from_secs_f64(secs.max(0.0))
}

fn case_timeout() -> Duration {
    let secs =
        std::env::var("BERTH_FUZZ_CASE_SECONDS").ok().and_then(|s| s.parse::<f64>().ok()).unwrap_or(2.0);
    Duration::from_secs_f64(secs.max(0.01))
}

/// `BERTH_FUZZ_VERBOSE=1`: print every rejection message (to see where inputs stop).
fn verbose() -> bool {
    static VERBOSE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *VERBOSE.get_or_init(|| std::env::var_os("BERTH_FUZZ_VERBOSE").is_some_and(|v| v != "0"))
}

fn seed() -> u64 {
    std::env::var("BERTH_FUZZ_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0x6265_7274_6866_757a)
}

/// One fuzz target.
pub struct Target {
    /// Its name, in reports.
    pub name: &'static str,
    /// Valid inputs to start from.
    pub seeds: Vec<Vec<u8>>,
    /// Tokens of the format.
    pub dict: Vec<&'static [u8]>,
    /// Inputs that once failed: run first, every time.
    pub regressions: Vec<Vec<u8>>,
    /// The largest input generated.
    pub max_len: usize,
    /// Panics the code under test catches itself are allowed (DHCP's decoder wraps a crate
    /// that asserts); they are counted and reported, not failed.
    pub allow_caught_panics: bool,
}

impl Target {
    /// A target with defaults: no regressions, inputs up to 64 KiB, caught panics are failures.
    pub fn new(name: &'static str, seeds: Vec<Vec<u8>>, dict: &[&'static [u8]]) -> Target {
        Target {
            name,
            seeds,
            dict: dict.to_vec(),
            regressions: Vec::new(),
            max_len: 64 << 10,
            allow_caught_panics: false,
        }
    }
}

/// What a run did.
#[derive(Debug, Default)]
pub struct Report {
    /// Cases run, regressions and seeds included.
    pub cases: u64,
    /// Inputs the target accepted.
    pub accepted: u64,
    /// Inputs it rejected (with a message).
    pub rejected: u64,
    /// Panics the code under test caught itself.
    pub caught_panics: u64,
    /// The first of those: message and input.
    pub first_caught: Option<(String, Vec<u8>)>,
    /// How long it ran.
    pub elapsed: Duration,
}

/// What the watching thread sees of the running case.
struct Progress {
    started: Option<Instant>,
    input: Vec<u8>,
    done: bool,
}

fn install_panic_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let default = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            let on_fuzz_thread = std::thread::current().name().is_some_and(|n| n.starts_with("fuzz "));
            if on_fuzz_thread {
                PANICS.with(|c| c.set(c.get() + 1));
                PANIC_TEXT.with(|t| {
                    let mut t = t.borrow_mut();
                    if t.is_none() {
                        let at = info.location().map(|l| format!(" at {l}")).unwrap_or_default();
                        let msg = info
                            .payload()
                            .downcast_ref::<&str>()
                            .map(|s| s.to_string())
                            .or_else(|| info.payload().downcast_ref::<String>().cloned())
                            .unwrap_or_default();
                        *t = Some(format!("{msg}{at}"));
                    }
                });
            } else {
                default(info);
            }
        }));
    });
}

/// A case's failure: what happened, on which input.
struct Failure {
    what: String,
    input: Vec<u8>,
}

fn fail(name: &str, what: &str, input: &[u8]) -> ! {
    let file = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("fuzz-failure-{name}.bin"));
    let saved = match std::fs::write(&file, input) {
        Ok(()) => format!(" (saved as {})", file.display()),
        Err(_) => String::new(),
    };
    panic!(
        "fuzz target {name}: {what}\ninput ({} bytes){saved}:\n{}\n(add it to the target's regressions once fixed)",
        input.len(),
        escape(input)
    );
}

/// Runs one case on this (fuzz) thread.
fn run_case<F>(name: &'static str, target: &mut F, input: &[u8], report: &mut Report, allow_caught: bool)
where
    F: FnMut(&[u8]) -> Result<(), String>,
{
    PANICS.with(|c| c.set(0));
    PANIC_TEXT.with(|t| t.borrow_mut().take());
    CURRENT.with(|c| c.set((input.as_ptr(), input.len(), name.as_ptr(), name.len())));
    let result = panic::catch_unwind(AssertUnwindSafe(|| target(input)));
    CURRENT.with(|c| c.set((std::ptr::null(), 0, std::ptr::null(), 0)));
    report.cases += 1;
    let panic_text = || PANIC_TEXT.with(|t| t.borrow().clone()).unwrap_or_default();
    match result {
        Err(_) => {
            std::panic::panic_any(Failure { what: format!("panic: {}", panic_text()), input: input.to_vec() })
        }
        Ok(Ok(())) => report.accepted += 1,
        Ok(Err(message)) => {
            if message.trim().is_empty() {
                std::panic::panic_any(Failure {
                    what: "rejected with an empty message".to_string(),
                    input: input.to_vec(),
                });
            }
            report.rejected += 1;
            if verbose() {
                let _ = writeln!(std::io::stderr(), "fuzz {name}: rejected: {message}");
            }
        }
    }
    let caught = PANICS.with(Cell::get);
    if caught > 0 {
        if !allow_caught {
            std::panic::panic_any(Failure {
                what: format!("a panic caught inside the code under test: {}", panic_text()),
                input: input.to_vec(),
            });
        }
        report.caught_panics += caught;
        if report.first_caught.is_none() {
            report.first_caught = Some((panic_text(), input.to_vec()));
        }
    }
}

/// Fuzzes `target`, which returns `Err(message)` for an input it rejects (and may panic itself,
/// with an explanation, when a rejection message is not what it must be). Fails the calling
/// test on a panic, a hang or an empty message; prints what it did.
pub fn run<F>(t: Target, target: F) -> Report
where
    F: FnMut(&[u8]) -> Result<(), String> + Send + 'static,
{
    install_panic_hook();
    let name = t.name;
    let budget = budget();
    let timeout = case_timeout();
    let progress = Arc::new(Mutex::new(Progress { started: None, input: Vec::new(), done: false }));
    let (tx, rx) = mpsc::channel::<Result<Report, Failure>>();
    let shared = Arc::clone(&progress);
    let worker = move || {
        let mut target = target;
        let mut report = Report::default();
        let mut rng = Rng::new(seed() ^ name.bytes().fold(0u64, |h, b| h.rotate_left(5) ^ u64::from(b)));
        let mut pool: Vec<Vec<u8>> = t.seeds.clone();
        let seeds_len = pool.len();
        const POOL_MAX: usize = 512;
        let start = Instant::now();
        let fixed: Vec<Vec<u8>> = t.regressions.iter().chain(&t.seeds).cloned().collect();
        let mut i = 0usize;
        let outcome = panic::catch_unwind(AssertUnwindSafe(|| loop {
            let input = if i < fixed.len() {
                fixed[i].clone()
            } else {
                if start.elapsed() >= budget {
                    break;
                }
                let base = &pool[rng.below(pool.len())];
                let other = &pool[rng.below(pool.len())];
                mutate(&mut rng, base, other, &t.dict, t.max_len)
            };
            i += 1;
            {
                let mut p = shared.lock().unwrap();
                p.started = Some(Instant::now());
                p.input.clone_from(&input);
            }
            let accepted_before = report.accepted;
            run_case(name, &mut target, &input, &mut report, t.allow_caught_panics);
            if report.accepted > accepted_before && i > fixed.len() {
                // Keep accepted inputs to mutate further; replace at random once full.
                if pool.len() < POOL_MAX {
                    pool.push(input);
                } else {
                    let slot = seeds_len + rng.below(POOL_MAX - seeds_len);
                    pool[slot] = input;
                }
            }
        }));
        report.elapsed = start.elapsed();
        shared.lock().unwrap().done = true;
        let _ = tx.send(match outcome {
            Ok(()) => Ok(report),
            Err(payload) => match payload.downcast::<Failure>() {
                Ok(f) => Err(*f),
                Err(_) => Err(Failure { what: "the fuzz loop itself panicked".into(), input: Vec::new() }),
            },
        });
    };
    std::thread::Builder::new()
        .name(format!("fuzz {name}"))
        .stack_size(32 << 20)
        .spawn(worker)
        .expect("spawn the fuzz thread");
    let report = loop {
        match rx.recv_timeout(Duration::from_millis(50)) {
            Ok(Ok(report)) => break report,
            Ok(Err(f)) => fail(name, &f.what, &f.input),
            Err(mpsc::RecvTimeoutError::Disconnected) => fail(name, "the fuzz thread died", &[]),
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let p = progress.lock().unwrap();
                if let (false, Some(started)) = (p.done, p.started) {
                    let took = started.elapsed();
                    if took > timeout {
                        let input = p.input.clone();
                        drop(p);
                        fail(name, &format!("a case ran for more than {timeout:?} (hang?)"), &input);
                    }
                }
            }
        }
    };
    let mut line = format!(
        "fuzz {name}: {} cases in {:.1} s ({} accepted, {} rejected)",
        report.cases,
        report.elapsed.as_secs_f64(),
        report.accepted,
        report.rejected
    );
    if let Some((msg, input)) = &report.first_caught {
        line.push_str(&format!(
            "; {} panics caught inside the code under test, first: {msg} on {}",
            report.caught_panics,
            escape(&input[..input.len().min(600)])
        ));
    }
    line.push('\n');
    // Past the test harness's capture: the counts show in a normal `cargo test` run.
    let _ = std::io::stderr().write_all(line.as_bytes());
    report
}
