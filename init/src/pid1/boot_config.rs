//! Reads the boot-time configuration (QEMU's fw_cfg, the kernel command line) and merges it
//! over the plan; see `berth_init::config::overrides` for the rules. A bad fragment is reported
//! on the console and skipped: it never stops the boot.

use std::path::Path;

use berth_init::config::overrides::{self, Override};
use berth_init::plan::Plan;

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

/// Applies every fragment found, in order: fw_cfg, then the kernel command line.
pub fn apply(plan: &mut Plan, cmdline: &str) {
    let mut found: Vec<(&str, Result<Override, String>)> = Vec::new();
    if let Some(r) = fw_cfg(plan) {
        found.push(("fw_cfg", r));
    }
    found.extend(overrides::from_cmdline(cmdline).into_iter().map(|r| ("cmdline", r)));
    for (source, result) in found {
        match result {
            Ok(o) => {
                let changed = o.apply(plan);
                log::emit(
                    log::event("config.applied").with("source", source).with("changed", changed.join(",")),
                );
            }
            Err(e) => {
                log::error(&format!("{e}; the image's configuration stays in force for it"));
                log::emit(log::event("config.rejected").with("source", source).with("error", e));
            }
        }
    }
}
