//! `berth-init`: the machine's PID 1, and — by the name it is called with — `berthctl` (the
//! client of PID 1's control socket) and the `poweroff`,
//! `reboot` and `halt` commands that ask PID 1 to end the machine gracefully. The kernel runs
//! `/sbin/poweroff` itself for some host requests (Hyper-V's "shut down", `orderly_poweroff`);
//! the image links these names to `/init`.

#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

use berth_init::pid1;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// The signal PID 1 reads as the request `name` stands for.
fn request_signal(name: &str) -> Option<Signal> {
    match name {
        "poweroff" => Some(Signal::SIGUSR2),
        "reboot" => Some(Signal::SIGINT),
        "halt" => Some(Signal::SIGUSR1),
        _ => None,
    }
}

fn main() {
    let argv0 = std::env::args().next().unwrap_or_default();
    let name = argv0.rsplit('/').next().unwrap_or_default().to_string();
    if name == "berthctl" {
        let args: Vec<String> = std::env::args().skip(1).collect();
        std::process::exit(pid1::control::client(&args));
    }
    if let Some(signal) = request_signal(&name) {
        // Options (busybox's -f and the like) are ignored: PID 1's stop is bounded by the stop
        // timeouts anyway.
        if let Err(e) = kill(Pid::from_raw(1), signal) {
            eprintln!("{name}: cannot signal PID 1: {e}");
            std::process::exit(1);
        }
        std::process::exit(0);
    }
    if std::process::id() != 1 {
        eprintln!(
            "berth-init: this is the machine's init and must run as PID 1 (boot an image made by `berth build`); as poweroff, reboot or halt it asks PID 1 to end the machine"
        );
        std::process::exit(2);
    }
    pid1::run()
}
