//! The Debian cloud kernel berth packs has every option of kernel-config/required.conf.

mod common;

use berth_image_build::kernel::{debian_cloud_kernel, default_cache_dir};

#[test]
fn debian_kernel_has_every_required_option() {
    let kernel = debian_cloud_kernel(&default_cache_dir(), &|_| {}).unwrap();
    let boot = kernel.vmlinuz.parent().unwrap();
    let config = std::fs::read_to_string(boot.join(format!("config-{}", kernel.version))).unwrap();
    let required = std::fs::read_to_string(common::workspace().join("kernel-config/required.conf")).unwrap();
    let mut missing = Vec::new();
    let mut count = 0;
    for line in required.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
        let (option, why) = line.split_once('#').map(|(o, w)| (o.trim(), w.trim())).unwrap_or((line, ""));
        count += 1;
        let set = config.lines().any(|l| l == format!("{option}=y") || l == format!("{option}=m"));
        if !set {
            missing.push(format!("{option} ({why})"));
        }
    }
    assert!(count > 20, "required.conf lists too little: {count}");
    assert!(missing.is_empty(), "kernel {} lacks: {}", kernel.version, missing.join(", "));
}
