//! Containers' output in files: `/var/log/berth/NAME.log`, rotated by size, a bounded number
//! kept (`[log] max_size`, `max_files`). Writes go to a filesystem in memory or on the data
//! disk and never wait for a reader, so a slow or absent reader never blocks a service.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::PathBuf;

use berth_schema::config::LogConfig;

/// Where the files are.
pub const LOG_DIR: &str = "/var/log/berth";

/// The open log files.
pub struct LogFiles {
    dir: PathBuf,
    max_size: u64,
    max_files: u32,
    open: BTreeMap<String, (File, u64)>,
    broken: bool,
}

impl LogFiles {
    /// Log files as configured; `max_size = 0` keeps none.
    pub fn new(cfg: &LogConfig) -> LogFiles {
        let dir = PathBuf::from(LOG_DIR);
        let broken = cfg.max_size > 0 && std::fs::create_dir_all(&dir).is_err();
        LogFiles { dir, max_size: cfg.max_size, max_files: cfg.max_files, open: BTreeMap::new(), broken }
    }

    fn path(&self, name: &str, index: u32) -> PathBuf {
        if index == 0 {
            self.dir.join(format!("{name}.log"))
        } else {
            self.dir.join(format!("{name}.log.{index}"))
        }
    }

    /// Appends one line of `name`'s output, rotating first if it would pass the size.
    pub fn write(&mut self, name: &str, line: &[u8]) {
        if self.max_size == 0 || self.broken {
            return;
        }
        let len = line.len() as u64 + 1;
        let full = self.open.get(name).is_some_and(|(_, size)| size + len > self.max_size && *size > 0);
        if full {
            self.open.remove(name);
            self.rotate(name);
        }
        if !self.open.contains_key(name) {
            let path = self.path(name, 0);
            match OpenOptions::new().create(true).append(true).open(&path) {
                Ok(f) => {
                    let size = f.metadata().map(|m| m.len()).unwrap_or(0);
                    self.open.insert(name.to_string(), (f, size));
                }
                Err(_) => return,
            }
        }
        if let Some((file, size)) = self.open.get_mut(name) {
            let mut buf = Vec::with_capacity(line.len() + 1);
            buf.extend_from_slice(line);
            buf.push(b'\n');
            if file.write_all(&buf).is_ok() {
                *size += len;
            }
        }
    }

    /// NAME.log → NAME.log.1 → … → NAME.log.max_files; the oldest is dropped.
    fn rotate(&self, name: &str) {
        let _ = std::fs::remove_file(self.path(name, self.max_files));
        for i in (0..self.max_files).rev() {
            let _ = std::fs::rename(self.path(name, i), self.path(name, i + 1));
        }
        if self.max_files == 0 {
            let _ = std::fs::remove_file(self.path(name, 0));
        }
    }
}
