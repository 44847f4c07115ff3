//! Layer entry conversion: whiteouts, opaque directories, PAX names, path safety.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use berth_image_build::layer::{for_each_entry, scan_layer, EntryKind, LayerEntry};
use berth_image_build::source::LayerBlob;

fn dir(b: &mut tar::Builder<Vec<u8>>, path: &str) {
    let mut h = common::tar_header(tar::EntryType::Directory, 0o755, 0);
    b.append_data(&mut h, path, &[][..]).unwrap();
}

fn layer(dir: &Path, tar: Vec<u8>) -> LayerBlob {
    common::layer_blob(dir, tar)
}

fn entries(blob: &LayerBlob) -> anyhow::Result<Vec<LayerEntry>> {
    let mut out = Vec::new();
    for_each_entry(blob, |e, _| {
        out.push(e.clone());
        Ok(())
    })?;
    Ok(out)
}

#[test]
fn whiteouts_and_opaque_dirs() {
    let tmp = tempfile::tempdir().unwrap();
    let mut b = tar::Builder::new(Vec::new());
    dir(&mut b, "./");
    common::tar_file(&mut b, "./.wh.file", b"");
    dir(&mut b, "dir/");
    common::tar_file(&mut b, "dir/.wh..wh..opq", b"");
    common::tar_file(&mut b, "dir/kept", b"new");
    dir(&mut b, "a/");
    common::tar_file(&mut b, "a/.wh.b", b"");
    common::tar_file(&mut b, "a/.wh..wh.plnk", b"");
    let long_dir = "x".repeat(120);
    let long_name = format!("{long_dir}/{}", "y".repeat(150));
    common::tar_pax(&mut b, &[("path", &format!("{long_dir}/")), ("uid", "3000000")]);
    dir(&mut b, "short-dir-name");
    common::tar_pax(&mut b, &[("path", &long_name), ("linkpath", &"t".repeat(200))]);
    let mut h = common::tar_header(tar::EntryType::Symlink, 0o777, 0);
    h.set_link_name("short").unwrap();
    b.append_data(&mut h, "short-link-name", &[][..]).unwrap();
    let blob = layer(tmp.path(), b.into_inner().unwrap());

    let summary = scan_layer(&blob).unwrap();
    assert_eq!(summary.opaque_dirs, vec!["dir".to_string()]);
    assert_eq!(summary.whiteouts, vec!["file".to_string(), "a/b".to_string()]);
    assert!(summary.hides("dir/old") && summary.hides("file") && !summary.hides("dir"));

    let list = entries(&blob).unwrap();
    let by_path: BTreeMap<&str, &LayerEntry> = list.iter().map(|e| (e.path.as_str(), e)).collect();
    assert_eq!(
        list.iter().map(|e| e.path.as_str()).collect::<Vec<_>>(),
        vec!["file", "dir", "dir/kept", "a", "a/b", long_dir.as_str(), long_name.as_str()]
    );
    for whiteout in ["file", "a/b"] {
        let e = by_path[whiteout];
        assert_eq!(e.kind, EntryKind::CharDev(0, 0));
        assert_eq!(e.mode, 0);
        assert!(e.is_whiteout());
    }
    assert_eq!(by_path[long_dir.as_str()].kind, EntryKind::Dir);
    assert_eq!(by_path[long_dir.as_str()].uid, 3_000_000);
    assert_eq!(by_path[long_name.as_str()].kind, EntryKind::Symlink("t".repeat(200)));
    assert_eq!(by_path["dir/kept"].size, 3);
    assert_eq!(by_path["dir/kept"].mtime, 42);
}

#[test]
fn escaping_paths_are_rejected() {
    let tmp = tempfile::tempdir().unwrap();
    for bad in ["../etc/passwd", "/../x", "a/../../b"] {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = common::tar_header(tar::EntryType::Regular, 0o644, 1);
        // `set_path` refuses `..`: write the name bytes directly.
        h.as_old_mut().name[..bad.len()].copy_from_slice(bad.as_bytes());
        h.set_cksum();
        b.append(&h, &b"x"[..]).unwrap();
        let blob = layer(tmp.path(), b.into_inner().unwrap());
        let err = format!("{:#}", entries(&blob).unwrap_err());
        assert!(err.contains("`..`"), "{bad}: {err}");
        assert!(scan_layer(&blob).is_err());
    }
    // A hard link must point to an earlier entry of the same layer.
    let mut b = tar::Builder::new(Vec::new());
    let mut h = common::tar_header(tar::EntryType::Link, 0o644, 0);
    b.append_link(&mut h, "link", "missing").unwrap();
    let blob = layer(tmp.path(), b.into_inner().unwrap());
    let err = format!("{:#}", scan_layer(&blob).unwrap_err());
    assert!(err.contains("missing"), "{err}");
}

#[test]
fn duplicates_are_emitted_in_order() {
    let tmp = tempfile::tempdir().unwrap();
    let mut b = tar::Builder::new(Vec::new());
    common::tar_file(&mut b, "etc/passwd", b"old:x:1:1::/:/bin/sh\n");
    common::tar_file(&mut b, "etc/passwd", b"new:x:2:2::/:/bin/sh\n");
    let blob = layer(tmp.path(), b.into_inner().unwrap());
    let mut contents = Vec::new();
    for_each_entry(&blob, |e, data| {
        let mut s = String::new();
        data.read_to_string(&mut s)?;
        contents.push((e.path.clone(), s));
        Ok(())
    })
    .unwrap();
    assert_eq!(contents.len(), 2);
    assert!(contents[1].1.starts_with("new"));
    let summary = scan_layer(&blob).unwrap();
    assert!(summary.passwd.unwrap().starts_with(b"new"));
    assert_eq!(
        berth_image_build::layer::resolve_user(std::slice::from_ref(&blob), "new").unwrap(),
        (2, 2, vec![])
    );
}
