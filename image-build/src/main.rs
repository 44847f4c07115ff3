//! `berth`: build bootable images from a config file, import images, boot images in QEMU.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use berth_image_build::build::{self, BuildOptions};
use berth_image_build::formats::{self, Bootable, Format};
use berth_image_build::import::{import_rootfs, ImportOptions};
use berth_image_build::kernel::default_cache_dir;
use berth_image_build::signing::{self, SigningKey};
use berth_qemu::{Accel, SilenceNotices, Vm, VmConfig};
use clap::{Parser, Subcommand, ValueEnum};

/// How long `berth run` lets the guest's console stay silent before saying so.
const SILENCE_NOTICE_AFTER: Duration = Duration::from_secs(15);

/// berth: one TOML file → a bootable Linux image that runs your containers.
#[derive(Parser)]
#[command(name = "berth", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Build kernel + initrd from a config file.
    Build {
        /// The config file (see docs/config.md).
        config: PathBuf,
        /// Output directory: gets vmlinuz, initrd.img and cmdline.
        #[arg(short, long)]
        output: PathBuf,
        /// The PID 1 binary to pack (default: $BERTH_INIT, or the static build next to berth).
        #[arg(long)]
        init: Option<PathBuf>,
        /// Cache for blobs and kernels (default: $BERTH_CACHE_DIR, $XDG_CACHE_HOME/berth, ~/.cache/berth).
        #[arg(long)]
        cache_dir: Option<PathBuf>,
        /// Bootable formats to write besides vmlinuz/initrd.img/cmdline (repeatable): uki
        /// (berth.efi), iso (berth.iso, BIOS and UEFI), raw-efi (disk.raw), qcow2 (disk.qcow2),
        /// vhdx (disk.vhdx, Hyper-V Gen2), update (update/: the disks' slot as an update bundle,
        /// for `berth update push`).
        #[arg(long = "format", value_name = "FORMAT", value_parser = Format::parse)]
        formats: Vec<Format>,
        /// Add a blank data partition of this size ("1g") to the EFI disks (raw-efi, qcow2,
        /// vhdx), GPT name `berth-data`.
        #[arg(long, value_name = "SIZE", value_parser = berth_schema::units::parse_bytes)]
        data_size: Option<u64>,
        /// Reach this registry (HOST[:PORT]) over plain HTTP instead of HTTPS (repeatable; also
        /// $BERTH_INSECURE_REGISTRIES, comma-separated).
        #[arg(long = "insecure-registry", value_name = "HOST[:PORT]")]
        insecure_registry: Vec<String>,
        /// Resolve registry tags again instead of using the digests in berth.lock, and rewrite it.
        #[arg(long)]
        update: bool,
        /// Sign the UKI (berth.efi, and the one on the disks' EFI system partition) for UEFI
        /// Secure Boot with this private key (PEM, not encrypted); needs --sign-cert.
        #[arg(long, value_name = "KEY", requires = "sign_cert")]
        sign_key: Option<PathBuf>,
        /// The certificate (PEM) of --sign-key, the one enrolled in the firmware's db.
        #[arg(long, value_name = "CERT", requires = "sign_key")]
        sign_cert: Option<PathBuf>,
    },
    /// Work with images.
    Image {
        #[command(subcommand)]
        command: ImageCommand,
    },
    /// Work with kernels.
    Kernel {
        #[command(subcommand)]
        command: KernelCommand,
    },
    /// Push a containerDisk (`berth build --format containerdisk`) to a registry, for
    /// KubeVirt: the disk image, or with --kernel-boot the kernel and initramfs image.
    Push {
        /// OUT/containerdisk of `berth build --format containerdisk`, or the build directory.
        image: PathBuf,
        /// Where to push it: REGISTRY/REPO:TAG.
        target: String,
        /// Push the kernel-boot image (`/boot/vmlinuz`, `/boot/initrd.img`) instead of the disk.
        #[arg(long = "kernel-boot")]
        kernel_boot: bool,
        /// Reach this registry (HOST[:PORT]) over plain HTTP instead of HTTPS (repeatable; also
        /// $BERTH_INSECURE_REGISTRIES, comma-separated).
        #[arg(long = "insecure-registry", value_name = "HOST[:PORT]")]
        insecure_registry: Vec<String>,
    },
    /// Work with update bundles (`berth build --format update`).
    Update {
        #[command(subcommand)]
        command: UpdateCommand,
    },
    /// Show what a built image holds: kernel, command line, modules, containers with their
    /// image digests and layer sizes — for a build directory or any image file it wrote.
    Inspect {
        /// A directory made by `berth build`, or berth.iso, berth.efi, disk.raw/qcow2/vhdx.
        image: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Boot a built image in QEMU with the serial console on this terminal.
    Run {
        /// A directory made by `berth build` (boots its kernel and initramfs), or an image it
        /// wrote: berth.iso (SeaBIOS, as a CD), disk.raw / disk.qcow2 / disk.vhdx or berth.efi
        /// (UEFI firmware, OVMF).
        dir: PathBuf,
        /// Boot with UEFI firmware (OVMF) even when the image also boots with a BIOS (ISO).
        #[arg(long)]
        uefi: bool,
        /// Boot with Secure Boot enforced: Debian's OVMF with its test ("snakeoil") keys
        /// enrolled, on a q35 machine. The firmware starts only a UKI or disk signed with that
        /// key (`berth build --sign-key`); a refusal ends the run with an error.
        #[arg(long)]
        secure_boot: bool,
        /// Guest memory in MiB.
        #[arg(long, default_value_t = 512)]
        memory: u32,
        /// Guest CPUs.
        #[arg(long, default_value_t = 1)]
        cpus: u32,
        /// Accelerator: auto uses KVM once a real guest has shown it works on this host (the
        /// verdict is kept in the cache directory), else TCG. BERTH_ACCEL=kvm|tcg also forces it.
        #[arg(long, value_enum, default_value_t = AccelArg::Auto)]
        accel: AccelArg,
        /// CPU model (QEMU's -cpu, e.g. `max` or `host` with KVM); default: QEMU's own (qemu64).
        #[arg(long)]
        cpu: Option<String>,
        /// Give the guest a virtio RNG device (entropy from this machine).
        #[arg(long)]
        rng: bool,
        /// Stop the VM after this many seconds (default: wait until it shuts down).
        #[arg(long)]
        timeout: Option<u64>,
        /// Extra text appended to the kernel command line.
        #[arg(long)]
        append: Option<String>,
        /// Forward a TCP port of this machine (on 127.0.0.1) to the guest, like Docker's
        /// `-p HOST:GUEST` (repeatable). The guest has a NIC on QEMU's user-mode network
        /// (10.0.2.15 by DHCP; this machine is 10.0.2.2).
        #[arg(short = 'p', long = "publish", value_name = "HOST:GUEST", value_parser = parse_forward)]
        publish: Vec<(u16, u16)>,
        /// Boot without a network card.
        #[arg(long)]
        no_net: bool,
        /// Attach a disk image (raw or qcow2, by its content) as a virtio disk (repeatable).
        #[arg(long = "disk", value_name = "FILE")]
        disks: Vec<PathBuf>,
    },
}

/// Parses `HOST:GUEST` port numbers.
fn parse_forward(text: &str) -> Result<(u16, u16), String> {
    let (h, g) =
        text.split_once(':').ok_or_else(|| format!("`{text}` is not HOST:GUEST (like 8080:8080)"))?;
    let port = |p: &str| {
        p.parse::<u16>().ok().filter(|p| *p != 0).ok_or_else(|| format!("`{p}` is not a port (1-65535)"))
    };
    Ok((port(h)?, port(g)?))
}

#[derive(Subcommand)]
enum ImageCommand {
    /// Make an OCI image from a root filesystem directory (like `docker import`).
    Import {
        /// The root filesystem directory.
        rootfs: PathBuf,
        /// The tag to record in the layout's index.json.
        #[arg(long)]
        tag: String,
        /// The OCI image layout directory to create or add to.
        #[arg(short, long)]
        output: PathBuf,
        /// The image's Cmd, one argument per flag (`--cmd /bin/sh --cmd -c --cmd 'echo hi'`).
        #[arg(long = "cmd")]
        cmd: Vec<String>,
        /// The image's Entrypoint, one argument per flag.
        #[arg(long = "entrypoint")]
        entrypoint: Vec<String>,
        /// An environment variable `KEY=VALUE` (repeatable).
        #[arg(long = "env")]
        env: Vec<String>,
        /// The image's WorkingDir.
        #[arg(long)]
        workdir: Option<String>,
        /// The image's User.
        #[arg(long)]
        user: Option<String>,
        /// A tag in the same layout to build on: the directory becomes one more layer on top of
        /// that image's layers (files named `.wh.NAME` delete NAME below), and the image keeps
        /// the base's settings except those given here (--env replaces by key).
        #[arg(long, value_name = "TAG")]
        base: Option<String>,
    },
}

#[derive(Subcommand)]
enum UpdateCommand {
    /// Push an update bundle to a registry as an OCI artifact, for machines whose `[update]
    /// source` follows that tag. Blobs the repository has are not sent again.
    Push {
        /// The bundle: OUT/update of `berth build --format update`, or the build directory.
        bundle: PathBuf,
        /// Where to push it: REGISTRY/REPO:TAG.
        target: String,
        /// Reach this registry (HOST[:PORT]) over plain HTTP instead of HTTPS (repeatable; also
        /// $BERTH_INSECURE_REGISTRIES, comma-separated).
        #[arg(long = "insecure-registry", value_name = "HOST[:PORT]")]
        insecure_registry: Vec<String>,
    },
}

#[derive(Subcommand)]
enum KernelCommand {
    /// Report, per berth need, whether a kernel has each option berth needs: built in, a
    /// module (and whether `berth build` packs it), or missing with what breaks. The needs:
    /// boot and containers (every image), initrd-zstd or initrd-gzip (the initramfs's
    /// compression), network, bridge, storage, config-drive, hyperv, efi (when the config or a
    /// format uses them), and optional (reported, never refused). The
    /// options come from the `# @berth NEED: CONSEQUENCE` annotations of kernel-config/fragments.
    /// Exit status 1 when a needed option is missing: without --for, any boot or containers one
    /// (every need is reported); with --for, any the config needs. `berth build` runs the same
    /// check and refuses such a kernel.
    #[command(verbatim_doc_comment)]
    Check {
        /// The kernel's configuration: a .config, a gzip'd one (/proc/config.gz), or a bzImage
        /// built with CONFIG_IKCONFIG (gzip or zstd compressed).
        file: PathBuf,
        /// Check only what this berth config needs; its [kernel] decides whether modules come
        /// with the kernel (the Debian kernel: yes; a [kernel] path kernel: no).
        #[arg(long = "for", value_name = "CONFIG.toml")]
        for_config: Option<PathBuf>,
        /// The formats the build writes (repeatable; with --for): efi and hyperv needs follow
        /// from them.
        #[arg(long = "format", value_name = "FORMAT", value_parser = Format::parse, requires = "for_config")]
        formats: Vec<Format>,
        /// The kernel comes with its modules, packed by `berth build` (as the Debian kernel's
        /// are). Without it (and without --for a Debian-kernel config), an option set to `m`
        /// counts as missing, as for a [kernel] path kernel.
        #[arg(long)]
        modules: bool,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum AccelArg {
    Auto,
    Kvm,
    Tcg,
}

/// Pushes one image of an OCI layout to `target` and reports what was sent.
fn push(
    image: &berth_image_build::layout::LayoutImage,
    target: &str,
    insecure_registry: &[String],
) -> Result<ExitCode> {
    let reference = berth_image_build::reference::RegistryRef::parse(target)
        .map_err(|e| anyhow::anyhow!("{target}: {e}"))?;
    let opts = berth_image_build::registry::PullOptions::with_env(insecure_registry);
    let pushed = berth_image_build::registry::push::push_image(image, &reference, target, &opts)?;
    eprintln!(
        "berth: pushed {target} ({}): {} blobs sent ({:.1} MiB), {} already there",
        pushed.digest,
        pushed.uploaded,
        pushed.bytes as f64 / (1 << 20) as f64,
        pushed.skipped
    );
    println!("{}", pushed.digest);
    Ok(ExitCode::SUCCESS)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("berth: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Build {
            config,
            output,
            init,
            cache_dir,
            formats,
            data_size,
            insecure_registry,
            update,
            sign_key,
            sign_cert,
        } => {
            let opts = BuildOptions {
                config,
                output: output.clone(),
                init,
                cache_dir: cache_dir.unwrap_or_else(default_cache_dir),
                formats,
                data_size,
                insecure_registries: insecure_registry,
                update,
                signing: sign_key.zip(sign_cert).map(|(key, cert)| SigningKey { key, cert }),
            };
            let report = build::build(&opts)?;
            let mut seen = std::collections::BTreeSet::new();
            for c in report.plan.containers() {
                if seen.insert(&c.image) {
                    eprintln!("berth: image {} is {}", c.image, c.image_digest);
                }
            }
            let n = report.plan.onboot.len() + report.plan.service.len();
            eprintln!(
                "berth: built {} (kernel {}, initrd {:.1} MiB, {} container{})",
                output.display(),
                report.kernel_version,
                report.initrd_bytes as f64 / (1 << 20) as f64,
                n,
                if n == 1 { "" } else { "s" }
            );
            eprintln!("berth: the machine {}", report.memory.summary());
            if let Some(drivers) = report.hardware.summary() {
                eprintln!("berth: drivers by device ([kernel] hardware) {drivers}");
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Image {
            command: ImageCommand::Import { rootfs, tag, output, cmd, entrypoint, env, workdir, user, base },
        } => {
            let opts = ImportOptions {
                entrypoint: (!entrypoint.is_empty()).then_some(entrypoint),
                cmd: (!cmd.is_empty()).then_some(cmd),
                env,
                working_dir: workdir,
                user,
                source_date_epoch: None,
                base,
            };
            let digest = import_rootfs(&rootfs, &output, &tag, &opts)?;
            println!("{digest}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Update { command: UpdateCommand::Push { bundle, target, insecure_registry } } => {
            let dir = if bundle.join("index.json").is_file() {
                bundle
            } else {
                bundle.join(berth_image_build::update_bundle::DIR)
            };
            let opened = berth_image_build::update_bundle::open(&dir)?;
            push(&opened.layout_image()?, &target, &insecure_registry)
        }
        Command::Push { image, target, kernel_boot, insecure_registry } => {
            use berth_image_build::container_disk::{DIR, DISK_TAG, KERNEL_BOOT_TAG};
            let dir = if image.join("index.json").is_file() { image } else { image.join(DIR) };
            let tag = if kernel_boot { KERNEL_BOOT_TAG } else { DISK_TAG };
            push(&berth_image_build::layout::open(&dir, tag)?, &target, &insecure_registry)
        }
        Command::Kernel { command: KernelCommand::Check { file, for_config, formats, modules, json } } => {
            kernel_check(&file, for_config.as_deref(), &formats, modules, json)
        }
        Command::Inspect { image, json } => {
            let report = berth_image_build::inspect::inspect(&image)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", report.to_text());
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Run {
            dir,
            uefi,
            secure_boot,
            memory,
            cpus,
            accel,
            cpu,
            rng,
            timeout,
            append,
            publish,
            no_net,
            disks,
        } => {
            let bootable = Bootable::detect(&dir)?;
            let scratch = tempfile::tempdir()?;
            let mut cfg = match &bootable {
                Bootable::KernelInitrd(_) => kernel_vm_config(&dir, append.as_deref())?,
                other => {
                    anyhow::ensure!(
                        append.is_none(),
                        "--append works with a build directory only: the image carries its own command line"
                    );
                    let mut cfg = VmConfig::default();
                    if secure_boot {
                        anyhow::ensure!(
                            other.needs_uefi(),
                            "--secure-boot boots a signed UKI or disk (berth.efi, disk.raw, disk.qcow2, disk.vhdx)"
                        );
                        cfg.machine = berth_qemu::Machine::Q35;
                        cfg.extra_args.extend(signing::secure_boot_args(scratch.path())?);
                    } else if uefi || other.needs_uefi() {
                        cfg.extra_args.extend(["-bios".to_string(), formats::ovmf()?.display().to_string()]);
                    }
                    cfg.extra_args.extend(other.qemu_args(scratch.path())?);
                    cfg
                }
            };
            // (best effort: an image that cannot be read has already failed above, with its own error)
            if let Ok(Some(need)) = berth_image_build::inspect::memory_need_mib(&bootable) {
                if u64::from(memory) < need {
                    eprintln!(
                        "berth: warning: --memory {memory} is below the {need} MiB this image needs to boot \
                         (the initramfs unpacked into RAM, or OVMF's own floor); it will most likely not boot"
                    );
                }
            }
            for disk in &disks {
                let format = match Bootable::detect(disk) {
                    Ok(Bootable::Disk(_, f)) => f,
                    _ => disk_format(disk)?,
                };
                cfg.extra_args.extend([
                    "-drive".to_string(),
                    format!("file={},format={format},if=virtio", disk.display()),
                ]);
            }
            anyhow::ensure!(
                !(secure_boot && matches!(bootable, Bootable::KernelInitrd(_))),
                "--secure-boot boots a signed UKI or disk (berth.efi, disk.raw, disk.qcow2, disk.vhdx), not a build directory"
            );
            if uefi && matches!(bootable, Bootable::KernelInitrd(_)) {
                cfg.extra_args.extend(["-bios".to_string(), formats::ovmf()?.display().to_string()]);
            }
            cfg.cpu = cpu;
            cfg.rng = rng;
            // A disk is a machine: a guest reboot restarts it, as a hypervisor does (updates in
            // place reboot into the other slot); powering off ends the run.
            cfg.allow_reboot = matches!(bootable, Bootable::Disk(..));
            run_vm(cfg, memory, cpus, accel, timeout, &publish, no_net)
        }
    }
}

/// `berth kernel check`: prints the report; success when nothing needed is missing.
fn kernel_check(
    file: &std::path::Path,
    for_config: Option<&std::path::Path>,
    formats: &[Format],
    modules: bool,
    json: bool,
) -> Result<ExitCode> {
    use berth_image_build::kernel_check::{self, LoadError, Modules, Scope};
    use std::io::IsTerminal;
    let loaded = kernel_check::load(file).map_err(|e| {
        let hint = match &e {
            LoadError::BzImage { release, .. } | LoadError::NoEmbeddedConfig { release } => format!(
                "\nhint: check the kernel's .config instead ({}, or /proc/config.gz on the running machine)",
                release
                    .as_ref()
                    .map(|r| format!("/boot/config-{r} on Debian"))
                    .unwrap_or("its build tree's .config".into())
            ),
            _ => String::new(),
        };
        anyhow::anyhow!("{}: {e}{hint}", file.display())
    })?;
    let (scope, packed, target) = match for_config {
        Some(path) => {
            let config = berth_schema::config::Config::load(path)?;
            let debian = config.kernel.path.is_none();
            if modules && !debian {
                anyhow::bail!(
                    "--modules: {} boots a [kernel] path kernel, which comes without modules; drop --modules",
                    path.display()
                );
            }
            let packed = debian.then(|| {
                let mut plan = build::module_plan(&config, formats);
                build::add_needed_modules(&loaded, &config, formats, &mut plan);
                plan.names()
            });
            let needs = kernel_check::needs_for(&config, formats);
            (Scope::Needs(needs), packed, Some(path.display().to_string()))
        }
        None => (Scope::Everything, modules.then(build::packable_modules), None),
    };
    let modules = packed.map(Modules::Packed).unwrap_or(Modules::None);
    let report = kernel_check::check(&loaded, &scope, &modules)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        let colour = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
        print!("{}", report.to_text(&file.display().to_string(), target.as_deref(), colour));
    }
    Ok(if report.ok { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// The QEMU format of a data disk: qcow2 or vhdx by their magic, else raw.
fn disk_format(path: &std::path::Path) -> Result<&'static str> {
    use std::io::Read;
    let mut magic = [0u8; 8];
    let n =
        std::fs::File::open(path).with_context(|| format!("--disk {}", path.display()))?.read(&mut magic)?;
    Ok(match &magic[..n] {
        [b'Q', b'F', b'I', 0xfb, ..] => "qcow2",
        m if m.starts_with(b"vhdxfile") => "vhdx",
        _ => "raw",
    })
}

/// The VM configuration booting a build directory's kernel and initramfs.
fn kernel_vm_config(dir: &std::path::Path, append: Option<&str>) -> Result<VmConfig> {
    let read = |name: &str| -> Result<PathBuf> {
        let p = dir.join(name);
        if p.is_file() {
            Ok(p)
        } else {
            anyhow::bail!(
                "{} is missing: is {} a directory made by `berth build`?",
                p.display(),
                dir.display()
            )
        }
    };
    let kernel = read(build::VMLINUZ)?;
    let initrd = read(build::INITRD)?;
    let mut cmdline =
        std::fs::read_to_string(read(build::CMDLINE)?).context("reading cmdline")?.trim().to_string();
    if let Some(extra) = append {
        cmdline = format!("{cmdline} {extra}");
    }
    Ok(VmConfig::new(kernel, initrd, &cmdline))
}

/// Boots `cfg` with the serial console on this terminal; success when the guest shut down
/// cleanly.
fn run_vm(
    mut cfg: VmConfig,
    memory: u32,
    cpus: u32,
    accel: AccelArg,
    timeout: Option<u64>,
    publish: &[(u16, u16)],
    no_net: bool,
) -> Result<ExitCode> {
    cfg.memory_mib = memory;
    cfg.cpus = cpus;
    cfg.accel = match accel {
        AccelArg::Auto => Accel::Auto,
        AccelArg::Kvm => Accel::Kvm,
        AccelArg::Tcg => Accel::Tcg,
    };
    cfg.console_stdout = true;
    if no_net {
        anyhow::ensure!(publish.is_empty(), "--publish needs a network card; drop --no-net");
    } else {
        cfg.extra_args.extend(berth_qemu::user_net_args(publish));
    }
    let mut vm = Vm::start(cfg)?;
    eprintln!("berth: accelerator {} ({})", vm.accel().name(), vm.accel_reason());
    let started = Instant::now();
    let limit = timeout.map(Duration::from_secs);
    let mut notices = SilenceNotices::new(SILENCE_NOTICE_AFTER);
    let mut booted = false;
    let status = loop {
        match vm.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) => {}
            Err(e) => {
                vm.kill();
                return Err(e.into());
            }
        }
        if limit.is_some_and(|limit| started.elapsed() >= limit) {
            vm.kill();
            anyhow::bail!(
                "the machine did not shut down within {} s (--timeout); QEMU was stopped",
                started.elapsed().as_secs()
            );
        }
        // Until the guest's first event, the firmware may still refuse the image.
        let firmware = if booted { String::new() } else { vm.console_tail(200) };
        booted = booted || firmware.contains("@berth ");
        if let Some(refusal) = firmware.lines().find(|l| signing::is_refusal(l)) {
            vm.kill();
            eprintln!();
            anyhow::bail!(
                "the firmware refused to start the image: {}\nUnder Secure Boot it starts only an image signed with a key of its db: \
                 build with --sign-key KEY --sign-cert CERT (for --secure-boot: the ovmf package's snakeoil key)",
                refusal.trim()
            );
        }
        // (once the machine runs, a quiet console is a quiet service, not a stuck boot)
        let notice =
            if booted { None } else { notices.check(vm.silent_for(), vm.accel(), vm.accel_reason()) };
        if let Some(notice) = notice {
            eprintln!("\n{notice}");
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    // Collects the rest of the console (QEMU has exited, so this returns at once).
    let _ = vm.wait_exit(Duration::from_secs(2));
    let clean = status.success() && vm.guest_shutdown().is_some();
    if !clean {
        eprintln!("berth: QEMU ended ({status}) without the machine shutting down");
        let qemu_errors = vm.console_tail(0);
        if !qemu_errors.trim().is_empty() {
            eprint!("{qemu_errors}");
        }
    }
    Ok(if clean { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}
