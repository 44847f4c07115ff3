//! `berth-init`: the machine's PID 1.

mod pid1;

fn main() {
    if std::process::id() != 1 {
        eprintln!("berth-init: this is the machine's init and must run as PID 1 (boot an image made by `berth build`)");
        std::process::exit(2);
    }
    pid1::run()
}
