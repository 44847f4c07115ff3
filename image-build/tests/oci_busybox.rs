//! End to end: import a busybox root filesystem as an OCI layout, resolve it, read its layer.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};

use berth_image_build::blobs::BlobCache;
use berth_image_build::image_config::merge_process;
use berth_image_build::import::{import_rootfs, ImportOptions};
use berth_image_build::layer::{for_each_entry, resolve_user, scan_layer, EntryKind, LayerEntry};
use berth_image_build::reference::ImageRef;
use berth_image_build::source::{resolve, Compression, ImageError};

const BUSYBOX: &str = "/bin/busybox";

fn make_rootfs(root: &Path) {
    for dir in ["bin", "etc", "dev", "tmp", "usr/bin", "home/app"] {
        fs::create_dir_all(root.join(dir)).unwrap();
    }
    fs::copy(BUSYBOX, root.join("bin/busybox")).unwrap();
    for applet in ["sh", "ls", "cat", "id"] {
        symlink("busybox", root.join("bin").join(applet)).unwrap();
    }
    // A hard link that sorts after its first name.
    fs::hard_link(root.join("bin/busybox"), root.join("usr/bin/busybox-link")).unwrap();
    fs::write(root.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n")
        .unwrap();
    fs::write(root.join("etc/group"), "root:x:0:\napp:x:1000:\nwheel:x:10:app\n").unwrap();
    fs::set_permissions(root.join("tmp"), fs::Permissions::from_mode(0o1777)).unwrap();
    fs::write(root.join("bin/suid"), "#!/bin/sh\n").unwrap();
    fs::set_permissions(root.join("bin/suid"), fs::Permissions::from_mode(0o4755)).unwrap();
    std::os::unix::fs::chown(root.join("home/app"), Some(1000), Some(1000)).unwrap();
    let c = |p: &Path| std::ffi::CString::new(p.to_str().unwrap()).unwrap();
    // SAFETY: plain libc calls on valid NUL-terminated paths (the tests run as root).
    unsafe {
        assert_eq!(
            libc::mknod(c(&root.join("dev/null")).as_ptr(), libc::S_IFCHR | 0o666, libc::makedev(1, 3)),
            0
        );
        assert_eq!(libc::mkfifo(c(&root.join("dev/fifo")).as_ptr(), 0o600), 0);
    }
}

fn options() -> ImportOptions {
    ImportOptions {
        cmd: Some(vec!["/bin/sh".into()]),
        env: vec!["PATH=/bin:/usr/bin".into()],
        source_date_epoch: Some(1_700_000_000),
        ..Default::default()
    }
}

fn blob_files(layout: &Path) -> BTreeMap<String, Vec<u8>> {
    fs::read_dir(layout.join("blobs/sha256"))
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (e.file_name().into_string().unwrap(), fs::read(e.path()).unwrap())
        })
        .collect()
}

fn oci(dir: &Path, tag: &str) -> ImageRef {
    ImageRef::parse(&format!("oci:{}:{tag}", dir.display()), Path::new("/")).unwrap()
}

#[test]
fn import_resolve_and_read() {
    let tmp = tempfile::tempdir().unwrap();
    let rootfs = tmp.path().join("rootfs");
    make_rootfs(&rootfs);
    let layout = tmp.path().join("images/busybox");

    let digest = import_rootfs(&rootfs, &layout, "1.0", &options()).unwrap();
    assert!(digest.starts_with("sha256:"));

    // Reproducible: a second import elsewhere gives identical blobs and the same digest, and
    // re-importing into the same layout replaces the tag in place.
    let layout2 = tmp.path().join("images/again");
    assert_eq!(import_rootfs(&rootfs, &layout2, "1.0", &options()).unwrap(), digest);
    assert_eq!(blob_files(&layout), blob_files(&layout2));
    assert_eq!(fs::read(layout.join("index.json")).unwrap(), fs::read(layout2.join("index.json")).unwrap());
    assert_eq!(import_rootfs(&rootfs, &layout, "1.0", &options()).unwrap(), digest);
    let index: serde_json::Value =
        serde_json::from_slice(&fs::read(layout.join("index.json")).unwrap()).unwrap();
    assert_eq!(index["manifests"].as_array().unwrap().len(), 1);
    assert_eq!(blob_files(&layout).len(), 3, "layer, config, manifest");

    // Resolve through a relative reference, as a config file would write it.
    let cache = BlobCache::new(tmp.path().join("cache"));
    let image = ImageRef::parse("oci:images/busybox:1.0", tmp.path()).unwrap();
    let resolved = resolve(&image, &cache).unwrap();
    assert_eq!(resolved.manifest_digest, digest);
    assert_eq!(resolved.config.cmd, vec!["/bin/sh".to_string()]);
    assert_eq!(resolved.layers.len(), 1);
    let layer = &resolved.layers[0];
    assert_eq!(layer.compression, Compression::Gzip);
    assert!(layer.path.starts_with(cache.root()));
    assert_eq!(layer.size, fs::metadata(&layer.path).unwrap().len());
    assert!(layer.diff_id.is_some());

    let process = merge_process(&resolved.config, None, None, &BTreeMap::new(), None, Some("app")).unwrap();
    assert_eq!(process.args, vec!["/bin/sh".to_string()]);
    assert_eq!(process.env, vec!["PATH=/bin:/usr/bin".to_string()]);

    // Pass 1.
    let summary = scan_layer(layer).unwrap();
    assert!(summary.hardlink_targets.contains("bin/busybox"));
    assert!(summary.opaque_dirs.is_empty());
    assert!(summary.passwd.as_deref().unwrap().starts_with(b"root:x:0:0"));

    // Pass 2.
    let original = fs::read(BUSYBOX).unwrap();
    let mut entries: BTreeMap<String, LayerEntry> = BTreeMap::new();
    let mut order = Vec::new();
    for_each_entry(layer, |entry, data| {
        if entry.path == "bin/busybox" {
            let mut bytes = Vec::new();
            data.read_to_end(&mut bytes)?;
            assert_eq!(bytes, original);
        }
        order.push(entry.path.clone());
        entries.insert(entry.path.clone(), entry.clone());
        Ok(())
    })
    .unwrap();
    let mut sorted = order.clone();
    sorted.sort();
    assert_eq!(order, sorted, "entries are sorted by path");
    let busybox = &entries["bin/busybox"];
    assert_eq!(busybox.kind, EntryKind::File);
    assert_eq!(busybox.size, original.len() as u64);
    assert_eq!(busybox.mode, 0o755);
    assert_eq!(busybox.mtime, 1_700_000_000);
    assert_eq!(entries["bin/sh"].kind, EntryKind::Symlink("busybox".into()));
    assert_eq!(entries["usr/bin/busybox-link"].kind, EntryKind::Hardlink("bin/busybox".into()));
    assert_eq!(entries["bin/suid"].mode, 0o4755);
    assert_eq!(entries["tmp"].mode, 0o1777);
    assert_eq!(entries["tmp"].kind, EntryKind::Dir);
    assert_eq!((entries["home/app"].uid, entries["home/app"].gid), (1000, 1000));
    assert_eq!(entries["dev/null"].kind, EntryKind::CharDev(1, 3));
    assert_eq!(entries["dev/fifo"].kind, EntryKind::Fifo);

    // Users.
    assert_eq!(resolve_user(&resolved.layers, "app").unwrap(), (1000, 1000, vec![10]));
    assert_eq!(resolve_user(&resolved.layers, "").unwrap(), (0, 0, vec![]));
    let err = resolve_user(&resolved.layers, "nobody").unwrap_err();
    assert!(err.contains("nobody"), "{err}");
}

#[test]
fn a_layer_on_a_base_image() {
    let tmp = tempfile::tempdir().unwrap();
    let rootfs = tmp.path().join("rootfs");
    make_rootfs(&rootfs);
    let layout = tmp.path().join("images");
    let base = import_rootfs(&rootfs, &layout, "base", &options()).unwrap();
    let top = tmp.path().join("top");
    fs::create_dir_all(top.join("etc")).unwrap();
    fs::write(top.join("etc/motd"), "on top\n").unwrap();
    fs::write(top.join("etc/.wh.group"), "").unwrap();
    let opts = ImportOptions {
        base: Some("base".into()),
        env: vec!["PATH=/usr/local/bin:/bin".into(), "MODE=top".into()],
        source_date_epoch: Some(1_700_000_000),
        ..Default::default()
    };
    let digest = import_rootfs(&top, &layout, "top", &opts).unwrap();
    assert_ne!(digest, base);
    assert_eq!(import_rootfs(&top, &layout, "top", &opts).unwrap(), digest, "reproducible");

    let cache = BlobCache::new(tmp.path().join("cache"));
    let resolved = resolve(&oci(&layout, "top"), &cache).unwrap();
    assert_eq!(resolved.layers.len(), 2, "the base's layer, then the new one");
    let below = resolve(&oci(&layout, "base"), &cache).unwrap();
    assert_eq!(resolved.layers[0].digest, below.layers[0].digest);
    assert_eq!(resolved.config.cmd, vec!["/bin/sh".to_string()], "the base's Cmd is kept");
    assert_eq!(resolved.config.env, ["PATH=/usr/local/bin:/bin", "MODE=top"], "Env replaced by key");
    let mut added = Vec::new();
    for_each_entry(&resolved.layers[1], |entry, _| {
        added.push((entry.path.clone(), entry.kind.clone()));
        Ok(())
    })
    .unwrap();
    let whiteout = EntryKind::CharDev(0, 0);
    let expected = [("etc", EntryKind::Dir), ("etc/group", whiteout), ("etc/motd", EntryKind::File)];
    assert_eq!(added, expected.map(|(p, k)| (p.to_string(), k)), "the .wh. file is a whiteout");

    let err = import_rootfs(&top, &layout, "x", &ImportOptions { base: Some("nope".into()), ..options() })
        .unwrap_err();
    assert!(format!("{err:#}").contains("no image tagged \"nope\""), "{err:#}");
}

#[test]
fn corrupted_blob_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let rootfs = tmp.path().join("rootfs");
    make_rootfs(&rootfs);
    let layout = tmp.path().join("layout");
    import_rootfs(&rootfs, &layout, "latest", &options()).unwrap();
    let cache = BlobCache::new(tmp.path().join("cache"));
    // Warm the cache first: corruption of the source must be caught even then.
    let good = resolve(&oci(&layout, "latest"), &cache).unwrap();
    let layer_digest = good.layers[0].digest.clone();
    let hex = layer_digest.strip_prefix("sha256:").unwrap();
    let blob: PathBuf = layout.join("blobs/sha256").join(hex);
    let mut bytes = fs::read(&blob).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x40;
    fs::write(&blob, &bytes).unwrap();

    for cache in [cache, BlobCache::new(tmp.path().join("cold"))] {
        let err = resolve(&oci(&layout, "latest"), &cache).unwrap_err();
        assert!(matches!(err, ImageError::BadBlob { .. }), "{err:?}");
        let message = err.to_string();
        assert!(message.contains(&layer_digest), "{message}");
        assert!(message.contains(&blob.display().to_string()), "{message}");
        assert!(message.contains("layer 1"), "{message}");
    }

    // A layer whose diff id does not match is reported while reading it.
    let mut wrong = good.layers[0].clone();
    wrong.diff_id = Some(format!("sha256:{}", "0".repeat(64)));
    let err = for_each_entry(&wrong, |_, _| Ok(())).unwrap_err();
    assert!(format!("{err:#}").contains("uncompressed layer has digest"), "{err:#}");
}

#[test]
fn layout_errors_name_the_fix() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = BlobCache::new(tmp.path().join("cache"));
    let missing = ImageRef::parse("oci:images/busybox", tmp.path()).unwrap();
    let err = resolve(&missing, &cache).unwrap_err().to_string();
    assert!(err.contains("no such directory"), "{err}");
    assert!(err.contains("berth image import ROOTFS --tag NAME -o"), "{err}");

    let rootfs = tmp.path().join("rootfs");
    make_rootfs(&rootfs);
    let layout = tmp.path().join("layout");
    import_rootfs(&rootfs, &layout, "one", &options()).unwrap();
    import_rootfs(&rootfs, &layout, "two", &ImportOptions::default()).unwrap();

    let err = resolve(&oci(&layout, "three"), &cache).unwrap_err().to_string();
    assert!(err.contains("\"three\"") && err.contains("one, two"), "{err}");
    let untagged = ImageRef::parse(&format!("oci:{}", layout.display()), Path::new("/")).unwrap();
    let err = resolve(&untagged, &cache).unwrap_err().to_string();
    assert!(err.contains("holds 2 images") && err.contains("one, two"), "{err}");
    assert!(resolve(&oci(&layout, "two"), &cache).is_ok());

    // A registry reference goes over HTTPS unless marked insecure (port 9: nothing listens).
    let registry = ImageRef::parse("127.0.0.1:9/app:1.27", tmp.path()).unwrap();
    let err = resolve(&registry, &cache).unwrap_err().to_string();
    assert!(err.contains("HTTPS") && err.contains("--insecure-registry 127.0.0.1:9"), "{err}");
}
