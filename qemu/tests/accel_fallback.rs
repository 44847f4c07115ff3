//! A guest that shows no progress under an accelerator on probation is started again under TCG
//! within a bounded time, with a message saying why, and the verdict is kept: the next VM with
//! `Accel::Auto` uses TCG at once.
//!
//! The guest is a firmware whose reset vector spins (`jmp $`): it never prints anything, like
//! a Linux guest that hangs under a KVM that only pretends to work. Where KVM passes its probes
//! (the hosts this guards against) the candidate is KVM itself; elsewhere it is TCG, which runs
//! the same fallback code.

use std::time::{Duration, Instant};

use berth_qemu::{Accel, HostKey, Verdict, VerdictCache, Vm, VmConfig};

#[test]
fn a_guest_without_progress_is_restarted_under_tcg_and_the_verdict_is_reused() {
    // SAFETY-free: this binary has one test, so nothing else reads the environment meanwhile.
    std::env::remove_var("BERTH_ACCEL");
    let dir = tempfile::tempdir().unwrap();
    let bios = dir.path().join("spin.bin");
    let mut firmware = vec![0xf4u8; 0x10000];
    firmware[0xfff0..0xfff2].copy_from_slice(&[0xeb, 0xfe]); // jmp $
    std::fs::write(&bios, &firmware).unwrap();
    let verdicts = VerdictCache::in_dir(&dir.path().join("cache"));
    let cfg = VmConfig {
        memory_mib: 32,
        extra_args: vec!["-bios".into(), bios.display().to_string()],
        progress_deadline: Duration::from_secs(3),
        verdicts: verdicts.clone(),
        ..VmConfig::default()
    };
    let candidate = match berth_qemu::probe_kvm() {
        Ok(()) => Accel::Kvm,
        Err(why) => {
            eprintln!("KVM does not pass its probes here ({why}): trying TCG on probation instead");
            Accel::Tcg
        }
    };

    let started = Instant::now();
    let mut vm = Vm::start_on_probation(cfg.clone(), candidate).expect("the VM starts");
    let took = started.elapsed();
    eprintln!("candidate {candidate:?}: {:?} after {took:?}: {}", vm.accel(), vm.accel_reason());
    assert_eq!(vm.accel(), Accel::Tcg);
    assert!(
        vm.accel_reason().contains(&format!("a guest under {} made no progress in 3 s", candidate.name())),
        "{}",
        vm.accel_reason()
    );
    assert!(took >= Duration::from_secs(3) && took < Duration::from_secs(20), "the fallback took {took:?}");
    assert!(vm.try_wait().unwrap().is_none(), "the TCG VM runs");
    match verdicts.load(&HostKey::current()) {
        Some(Verdict { kvm: false, reason }) => assert!(reason.contains("made no progress"), "{reason}"),
        other => panic!("no TCG verdict was recorded: {other:?}"),
    }
    vm.kill();

    let started = Instant::now();
    let mut next = Vm::start(VmConfig { accel: Accel::Auto, ..cfg }).expect("the next VM starts");
    assert_eq!(next.accel(), Accel::Tcg);
    assert!(next.accel_reason().starts_with("verdict for this host: "), "{}", next.accel_reason());
    assert!(started.elapsed() < Duration::from_secs(3), "the verdict is reused, not judged again");
    next.kill();
}
