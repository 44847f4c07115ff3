//! berth's dm-verity hash tree is the one `veritysetup format --no-superblock` writes (the
//! reference implementation, from `cryptsetup-bin`): the same hash blocks, byte for byte, and
//! the same root hash, for trees of one to three levels.

use std::process::Command;

use berth_image_build::verity::{hash_tree, BLOCK_SIZE};

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn the_tree_and_root_hash_are_veritysetups() {
    let dir = tempfile::tempdir().unwrap();
    let (data_path, hash_path) = (dir.path().join("data"), dir.path().join("hash"));
    let salt: [u8; 32] = std::array::from_fn(|i| u8::try_from(i * 13 % 256).unwrap());
    for blocks in [1usize, 2, 127, 128, 129, 300, 128 * 128 + 1] {
        let data: Vec<u8> =
            (0..blocks * BLOCK_SIZE).map(|i| u8::try_from((i * 31 + i / 4096) % 256).unwrap()).collect();
        std::fs::write(&data_path, &data).unwrap();
        let _ = std::fs::remove_file(&hash_path);
        let out = Command::new("veritysetup")
            .arg("format")
            .arg("--no-superblock")
            .arg(format!("--salt={}", hex(&salt)))
            .args(["--hash=sha256", "--data-block-size=4096", "--hash-block-size=4096", "--format=1"])
            .arg(&data_path)
            .arg(&hash_path)
            .output()
            .expect("run veritysetup (apt-get install cryptsetup-bin)");
        assert!(out.status.success(), "veritysetup: {}", String::from_utf8_lossy(&out.stderr));
        let text = String::from_utf8_lossy(&out.stdout);
        let root = text
            .lines()
            .find_map(|l| l.strip_prefix("Root hash:"))
            .map(str::trim)
            .unwrap_or_else(|| panic!("no root hash in {text}"));
        let ours = hash_tree(&mut data.as_slice(), salt).unwrap();
        assert_eq!(hex(&ours.root), root, "root hash of {blocks} blocks");
        assert_eq!(ours.data_blocks, blocks as u64);
        let theirs = std::fs::read(&hash_path).unwrap_or_default();
        assert!(
            ours.tree == theirs,
            "hash blocks of {blocks} data blocks differ ({} vs {} bytes)",
            ours.tree.len(),
            theirs.len()
        );
    }
}
