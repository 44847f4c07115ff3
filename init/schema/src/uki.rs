//! Reading a UKI's sections (a PE image: systemd's stub with `.cmdline`, `.linux`, `.initrd`
//! …): what PID 1 and the updater need of the UKIs on the EFI system partition — the root hash
//! their command line carries. Bounds-checked; no PE library.

use crate::verity::VeritySpec;

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at.checked_add(2)?)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at.checked_add(4)?)?.try_into().ok()?))
}

/// The bytes of section `name` (at most 8 bytes long) of the PE image `pe`: its virtual size,
/// or its size in the file if smaller.
pub fn section<'a>(pe: &'a [u8], name: &str) -> Option<&'a [u8]> {
    if pe.get(..2)? != b"MZ" || name.len() > 8 {
        return None;
    }
    let header = usize::try_from(u32_at(pe, 0x3c)?).ok()?;
    if pe.get(header..header.checked_add(4)?)? != b"PE\0\0" {
        return None;
    }
    let coff = header + 4;
    let sections = usize::from(u16_at(pe, coff + 2)?);
    let optional = usize::from(u16_at(pe, coff + 16)?);
    let table = coff + 20 + optional;
    let mut wanted = [0u8; 8];
    wanted[..name.len()].copy_from_slice(name.as_bytes());
    (0..sections).find_map(|i| {
        let at = table.checked_add(i.checked_mul(40)?)?;
        if pe.get(at..at.checked_add(8)?)? != wanted {
            return None;
        }
        let virtual_size = usize::try_from(u32_at(pe, at + 8)?).ok()?;
        let raw_size = usize::try_from(u32_at(pe, at + 16)?).ok()?;
        let start = usize::try_from(u32_at(pe, at + 20)?).ok()?;
        pe.get(start..start.checked_add(virtual_size.min(raw_size))?)
    })
}

/// The `berth.verity=` parameters on the UKI's command line.
pub fn verity(pe: &[u8]) -> Result<VeritySpec, String> {
    let cmdline = section(pe, ".cmdline").ok_or("not a UKI: no .cmdline section")?;
    let text = String::from_utf8_lossy(cmdline);
    VeritySpec::from_cmdline(text.trim_end_matches('\0'))
        .ok_or("the UKI's command line has no berth.verity=")?
}

#[cfg(test)]
mod tests {
    use super::*;

    fn le32(v: usize) -> [u8; 4] {
        u32::try_from(v).unwrap().to_le_bytes()
    }

    /// A PE image with one section per `(name, data)`.
    fn pe(sections: &[(&str, &[u8])]) -> Vec<u8> {
        let header = 0x80;
        let table = header + 4 + 20 + 0xf0;
        let mut data_at = table + 40 * sections.len();
        let mut out = vec![0u8; data_at];
        out[..2].copy_from_slice(b"MZ");
        out[0x3c..0x40].copy_from_slice(&le32(header));
        out[header..header + 4].copy_from_slice(b"PE\0\0");
        out[header + 6..header + 8].copy_from_slice(&u16::try_from(sections.len()).unwrap().to_le_bytes());
        out[header + 20..header + 22].copy_from_slice(&0xf0u16.to_le_bytes());
        for (i, (name, data)) in sections.iter().enumerate() {
            let at = table + 40 * i;
            out[at..at + name.len()].copy_from_slice(name.as_bytes());
            out[at + 8..at + 12].copy_from_slice(&le32(data.len()));
            out[at + 16..at + 20].copy_from_slice(&le32(data.len().div_ceil(512) * 512));
            out[at + 20..at + 24].copy_from_slice(&le32(data_at));
            data_at += data.len().div_ceil(512) * 512;
        }
        for (_, data) in sections {
            let mut padded = data.to_vec();
            padded.resize(data.len().div_ceil(512) * 512, 0);
            out.extend_from_slice(&padded);
        }
        out
    }

    #[test]
    fn the_command_line_section_gives_the_root_hash() {
        let cmdline = format!("console=ttyS0 berth.verity=8:{}:{}\0", "ab".repeat(32), "cd".repeat(32));
        let image = pe(&[(".osrel", b"ID=berth\n"), (".cmdline", cmdline.as_bytes())]);
        assert_eq!(section(&image, ".osrel").unwrap(), b"ID=berth\n");
        let spec = verity(&image).unwrap();
        assert_eq!(spec.data_blocks, 8);
        assert_eq!(spec.root, [0xab; 32]);
        assert!(section(&image, ".linux").is_none());
        assert!(verity(&pe(&[(".cmdline", b"quiet")])).unwrap_err().contains("berth.verity"));
        // Truncated or not PE at all: no section, no panic.
        for cut in [0, 1, 0x40, 0x90, image.len() - 300] {
            let _ = section(&image[..cut], ".cmdline");
        }
        assert!(section(b"not a PE file at all", ".cmdline").is_none());
    }
}
