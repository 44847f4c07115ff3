//! `berth-updater`: fills the inactive system slot from the registry an appliance follows.
//! PID 1 runs it as a child (never in PID 1: it talks HTTP and writes hundreds of MB) and
//! reads its standard output: event lines (`@berth ms=0 event=update.available …`) that PID 1
//! passes on with its own clock, and plain lines it logs.
//!
//! ```text
//! berth-updater --source REG/REPO:TAG [--insecure] --slot a --disk vda2 --esp /berth/esp [--check]
//! berth-updater --bundle - --staging DIR --slot a --disk vda2 --esp /berth/esp
//! ```
//!
//! The second reads the bundle's OCI layout as a tar stream on standard input (`berthctl
//! update apply -`: PID 1 hands the client's connection over as standard input).
//!
//! Steps: the manifest by tag → its config → its signature, when the machine trusts a key
//! (`signature`) → judged against the running slot, the slot
//! installed and waiting, and the updates rolled back before (`plan::judge`) →
//! `update.available` (`--check` stops here) → the index and the UKI, each checked against
//! its digest, the UKI's root hash against the bundle's; the room on the ESP and in the slot →
//! nothing written before this point → the inactive slot's boot entry removed → its
//! partition filled (pieces the running slot has are copied from it, the rest fetched) →
//! `update.downloaded` → the hash tree computed from what was written, checked against the root
//! hash, written → the boot entry installed, being tried → `update.installed`.
//!
//! Exit status: 0 installed, 2 nothing to install (up to date, waiting, rolled back before, or
//! only checked), 1 failed (`update.failed` says why).

mod bundle;
mod plan;
mod registry;
mod signature;
mod slot;

use berth_init::esp;

use std::path::PathBuf;
use std::process::ExitCode;

use berth_events::Event;
use berth_schema::config::UpdateSource;
use berth_schema::slots::Slot;
use berth_schema::system_partition::Index;
use berth_schema::update::Manifest;
use berth_schema::verity::VeritySpec;
use registry::Source;

/// Where the update comes from.
enum From {
    /// The followed tag (`--source`, `--insecure`).
    Registry(UpdateSource, bool),
    /// A bundle's layout as a tar stream on standard input (`--bundle -`), unpacked in this
    /// directory (`--staging`).
    Stdin(PathBuf),
}

/// What PID 1 tells the updater.
struct Args {
    from: From,
    /// The running slot.
    slot: Slot,
    /// The running slot's partition (`vda2`).
    disk: String,
    /// Where the ESP is mounted.
    esp: PathBuf,
    /// Report whether there is an update, install nothing.
    check: bool,
}

fn parse_args(args: &[String]) -> Result<Args, String> {
    let mut source = None;
    let (mut insecure, mut check, mut stdin) = (false, false, false);
    let mut staging = None;
    let (mut slot, mut disk, mut esp) = (None, None, None);
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = || it.next().cloned().ok_or_else(|| format!("{a} needs a value"));
        match a.as_str() {
            "--source" => source = Some(UpdateSource::parse(&value()?)?),
            "--insecure" => insecure = true,
            "--bundle" if value()? == "-" => stdin = true,
            "--bundle" => return Err("--bundle takes `-` (standard input)".into()),
            "--staging" => staging = Some(PathBuf::from(value()?)),
            "--check" => check = true,
            "--slot" => {
                slot = Some(match value()?.as_str() {
                    "a" => Slot::A,
                    "b" => Slot::B,
                    other => return Err(format!("--slot {other}: a or b")),
                })
            }
            "--disk" => disk = Some(value()?),
            "--esp" => esp = Some(PathBuf::from(value()?)),
            other => return Err(format!("unknown argument {other}")),
        }
    }
    let from = match (source, stdin) {
        (_, true) => From::Stdin(staging.ok_or("--bundle - needs --staging DIR")?),
        (Some(source), false) => From::Registry(source, insecure),
        (None, false) => return Err("--source or --bundle - is needed".into()),
    };
    Ok(Args {
        from,
        slot: slot.ok_or("--slot is needed")?,
        disk: disk.ok_or("--disk is needed")?,
        esp: esp.ok_or("--esp is needed")?,
        check,
    })
}

/// The public key this machine trusts updates by, when its image was signed.
fn trusted_key_path() -> String {
    format!("{}/{}", berth_schema::plan::TOOLS_DIR, berth_schema::update::TRUSTED_KEY)
}

fn emit(event: Event) {
    println!("{event}");
}

/// How a run ended well.
enum Outcome {
    Installed,
    Nothing,
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = parse_args(&args).and_then(|a| run(&a));
    match result {
        Ok(Outcome::Installed) => ExitCode::SUCCESS,
        Ok(Outcome::Nothing) => ExitCode::from(2),
        Err(e) => {
            emit(Event::new(0, "update.failed").with("error", &e));
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> Result<Outcome, String> {
    let cmdline = std::fs::read_to_string("/proc/cmdline").map_err(|e| format!("/proc/cmdline: {e}"))?;
    let running: VeritySpec =
        VeritySpec::from_cmdline(&cmdline).ok_or("this boot is not from a system slot")??;
    let esp = esp::Esp::at(&args.esp);
    let other = args.slot.other();
    let waiting = match esp.entry_of(other)? {
        Some(e) if e.bootable() => esp.spec_of(&e).ok(),
        _ => None,
    };
    let refused = esp.state()?.refused;

    let mut source: Box<dyn Source> = match &args.from {
        From::Registry(source, insecure) => Box::new(registry::Registry::new(source, *insecure)),
        From::Stdin(staging) => Box::new(bundle::Bundle::unpack(&mut std::io::stdin().lock(), staging)?),
    };
    let name = source.name();
    let Some((manifest, digest)) = source.manifest()? else {
        println!("{name} is not published yet");
        return Ok(Outcome::Nothing);
    };
    let m: Manifest = serde_json::from_slice(&manifest).map_err(|e| format!("{name}: the manifest: {e}"))?;
    let config = source.small_blob(&m.config.digest, m.config.size)?;
    let bundle = Manifest::check(&manifest, &config).map_err(|e| format!("{name}: {e}"))?;
    signature::check(&bundle, &config, std::path::Path::new(&trusted_key_path()))?;
    let root = bundle.spec.root_hex();
    match plan::judge(&bundle, &running, &refused, waiting.as_ref()) {
        plan::Verdict::Running => {
            println!("{name} is what runs ({digest})");
            return Ok(Outcome::Nothing);
        }
        plan::Verdict::Installed => {
            println!("{name} is installed in slot {other}, waiting for its reboot");
            return Ok(Outcome::Nothing);
        }
        plan::Verdict::RolledBack => {
            emit(
                Event::new(0, "update.skipped")
                    .with("digest", &digest)
                    .with("root_hash", &root)
                    .with("reason", "rolled_back"),
            );
            return Ok(Outcome::Nothing);
        }
        plan::Verdict::New => {}
    }
    emit(
        Event::new(0, "update.available")
            .with("source", &name)
            .with("digest", &digest)
            .with("root_hash", &root)
            .with("kernel", &bundle.kernel),
    );
    if args.check {
        return Ok(Outcome::Nothing);
    }

    // Everything small is fetched and checked before anything is written.
    let header = source.small_blob(&bundle.index.digest, bundle.index.size)?;
    let index = Index::decode(&header)?;
    bundle.check_index(&index)?;
    if bundle.uki.size > 512 << 20 {
        return Err(format!("the update's UKI claims {} bytes", bundle.uki.size));
    }
    let mut uki = Vec::new();
    source.blob(&bundle.uki.digest, bundle.uki.size, &mut uki)?;
    let uki_spec = berth_schema::uki::verity(&uki).map_err(|e| format!("the update's UKI: {e}"))?;
    if uki_spec != bundle.spec {
        return Err(format!(
            "the update's UKI carries root hash {}, its manifest {root}: refused",
            uki_spec.root_hex()
        ));
    }
    let target = esp::sibling_partition(&args.disk, &other.partition_name())?;
    let needed = index.data_bytes() + berth_schema::verity_tree::tree_bytes(bundle.spec.data_blocks);
    let room = slot::device_bytes(&target)?;
    if needed > room {
        return Err(format!("the update needs {needed} bytes in slot {other}, which has {room}: build it with a smaller image, or the machine with a larger [system] slot_size"));
    }
    let old_entry = esp.entry_of(other)?.map_or(0, |e| esp.entry_bytes(&e));
    if esp.free_bytes()? + old_entry < bundle.uki.size {
        return Err(format!(
            "the EFI system partition has no room for the update's UKI ({} bytes)",
            bundle.uki.size
        ));
    }

    // From here on the inactive slot is written; nothing boots it until its entry is back.
    esp.remove_slot(other)?;
    let running_index = slot::read_index(std::path::Path::new(slot::RUNNING_DEVICE)).ok();
    let steps = plan::pieces(&index, running_index.as_ref());
    let filled =
        slot::fill(&target, &header, &steps, &mut |digest, size, out| source.blob(digest, size, out))?;
    emit(
        Event::new(0, "update.downloaded")
            .with("blobs", source.fetched().0)
            .with("bytes", source.fetched().1)
            .with("copied", filled.copied.0)
            .with("copied_bytes", filled.copied.1),
    );
    slot::write_tree(&target, &bundle.spec)?;
    let entry = esp.install(other, &uki)?;
    emit(
        Event::new(0, "update.installed")
            .with("slot", other)
            .with("entry", entry.file_name())
            .with("root_hash", &root)
            .with("digest", &digest),
    );
    Ok(Outcome::Installed)
}
