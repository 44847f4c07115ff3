//! Reading an x86 bzImage (the Linux boot protocol): the kernel release from the setup
//! header, and the kernel configuration embedded with `CONFIG_IKCONFIG`.
//!
//! Layout (Documentation/arch/x86/boot.rst): the setup header sits at 0x1f1; `setup_sects` (at
//! 0x1f1, 0 meaning 4) gives the size of the real-mode part, so the protected-mode code starts
//! at `(setup_sects + 1) * 512`. From boot protocol 2.08 on, `payload_offset` (u32 at 0x248) and
//! `payload_length` (u32 at 0x24c), relative to that start, locate the compressed vmlinux. The
//! embedded configuration is a gzip stream between the markers `IKCFG_ST` and `IKCFG_ED` inside
//! the decompressed vmlinux. gzip and zstd payloads are read (the project kernel is zstd);
//! other compressions are named in the error.

use std::io::Read;

/// The setup header's magic, `HdrS` at 0x202.
const HEADER_MAGIC: &[u8; 4] = b"HdrS";
/// Start of the embedded configuration's gzip stream, in vmlinux.
const IKCONFIG_START: &[u8] = b"IKCFG_ST";
/// Its end.
const IKCONFIG_END: &[u8] = b"IKCFG_ED";
/// A decompressed kernel larger than this is refused (a corrupt or hostile payload).
const MAX_VMLINUX: u64 = 1 << 30;

/// What can go wrong reading a bzImage.
#[derive(Debug, thiserror::Error)]
pub enum BzImageError {
    /// No setup header.
    #[error("not a bzImage (no `HdrS` setup header at 0x202)")]
    NotBzImage,
    /// The boot protocol predates `payload_offset` (2.08).
    #[error("boot protocol {major}.{minor:02} has no payload_offset (needs 2.08 or later)")]
    OldProtocol {
        /// Major version.
        major: u8,
        /// Minor version.
        minor: u8,
    },
    /// The header points outside the file.
    #[error("the payload ({offset}+{length} bytes after 0x{start:x}) lies outside the {size}-byte file")]
    PayloadOutOfRange {
        /// Start of the protected-mode code.
        start: usize,
        /// `payload_offset`.
        offset: usize,
        /// `payload_length`.
        length: usize,
        /// The file's size.
        size: usize,
    },
    /// A compression berth does not read.
    #[error("the kernel payload is {0}-compressed; berth reads gzip and zstd kernels only")]
    UnsupportedCompression(&'static str),
    /// An unknown magic.
    #[error("the kernel payload has an unknown compression (magic {0})")]
    UnknownCompression(String),
    /// The payload does not decompress.
    #[error("decompressing the {compression} payload: {error}")]
    Decompress {
        /// gzip or zstd.
        compression: &'static str,
        /// What the decompressor said.
        error: std::io::Error,
    },
    /// The decompressed kernel is implausibly large.
    #[error("the decompressed kernel exceeds {} MiB", MAX_VMLINUX >> 20)]
    TooLarge,
    /// `IKCFG_ST` without a readable gzip stream and `IKCFG_ED` after it.
    #[error("the embedded configuration (IKCFG_ST … IKCFG_ED) is damaged: {0}")]
    BadEmbeddedConfig(String),
}

/// Whether `data` starts like a bzImage (the setup header's magic is in place).
pub fn is_bzimage(data: &[u8]) -> bool {
    data.get(0x202..0x206) == Some(HEADER_MAGIC)
}

/// The kernel release (`uname -r`) from the setup header: `kernel_version` (u16 at 0x20e) + 0x200
/// points at a NUL-terminated string starting with the release.
pub fn release(image: &[u8]) -> Option<String> {
    if !is_bzimage(image) {
        return None;
    }
    let ptr = u16::from_le_bytes([*image.get(0x20e)?, *image.get(0x20f)?]) as usize + 0x200;
    let text = image.get(ptr..image.len().min(ptr + 256))?;
    let end = text.iter().position(|b| *b == 0).unwrap_or(text.len());
    let full = String::from_utf8_lossy(&text[..end]).to_string();
    full.split_whitespace().next().map(str::to_string)
}

fn u32_at(data: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(data.get(at..at + 4)?.try_into().ok()?))
}

/// The compressed vmlinux inside a bzImage.
pub fn payload(image: &[u8]) -> Result<&[u8], BzImageError> {
    if !is_bzimage(image) {
        return Err(BzImageError::NotBzImage);
    }
    let protocol = u16::from_le_bytes([image[0x206], image[0x207]]);
    if protocol < 0x0208 {
        let [minor, major] = protocol.to_le_bytes();
        return Err(BzImageError::OldProtocol { major, minor });
    }
    let setup_sects = match image[0x1f1] {
        0 => 4,
        n => usize::from(n),
    };
    let start = (setup_sects + 1) * 512;
    let offset = u32_at(image, 0x248).unwrap_or(0) as usize;
    let length = u32_at(image, 0x24c).unwrap_or(0) as usize;
    let out_of_range = || BzImageError::PayloadOutOfRange { start, offset, length, size: image.len() };
    let begin = start.checked_add(offset).ok_or_else(out_of_range)?;
    let end = begin.checked_add(length).ok_or_else(out_of_range)?;
    image.get(begin..end).ok_or_else(out_of_range)
}

/// The decompressed vmlinux of a bzImage (gzip or zstd payloads).
pub fn vmlinux(image: &[u8]) -> Result<Vec<u8>, BzImageError> {
    let payload = payload(image)?;
    let mut out = Vec::new();
    let (name, result) = match payload {
        [0x1f, 0x8b, ..] => {
            // The kernel appends the uncompressed size after the stream; a single-member
            // decoder stops before it.
            let decoder = flate2::read::GzDecoder::new(payload);
            ("gzip", decoder.take(MAX_VMLINUX + 1).read_to_end(&mut out))
        }
        [0x28, 0xb5, 0x2f, 0xfd, ..] => {
            let result = zstd::stream::read::Decoder::new(payload).and_then(|d| {
                // The kernel compresses with `zstd -22 --ultra`: allow any window size, and
                // stop after the frame (the uncompressed size follows it).
                let mut d = d.single_frame();
                d.window_log_max(31)?;
                d.take(MAX_VMLINUX + 1).read_to_end(&mut out)
            });
            ("zstd", result)
        }
        [0xfd, b'7', b'z', b'X', b'Z', 0x00, ..] => return Err(BzImageError::UnsupportedCompression("xz")),
        [0x5d, 0x00, 0x00, ..] => return Err(BzImageError::UnsupportedCompression("lzma")),
        [b'B', b'Z', b'h', ..] => return Err(BzImageError::UnsupportedCompression("bzip2")),
        [0x89, b'L', b'Z', b'O', ..] => return Err(BzImageError::UnsupportedCompression("lzo")),
        [0x02, 0x21, 0x4c, 0x18, ..] => return Err(BzImageError::UnsupportedCompression("lz4")),
        other => {
            let magic = other.iter().take(6).map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(" ");
            return Err(BzImageError::UnknownCompression(magic));
        }
    };
    result.map_err(|error| BzImageError::Decompress { compression: name, error })?;
    if out.len() as u64 > MAX_VMLINUX {
        return Err(BzImageError::TooLarge);
    }
    Ok(out)
}

/// The kernel configuration embedded in a bzImage (`CONFIG_IKCONFIG`), or `None` when the
/// kernel was built without it.
pub fn embedded_config(image: &[u8]) -> Result<Option<String>, BzImageError> {
    let vmlinux = vmlinux(image)?;
    // The marker string may also occur elsewhere (say in a symbol table): the real one is
    // followed by a gzip stream.
    let mut from = 0;
    while let Some(at) = find(&vmlinux[from..], IKCONFIG_START).map(|i| from + i) {
        let data = &vmlinux[at + IKCONFIG_START.len()..];
        from = at + 1;
        if !data.starts_with(&[0x1f, 0x8b]) {
            continue;
        }
        let end = find(data, IKCONFIG_END).ok_or_else(|| {
            BzImageError::BadEmbeddedConfig("no IKCFG_ED after the gzip stream".to_string())
        })?;
        let mut text = String::new();
        flate2::read::GzDecoder::new(&data[..end])
            .take(64 << 20)
            .read_to_string(&mut text)
            .map_err(|e| BzImageError::BadEmbeddedConfig(e.to_string()))?;
        return Ok(Some(text));
    }
    Ok(None)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::io::Write;

    /// gzip of `data`, as the kernel build makes it.
    pub(crate) fn gzip(data: &[u8]) -> Vec<u8> {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(data).unwrap();
        enc.finish().unwrap()
    }

    /// A synthetic bzImage: a setup header (protocol 2.15, release string), `setup_sects`
    /// sectors of setup, then a protected-mode part whose payload is `vmlinux` compressed with
    /// `compression` ("gzip" or "zstd") followed by the uncompressed size, as the kernel's
    /// `size_append` does.
    pub(crate) fn synthetic_bzimage(vmlinux: &[u8], compression: &str, setup_sects: u8) -> Vec<u8> {
        let mut payload = match compression {
            "gzip" => gzip(vmlinux),
            "zstd" => zstd::encode_all(vmlinux, 19).unwrap(),
            other => panic!("no {other} in tests"),
        };
        payload.extend_from_slice(&u32::try_from(vmlinux.len()).unwrap().to_le_bytes());
        bzimage_with_payload(&payload, setup_sects)
    }

    /// A bzImage whose payload is `payload` as is.
    pub(crate) fn bzimage_with_payload(payload: &[u8], setup_sects: u8) -> Vec<u8> {
        let sects = if setup_sects == 0 { 4 } else { usize::from(setup_sects) };
        let start = (sects + 1) * 512;
        let offset = 0x3a0;
        let mut image = vec![0u8; start + offset];
        image[0x1f1] = setup_sects;
        image[0x1fe..0x200].copy_from_slice(&[0x55, 0xaa]);
        image[0x202..0x206].copy_from_slice(HEADER_MAGIC);
        image[0x206..0x208].copy_from_slice(&0x020fu16.to_le_bytes());
        image[0x20e..0x210].copy_from_slice(&0x0300u16.to_le_bytes());
        let version = b"6.1.99-berth (builder@host) #1 SMP\0";
        image[0x500..0x500 + version.len()].copy_from_slice(version);
        image[0x248..0x24c].copy_from_slice(&u32::try_from(offset).unwrap().to_le_bytes());
        image[0x24c..0x250].copy_from_slice(&u32::try_from(payload.len()).unwrap().to_le_bytes());
        image.extend_from_slice(payload);
        image.extend_from_slice(&[0xcc; 100]); // the rest of the kernel: never read
        image
    }

    /// A vmlinux holding `config` as `CONFIG_IKCONFIG` embeds it, after a decoy marker.
    pub(crate) fn vmlinux_with_config(config: &str) -> Vec<u8> {
        let mut v = b"\x7fELF....code....IKCFG_ST is a symbol name here....".to_vec();
        v.extend_from_slice(IKCONFIG_START);
        v.extend_from_slice(&gzip(config.as_bytes()));
        v.extend_from_slice(IKCONFIG_END);
        v.extend_from_slice(&[0u8; 4096]);
        v
    }

    #[test]
    fn release_from_a_setup_header() {
        let mut img = vec![0u8; 0x400];
        img[0x202..0x206].copy_from_slice(b"HdrS");
        img[0x20e..0x210].copy_from_slice(&0x100u16.to_le_bytes());
        img[0x300..0x320].copy_from_slice(b"6.1.0-56-cloud-amd64 (debian) #1");
        assert_eq!(release(&img).as_deref(), Some("6.1.0-56-cloud-amd64"));
        assert_eq!(release(&[0u8; 16]), None);
    }

    #[test]
    fn embedded_config_from_zstd_and_gzip_kernels() {
        let config = "CONFIG_OVERLAY_FS=y\n# CONFIG_MEMCG is not set\n";
        for (compression, sects) in [("zstd", 0), ("zstd", 7), ("gzip", 1)] {
            let image = synthetic_bzimage(&vmlinux_with_config(config), compression, sects);
            assert_eq!(release(&image).as_deref(), Some("6.1.99-berth"));
            assert_eq!(embedded_config(&image).unwrap().as_deref(), Some(config), "{compression} {sects}");
        }
    }

    #[test]
    fn a_kernel_without_ikconfig_has_no_config() {
        let image = synthetic_bzimage(b"\x7fELF no config in here", "zstd", 4);
        assert_eq!(embedded_config(&image).unwrap(), None);
    }

    #[test]
    fn other_compressions_are_named() {
        for (magic, name) in [
            (&[0x02, 0x21, 0x4c, 0x18, 0, 0][..], "lz4"),
            (&[0xfd, b'7', b'z', b'X', b'Z', 0], "xz"),
            (&[0x5d, 0, 0, 0x80, 0, 0], "lzma"),
            (b"BZh91A", "bzip2"),
            (&[0x89, b'L', b'Z', b'O', 0, 0], "lzo"),
        ] {
            let e = embedded_config(&bzimage_with_payload(magic, 4)).unwrap_err();
            assert!(e.to_string().contains(&format!("{name}-compressed")), "{e}");
        }
        let e = embedded_config(&bzimage_with_payload(b"\x00\x01\x02\x03", 4)).unwrap_err();
        assert!(e.to_string().contains("unknown compression (magic 00 01 02 03)"), "{e}");
    }

    #[test]
    fn bad_headers_are_errors() {
        assert!(matches!(payload(&[0u8; 1024]), Err(BzImageError::NotBzImage)));
        let mut image = synthetic_bzimage(b"x", "zstd", 4);
        image[0x206..0x208].copy_from_slice(&0x0206u16.to_le_bytes());
        assert!(matches!(payload(&image), Err(BzImageError::OldProtocol { major: 2, minor: 6 })));
        let mut image = synthetic_bzimage(b"x", "zstd", 4);
        image[0x24c..0x250].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(payload(&image), Err(BzImageError::PayloadOutOfRange { .. })));
        let mut image = synthetic_bzimage(&vmlinux_with_config("CONFIG_A=y\n"), "gzip", 4);
        let len = image.len();
        image.truncate(len - 120); // cut into the compressed stream
        image[0x24c..0x250]
            .copy_from_slice(&u32::try_from(len - 120 - 5 * 512 - 0x3a0).unwrap().to_le_bytes());
        assert!(matches!(embedded_config(&image), Err(BzImageError::Decompress { .. })));
    }
}
