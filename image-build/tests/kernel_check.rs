//! The kernel check on real kernels: the Debian cloud kernel's configuration meets every need
//! of kernel-config/fragments but `metal` (physical machines' drivers), Debian's generic kernel
//! meets every one with the modules a config's plan packs; a copy without overlay, the memory
//! cgroup and the virtio NIC is reported by `berth kernel check` with what breaks, and refused
//! by `berth build`; a `[kernel] path` kernel builds without modules.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

use berth_image_build::build::{add_needed_modules, module_plan, packable_modules};
use berth_image_build::formats::Format;
use berth_image_build::kernel::{
    debian_cloud_kernel, debian_kernel, default_cache_dir, DebianFlavor, Kernel,
};
use berth_image_build::kernel_check::{
    self, every_need, module_of, requirements, Modules, Need, Scope, Status,
};
use berth_image_build::modules::resolve_modules;

/// The three options the broken configuration lacks.
const REMOVED: [&str; 3] = ["CONFIG_OVERLAY_FS", "CONFIG_MEMCG", "CONFIG_VIRTIO_NET"];

fn debian() -> Kernel {
    debian_cloud_kernel(&default_cache_dir(), &|l| eprintln!("kernel: {l}")).unwrap()
}

fn debian_config_text(kernel: &Kernel) -> String {
    std::fs::read_to_string(kernel.config_file()).unwrap()
}

/// `text` without the lines setting `options`.
fn without(text: &str, options: &[&str]) -> String {
    let removed: Vec<String> = options.iter().map(|o| format!("{o}=")).collect();
    let out: String = text
        .lines()
        .filter(|l| !removed.iter().any(|r| l.starts_with(r)))
        .map(|l| format!("{l}\n"))
        .collect();
    assert_eq!(out.lines().count() + options.len(), text.lines().count(), "each option was set once");
    out
}

/// `text` with every option a refusing need requires set to `y` where it was `m`: what a
/// `[kernel] path` kernel (no modules) must have.
fn all_built_in(text: &str) -> String {
    let required: Vec<String> = requirements()
        .unwrap()
        .iter()
        .filter(|r| r.need.refuses())
        .map(|r| format!("{}=m", r.option))
        .collect();
    text.lines()
        .map(|l| {
            if required.iter().any(|r| r == l) {
                format!("{}y\n", &l[..l.len() - 1])
            } else {
                format!("{l}\n")
            }
        })
        .collect()
}

/// The annotation's consequence for `option`.
fn consequence(option: &str) -> String {
    requirements().unwrap().iter().find(|r| r.option == option).unwrap().consequence.clone()
}

fn berth(args: &[&str]) -> (Output, String, String) {
    let out = common::run_berth(args);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    (out, stdout, stderr)
}

#[test]
fn debian_kernel_config_passes_every_need() {
    let kernel = debian();
    let loaded = kernel_check::load(&kernel.config_file()).unwrap();
    // The cloud kernel has no physical machine's drivers: every need but `metal`.
    let mut needs = every_need();
    needs.remove(&Need::Metal);
    let report =
        kernel_check::check(&loaded, &Scope::Needs(needs.clone()), &Modules::Packed(packable_modules()))
            .unwrap();
    assert!(report.ok, "{}", report.to_text("debian", Some("every need"), false));
    for need in needs {
        let n = report.needs.iter().find(|n| n.need == need).unwrap();
        assert!(n.required && !n.options.is_empty(), "{need:?}");
    }

    // Every annotated option Debian builds as a module maps to a module file of the package,
    // so "berth build packs it" is true.
    let config = &loaded.config;
    let mut checked = 0;
    for r in requirements().unwrap() {
        if config.value(&r.option) != Some("m") {
            continue;
        }
        let module =
            module_of(&r.option).unwrap_or_else(|| panic!("{} is =m but has no known module", r.option));
        let files = resolve_modules(&kernel.modules_dir, &[module.to_string()]).unwrap();
        assert!(files.iter().any(|f| f.name == module), "{} -> {module}: {files:?}", r.option);
        if r.need.refuses() && r.need != Need::Metal {
            let item = report.needs.iter().flat_map(|n| &n.options).find(|i| i.option == r.option).unwrap();
            assert_eq!(item.status, Status::Module { module: module.to_string() });
        }
        checked += 1;
    }
    assert!(checked > 20, "only {checked} module options");

    // The same through the CLI: every need (with Debian's modules), and for a config.
    let file = kernel.config_file();
    let (out, stdout, _) = berth(&["kernel", "check", file.to_str().unwrap(), "--modules"]);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("  - CONFIG_OVERLAY_FS: module (berth build packs it)\n"), "{stdout}");
    assert!(stdout.contains("result: the kernel has what every image needs"), "{stdout}");
    // Only physical machines' images cannot use the cloud kernel.
    let cannot: Vec<&str> = stdout.lines().filter(|l| l.contains("cannot use this kernel")).collect();
    assert_eq!(cannot.len(), 1, "{stdout}");
    assert!(
        cannot[0].starts_with("images that need these cannot use this kernel: metal (CONFIG_E1000E, "),
        "{stdout}"
    );
}

/// How many options a need's section of a text report says are missing.
fn section_missing(report: &str, need: &str) -> usize {
    report.split(&format!("\n{need} — ")).nth(1).map_or(0, |s| {
        s.split("\n\n").next().unwrap_or("").lines().filter(|l| l.contains(": missing: ")).count()
    })
}

/// A config that has every need, built into every format.
const EVERYTHING: &str =
    "[kernel]\nhardware = [\"all\"]\n[system]\nconfig_drive = true\nwatchdog = \"10s\"\n\
                          zram = \"50%\"\n[storage]\ndisk = \"/dev/vdb\"\n[[service]]\nname = \"web\"\n\
                          image = \"oci:x\"\nnet = \"bridge\"\n";

#[test]
fn the_generic_kernel_serves_every_need_with_what_a_plan_packs() {
    let kernel =
        debian_kernel(DebianFlavor::Generic, &default_cache_dir(), &|l| eprintln!("kernel: {l}")).unwrap();
    assert!(kernel.version.ends_with("-amd64") && !kernel.version.contains("cloud"), "{}", kernel.version);
    let loaded = kernel_check::load(&kernel.config_file()).unwrap();
    let config = berth_schema::config::Config::parse(EVERYTHING, "app.toml").unwrap();
    let mut plan = module_plan(&config, &Format::ALL);
    let before = plan.names();
    add_needed_modules(&loaded, &config, &Format::ALL, &mut plan);
    // ext4 and crc32c are modules in the generic kernel: the plan packs them (for [storage]).
    for m in ["ext4", "crc32c_generic"] {
        assert!(!before.contains(m) && plan.early.iter().any(|e| e == m), "{m}: {plan:?}");
    }
    let report =
        kernel_check::check(&loaded, &Scope::Needs(every_need()), &Modules::Packed(plan.names())).unwrap();
    assert!(report.ok, "{}", report.to_text("generic", Some("every need"), false));
    let metal = report.needs.iter().find(|n| n.need == Need::Metal).unwrap();
    assert!(metal.options.iter().any(|i| i.option == "CONFIG_E1000E" && i.ok), "{metal:?}");
    // Every packed name is a module of the package or built into its kernel (resolving
    // refuses an unknown one).
    let names: Vec<String> = plan.names().into_iter().collect();
    let files = resolve_modules(&kernel.modules_dir, &names).unwrap();
    assert!(files.iter().any(|f| f.name == "e1000e") && files.iter().any(|f| f.name == "ext4"), "{files:?}");
    // libcrc32c needs the crc32c algorithm at load (`softdep=pre: crc32c`), a module here: its
    // generic implementation comes first, or nf_tables (which needs libcrc32c) fails to load.
    let order: Vec<String> = resolve_modules(&kernel.modules_dir, &["nf_tables".to_string()])
        .unwrap()
        .into_iter()
        .map(|f| f.name)
        .collect();
    let at = |n: &str| order.iter().position(|o| o == n).unwrap_or_else(|| panic!("{n} not in {order:?}"));
    assert!(at("crc32c_generic") < at("libcrc32c") && at("libcrc32c") < at("nf_tables"), "{order:?}");
}

#[test]
fn the_metal_set_on_the_cloud_kernel_names_the_missing_drivers_and_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let (out, stderr, out_dir) = build(dir.path(), "[kernel]\nhardware = [\"metal\"]\n");
    assert!(!out.status.success(), "built metal on the cloud kernel");
    assert_nothing_written(dir.path(), &out_dir);
    for option in ["CONFIG_E1000E", "CONFIG_SATA_AHCI", "CONFIG_USB_XHCI_PCI", "CONFIG_USB_HID"] {
        assert!(stderr.contains(&format!("  {option} (metal): missing: ")), "{option}:\n{stderr}");
    }
    assert!(stderr.contains("set [kernel] source = \"debian-generic\""), "{stderr}");
    // `berth kernel check --for` says the same per need; vmware's drivers are there.
    let kernel = debian();
    let app = dir.path().join("app.toml");
    std::fs::write(&app, "[kernel]\nhardware = [\"vmware\", \"metal\"]\n").unwrap();
    let file = kernel.config_file();
    let (out, stdout, _) =
        berth(&["kernel", "check", file.to_str().unwrap(), "--for", app.to_str().unwrap()]);
    assert!(!out.status.success(), "{stdout}");
    assert!(stdout.contains("  - CONFIG_VMXNET3: module (berth build packs it)\n"), "{stdout}");
    assert!(stdout.contains("  - CONFIG_E1000E: missing: "), "{stdout}");
    assert!(stdout.contains("result: the kernel lacks what "), "{stdout}");
    // Every metal option the cloud kernel lacks is counted in the result, and only those.
    let metal_missing = section_missing(&stdout, "metal");
    assert!(metal_missing >= 8, "{stdout}");
    assert!(stdout.contains(&format!("needs: {metal_missing} options (CONFIG_E1000E, ")), "{stdout}");
}

#[test]
fn broken_config_is_reported_with_each_consequence() {
    let kernel = debian();
    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("broken.config");
    std::fs::write(&broken, without(&debian_config_text(&kernel), &REMOVED)).unwrap();
    let broken = broken.to_str().unwrap();

    let (out, stdout, _) = berth(&["kernel", "check", broken, "--modules"]);
    assert!(!out.status.success(), "overlay and memcg are missing: must fail\n{stdout}");
    for option in REMOVED {
        let line = format!("  - {option}: missing: {}\n", consequence(option));
        assert!(stdout.contains(&line), "no `{line}` in\n{stdout}");
    }
    assert!(stdout
        .contains("the kernel lacks what every image needs: 2 options (CONFIG_OVERLAY_FS, CONFIG_MEMCG)"));
    assert!(stdout.contains("cannot use this kernel: network (CONFIG_VIRTIO_NET)"), "{stdout}");
    assert!(!stdout.contains('\x1b'), "no colour off a terminal");

    // For a config that uses the network, the NIC refuses the kernel too.
    let app = dir.path().join("app.toml");
    std::fs::write(&app, "[[network.interface]]\nmatch = \"first\"\ndhcp = true\n").unwrap();
    let (out, stdout, _) = berth(&["kernel", "check", broken, "--for", app.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(
        stdout.contains("modules: packed by berth build"),
        "a Debian-kernel config has modules: {stdout}"
    );
    assert!(stdout.contains("3 options (CONFIG_OVERLAY_FS, CONFIG_MEMCG, CONFIG_VIRTIO_NET)"), "{stdout}");
    assert!(stdout.contains("not needed by"), "{stdout}");

    let (out, stdout, _) = berth(&["kernel", "check", broken, "--for", app.to_str().unwrap(), "--json"]);
    assert!(!out.status.success());
    let json: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(json["ok"], false);
    let items: Vec<&serde_json::Value> = json["needs"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|n| n["options"].as_array().unwrap())
        .filter(|i| i["ok"] == false && REMOVED.contains(&i["option"].as_str().unwrap()))
        .collect();
    assert_eq!(items.len(), 3, "{stdout}");
    for i in items {
        assert_eq!(i["status"], "missing");
        assert_eq!(i["consequence"], consequence(i["option"].as_str().unwrap()));
    }
    let network = json["needs"].as_array().unwrap().iter().find(|n| n["need"] == "network").unwrap();
    assert_eq!(network["required"], true);
}

/// A directory with the Debian kernel image as `bzImage` and `config` as `kernel.config`.
fn path_kernel_dir(kernel: &Kernel, config: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(&kernel.vmlinuz, dir.path().join("bzImage")).unwrap();
    std::fs::write(dir.path().join("kernel.config"), config).unwrap();
    dir
}

/// `berth build` of `toml` in `dir` into `dir/out`.
fn build(dir: &Path, toml: &str) -> (Output, String, PathBuf) {
    let file = dir.join("app.toml");
    std::fs::write(&file, toml).unwrap();
    let out_dir = dir.join("out");
    let (out, _, stderr) = berth(&["build", file.to_str().unwrap(), "-o", out_dir.to_str().unwrap()]);
    (out, stderr, out_dir)
}

fn assert_nothing_written(dir: &Path, out_dir: &Path) {
    assert!(!out_dir.exists(), "output written despite the error");
    let staging: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with(".berth-build"))
        .collect();
    assert!(staging.is_empty(), "staging left behind");
}

const PATH_KERNEL: &str = "[kernel]\npath = \"bzImage\"\nconfig = \"kernel.config\"\n\n\
                           [[network.interface]]\nmatch = \"first\"\ndhcp = true\n";

#[test]
fn build_refuses_a_kernel_that_lacks_what_the_config_needs() {
    let kernel = debian();
    let dir = path_kernel_dir(&kernel, &without(&all_built_in(&debian_config_text(&kernel)), &REMOVED));
    let (out, stderr, out_dir) = build(dir.path(), PATH_KERNEL);
    assert!(!out.status.success(), "built with a broken kernel");
    assert_nothing_written(dir.path(), &out_dir);
    let needs = [Need::Containers, Need::Containers, Need::Network];
    for (option, need) in REMOVED.iter().zip(needs) {
        let line = format!("  {option} ({}): missing: {}", need.name(), consequence(option));
        assert!(stderr.contains(&line), "no `{line}` in\n{stderr}");
    }
    assert_eq!(stderr.matches("\n  CONFIG_").count(), 3, "exactly the three options: {stderr}");
    let vmlinuz = dir.path().join("bzImage");
    let config = dir.path().join("kernel.config");
    let kernel_line = format!(
        "the kernel {} (release {}, configuration {}) lacks what this config needs:",
        vmlinuz.display(),
        kernel.version,
        config.display()
    );
    assert!(stderr.contains(&kernel_line), "{stderr}");

    // The same configuration with the Debian kernel's modules (source = "debian") would pack
    // overlay and virtio_net, but =m is no use to a path kernel.
    let modules_only = path_kernel_dir(&kernel, &debian_config_text(&kernel));
    let (out, stderr, out_dir) = build(modules_only.path(), PATH_KERNEL);
    assert!(!out.status.success());
    assert_nothing_written(modules_only.path(), &out_dir);
    assert!(
        stderr.contains("CONFIG_OVERLAY_FS (containers): module, but a [kernel] path kernel has no modules"),
        "{stderr}"
    );
}

#[test]
fn build_with_a_path_kernel_packs_no_modules() {
    let kernel = debian();
    let dir = path_kernel_dir(&kernel, &all_built_in(&debian_config_text(&kernel)));
    let (out, stderr, out_dir) = build(dir.path(), PATH_KERNEL);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains(&format!("kernel {}", kernel.version)), "{stderr}");
    assert_eq!(std::fs::read(out_dir.join("vmlinuz")).unwrap(), std::fs::read(&kernel.vmlinuz).unwrap());

    let (out, stdout, stderr) = berth(&["inspect", "--json", out_dir.to_str().unwrap()]);
    assert!(out.status.success(), "{stderr}");
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["kernel_version"], kernel.version.as_str());
    assert_eq!(report["modules"], serde_json::json!({}), "a path kernel gets no modules");

    // Reproducible: a second build gives the same bytes.
    let first = std::fs::read(out_dir.join("initrd.img")).unwrap();
    std::fs::rename(&out_dir, dir.path().join("first")).unwrap();
    let (out, stderr, out_dir) = build(dir.path(), PATH_KERNEL);
    assert!(out.status.success(), "{stderr}");
    assert!(std::fs::read(out_dir.join("initrd.img")).unwrap() == first, "initrd.img differs");
}

#[test]
fn a_path_kernel_without_a_readable_config_is_refused() {
    let kernel = debian();
    let dir = path_kernel_dir(&kernel, "");
    let toml = "[network]\nauto = false\n\n[kernel]\npath = \"bzImage\"\n";
    let (out, stderr, out_dir) = build(dir.path(), toml);
    assert!(!out.status.success());
    assert_nothing_written(dir.path(), &out_dir);
    let file = dir.path().join("app.toml");
    assert!(stderr.contains(&format!("{}:5:8: [kernel] path: cannot check", file.display())), "{stderr}");
    assert!(stderr.contains("give [kernel] config") && stderr.contains("CONFIG_IKCONFIG"), "{stderr}");

    let toml = "[kernel]\npath = \"bzImage\"\nconfig = \"nothere.config\"\n";
    let (out, stderr, _) = build(dir.path(), toml);
    assert!(!out.status.success());
    assert!(stderr.contains(&format!("{}:3:10: [kernel] config:", file.display())), "{stderr}");
    assert!(stderr.contains("nothere.config"), "{stderr}");

    let toml = "[kernel]\npath = \"nothere\"\n";
    let (out, stderr, _) = build(dir.path(), toml);
    assert!(!out.status.success());
    assert!(stderr.contains(&format!("{}:2:8: [kernel] path: cannot open", file.display())), "{stderr}");
}

#[test]
fn a_path_kernel_with_an_embedded_config() {
    let merged: String =
        kernel_check::fragments().iter().map(|(_, text)| *text).collect::<Vec<_>>().join("\n");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("bzImage"), common::synthetic_bzimage(Some(&merged))).unwrap();
    let toml = "[kernel]\npath = \"bzImage\"\n";
    let (out, stderr, out_dir) = build(dir.path(), toml);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("kernel 6.1.120-berth"), "{stderr}");
    let (out, stdout, _) = berth(&["kernel", "check", dir.path().join("bzImage").to_str().unwrap()]);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("configuration embedded in the kernel image, release 6.1.120-berth"), "{stdout}");
    assert!(stdout.contains("modules: none"), "{stdout}");
    std::fs::remove_dir_all(out_dir).unwrap();

    let broken = without(&merged, &REMOVED);
    std::fs::write(dir.path().join("bzImage"), common::synthetic_bzimage(Some(&broken))).unwrap();
    let (out, stderr, out_dir) = build(dir.path(), toml);
    assert!(!out.status.success());
    assert_nothing_written(dir.path(), &out_dir);
    for option in REMOVED {
        assert!(stderr.contains(&format!("  {option} (")), "{stderr}");
    }

    std::fs::write(dir.path().join("bzImage"), common::synthetic_bzimage(None)).unwrap();
    let (out, stderr, out_dir) = build(dir.path(), toml);
    assert!(!out.status.success());
    assert_nothing_written(dir.path(), &out_dir);
    let file = dir.path().join("app.toml");
    assert!(stderr.contains(&format!("{}:2:8: [kernel] path: cannot check", file.display())), "{stderr}");
    assert!(
        stderr.contains(
            "a kernel image (release 6.1.120-berth) without an embedded configuration (CONFIG_IKCONFIG); \
             give [kernel] config"
        ),
        "{stderr}"
    );
}
