//! Reads the boot-time configuration (a NoCloud config drive, QEMU's fw_cfg, the kernel command
//! line) and merges it over the plan; see `berth_schema::config::overrides` for the rules. A bad
//! fragment (one that does not parse, or whose containers do not fit the image) is reported on
//! the console and skipped: it never stops the boot.

use std::path::Path;

use crate::config_drive::{find_labelled, is_cidata, DriveFs};
use berth_schema::config::overrides::{self, Override};
use berth_schema::metadata::Metadata;
use berth_schema::plan::Plan;
use nix::mount::{mount, umount2, MntFlags, MsFlags};

use super::{log, system};

/// QEMU's fw_cfg device, as ACPI announces it (only QEMU has it: the driver and its port
/// accesses are used only then).
const QEMU_FW_CFG_ACPI: &str = "/sys/bus/acpi/devices/QEMU0002:00";
/// The fw_cfg file berth reads (`-fw_cfg name=opt/berth/config,file=FRAGMENT.toml`).
pub const FW_CFG_NAME: &str = "opt/berth/config";

fn fw_cfg(plan: &Plan) -> Option<Result<Override, String>> {
    if !Path::new(QEMU_FW_CFG_ACPI).exists() {
        return None;
    }
    for f in system::load_modules(&plan.qemu_modules) {
        log::warn(&f);
    }
    let path = format!("/sys/firmware/qemu_fw_cfg/by_name/{FW_CFG_NAME}/raw");
    let bytes = std::fs::read(&path).ok()?;
    let source = format!("fw_cfg {FW_CFG_NAME}");
    Some(
        String::from_utf8(bytes)
            .map_err(|_| format!("{source}: not UTF-8 text"))
            .and_then(|text| Override::parse(&text, &source)),
    )
}

/// Where a config drive is mounted while it is read.
const DRIVE_MOUNT: &str = "/run/berth/config-drive";
/// Mounts the drive read-only and reads `meta-data` and `user-data`.
fn read_drive(dev: &str, fs: DriveFs) -> Result<(Option<String>, Option<String>), String> {
    std::fs::create_dir_all(DRIVE_MOUNT).map_err(|e| format!("{DRIVE_MOUNT}: {e}"))?;
    mount(
        Some(dev),
        DRIVE_MOUNT,
        Some(fs.kernel_name()),
        MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        None::<&str>,
    )
    .map_err(|e| format!("mount the config drive {dev} ({}): {e}", fs.kernel_name()))?;
    let read = |name: &str| std::fs::read_to_string(Path::new(DRIVE_MOUNT).join(name)).ok();
    let files = (read("meta-data"), read("user-data"));
    let _ = umount2(DRIVE_MOUNT, MntFlags::MNT_DETACH);
    Ok(files)
}

fn config_drive(plan: &Plan) -> Vec<Result<Override, String>> {
    for f in system::load_modules(&plan.config_drive_modules) {
        log::warn(&f);
    }
    // A USB stick's controller and the stick itself get their drivers while it is looked for.
    let mut drivers = super::coldplug::DiskDrivers::default();
    let Some((dev, fs)) = find_labelled(is_cidata, &mut || drivers.look()) else {
        log::info("no config drive (a volume labelled CIDATA) found");
        return Vec::new();
    };
    log::emit(log::event("config.drive").with("device", &dev).with("fs", fs.kernel_name()));
    match read_drive(&dev, fs) {
        Ok((meta, user)) => crate::config_drive::fragments(meta.as_deref(), user.as_deref()),
        Err(e) => vec![Err(e)],
    }
}

/// Applies every fragment found, in order: the config drive, fw_cfg, the kernel command line.
pub fn apply(plan: &mut Plan, cmdline: &str) {
    let mut found: Vec<(&str, Result<Override, String>)> = Vec::new();
    if plan.system.config_drive {
        found.extend(config_drive(plan).into_iter().map(|r| ("config-drive", r)));
    }
    if let Some(r) = fw_cfg(plan) {
        found.push(("fw_cfg", r));
    }
    found.extend(overrides::from_cmdline(cmdline).into_iter().map(|r| ("cmdline", r)));
    let _ = merge(plan, found);
}

/// Applies the cloud's metadata (read once the network is up): its hostname, then its
/// user-data as a fragment, which may not change `[network]` or `[storage]`. The first
/// fragment refused is the error (Azure reports it as the provisioning's failure).
pub fn apply_metadata(plan: &mut Plan, m: &Metadata) -> Result<(), String> {
    let provider = m.provider.map_or("metadata", |p| p.name());
    let mut found: Vec<(&str, Result<Override, String>)> = Vec::new();
    if let Some(h) = &m.hostname {
        found.push((provider, Override::hostname(h, &format!("{provider} metadata hostname"))));
    }
    if let Some(text) = m.user_data.as_deref().filter(|t| !t.trim().is_empty()) {
        let source = format!("{provider} user-data");
        let fragment = if text.trim_start().starts_with("#cloud-config") {
            Err(format!(
                "{source}: this is cloud-init YAML (#cloud-config); berth reads a TOML fragment there"
            ))
        } else {
            Override::parse(text, &source).and_then(|o| o.check_after_network().map(|()| o))
        };
        found.push((provider, fragment));
    }
    merge(plan, found)
}

/// Merges the fragments in order (`config.applied`, or `config.rejected` and the fragment
/// skipped); the first refusal is returned.
fn merge(plan: &mut Plan, found: Vec<(&str, Result<Override, String>)>) -> Result<(), String> {
    let mut first_error = Ok(());
    for (source, result) in found {
        match result.and_then(|o| o.apply(plan)) {
            Ok(changed) => {
                log::emit(
                    log::event("config.applied").with("source", source).with("changed", changed.join(",")),
                );
            }
            Err(e) => {
                log::error(&format!("{e}; the image's configuration stays in force for it"));
                log::emit(log::event("config.rejected").with("source", source).with("error", &e));
                if first_error.is_ok() {
                    first_error = Err(e);
                }
            }
        }
    }
    first_error
}
