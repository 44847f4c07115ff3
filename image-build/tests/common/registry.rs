//! A real registry for the tests: Debian's `docker-registry` on 127.0.0.1, with its own
//! storage, killed on drop.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A `docker-registry serve` process with its own storage; killed on drop.
pub struct Registry {
    child: Child,
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// Its storage directory.
    pub storage: PathBuf,
    /// The test directory it was started in.
    pub dir: PathBuf,
}

impl Registry {
    /// Starts a registry in `dir/registry`, with `auth` (YAML lines under `auth:`, indented
    /// two spaces) when given.
    pub fn start(dir: &Path, auth: Option<&str>) -> Registry {
        Registry::start_with(dir, auth, false)
    }

    /// Starts a registry in `dir/registry` that logs every request (see [`Registry::requests`]).
    pub fn start_logging_requests(dir: &Path) -> Registry {
        Registry::start_with(dir, None, true)
    }

    fn start_with(dir: &Path, auth: Option<&str>, access_log: bool) -> Registry {
        let root = dir.join("registry");
        let storage = root.join("storage");
        std::fs::create_dir_all(&storage).unwrap();
        let port = free_port();
        let mut config = format!(
            "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: {}\nstorage:\n  filesystem:\n    \
             rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n  secret: berth-test\n",
            !access_log,
            storage.display()
        );
        if let Some(auth) = auth {
            config.push_str(&format!("auth:\n{auth}"));
        }
        let config_path = root.join("config.yml");
        std::fs::write(&config_path, config).unwrap();
        let log = std::fs::File::create(root.join("registry.log")).unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config_path)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("run docker-registry (apt-get install docker-registry)");
        let registry = Registry { child, port, storage, dir: dir.to_path_buf() };
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "the registry did not start: {}", registry.log());
            std::thread::sleep(Duration::from_millis(50));
        }
        registry
    }

    /// `127.0.0.1:PORT`.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The requests it logged (`METHOD PATH`), in order, when started by
    /// [`Registry::start_logging_requests`].
    pub fn requests(&self) -> Vec<String> {
        self.log()
            .lines()
            .filter_map(|l| {
                let quoted = l.split('"').nth(1)?;
                let mut words = quoted.split_whitespace();
                Some(format!("{} {}", words.next()?, words.next()?))
            })
            .collect()
    }

    /// What it logged.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("registry/registry.log")).unwrap_or_default()
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
