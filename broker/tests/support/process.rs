//! One `keel` process with arbitrary arguments, signals, exit status, and
//! the Prometheus text parser of the operations tests (included with
//! `#[path]`). Waits are liveness bounds, generous for a loaded machine.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

pub const WAIT: Duration = Duration::from_secs(180);

/// A running `keel`; SIGKILLed if still running when dropped (after
/// printing the tail of its stderr if the test is failing).
pub struct Keel {
    pub child: Child,
    pub stderr_file: PathBuf,
}

/// The addresses a `keel start` bound, from `listeners.json` in its data dir.
#[allow(dead_code, reason = "not every test binary starts single nodes")]
pub struct Bound {
    pub kafka: u16,
    pub admin: u16,
}

impl Keel {
    /// `keel ARGS` in `cwd` with `env` added; stdout piped, stderr to `stderr_file` (appended).
    pub fn spawn(cwd: &Path, args: &[&str], env: &[(&str, &str)], stderr_file: &Path) -> Keel {
        let stderr = std::fs::OpenOptions::new().create(true).append(true).open(stderr_file).expect("stderr file");
        let child = Command::new(env!("CARGO_BIN_EXE_keel"))
            .args(args)
            .current_dir(cwd)
            .envs(env.iter().copied())
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("spawn keel");
        Keel { child, stderr_file: stderr_file.to_path_buf() }
    }

    /// Waits until this `keel start` recorded the ports it bound in `data_dir`.
    #[allow(dead_code, reason = "not every test binary starts single nodes")]
    pub fn bound(&mut self, data_dir: &Path) -> Bound {
        let started = Instant::now();
        let pid = self.child.id();
        loop {
            let field = |name: &str| {
                let json = std::fs::read_to_string(data_dir.join("listeners.json")).ok()?;
                json.contains(&format!("\"pid\":{pid},")).then_some(())?;
                json.split(&format!("\"{name}\":\"")).nth(1)?.split('"').next()?.rsplit(':').next()?.parse::<u16>().ok()
            };
            if let (Some(kafka), Some(admin)) = (field("kafka"), field("admin")) {
                return Bound { kafka, admin };
            }
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                panic!("keel exited while starting ({status})");
            }
            assert!(started.elapsed() < WAIT, "keel did not bind its ports within {WAIT:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn pid(&self) -> i32 {
        i32::try_from(self.child.id()).expect("pid fits")
    }

    pub fn signal(&self, signal: i32) {
        signal_pid(self.pid(), signal);
    }

    /// Waits for the process to exit (a liveness bound, not a timing).
    pub fn wait_exit(&mut self) -> ExitStatus {
        let started = Instant::now();
        while started.elapsed() < WAIT {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("keel (pid {}) did not exit within {WAIT:?}", self.pid());
    }
}

impl Drop for Keel {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let text = std::fs::read_to_string(&self.stderr_file).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let tail = lines[lines.len().saturating_sub(60)..].join("\n");
            eprintln!("---- keel (pid {}) stderr tail ({}) ----\n{tail}\n---- end ----", self.child.id(), self.stderr_file.display());
        }
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

pub fn signal_pid(pid: i32, signal: i32) {
    // SAFETY: kill(2) with a pid the test started.
    let sent = unsafe { libc::kill(pid, signal) };
    assert_eq!(sent, 0, "kill({pid}, {signal}): {}", std::io::Error::last_os_error());
}

/// Whether a process with this pid still exists (zombies included).
pub fn pid_alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks that the pid exists.
    unsafe { libc::kill(pid, 0) == 0 }
}

/// One sample of a Prometheus text page.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// A parsed page: samples, and each family's # HELP and # TYPE.
#[derive(Debug, Default)]
pub struct Page {
    pub samples: Vec<Sample>,
    pub help: BTreeMap<String, String>,
    pub types: BTreeMap<String, String>,
}

impl Page {
    /// The value of the one sample named `name` whose labels include `labels`.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let matching: Vec<&Sample> =
            self.samples.iter().filter(|s| s.name == name && labels.iter().all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))).collect();
        assert!(matching.len() <= 1, "{name} {labels:?} matches {} samples", matching.len());
        matching.first().map(|s| s.value)
    }
}

/// Parses the text exposition format strictly enough to catch a broken page:
/// every sample's family has # HELP and # TYPE before it, label values are
/// quoted with `\\`, `\"` and `\n` escapes, values are numbers.
pub fn parse_prometheus(text: &str) -> Page {
    let mut page = Page::default();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').expect("# HELP name text");
            assert!(page.help.insert(name.to_string(), help.to_string()).is_none(), "two # HELP for {name}");
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("# TYPE name kind");
            assert!(["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind), "{line}");
            assert!(page.types.insert(name.to_string(), kind.to_string()).is_none(), "two # TYPE for {name}");
            continue;
        }
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let name_end = line.find(['{', ' ']).expect("a sample has a value");
        let name = &line[..name_end];
        let mut labels = BTreeMap::new();
        let mut rest = &line[name_end..];
        if let Some(after) = rest.strip_prefix('{') {
            let mut chars = after.char_indices();
            let mut key = String::new();
            loop {
                let (_, c) = chars.next().expect("unterminated labels");
                match c {
                    '}' => break,
                    ',' => continue,
                    '=' => {
                        assert_eq!(chars.next().map(|(_, c)| c), Some('"'), "label value is quoted: {line}");
                        let mut value = String::new();
                        loop {
                            match chars.next().expect("unterminated label value").1 {
                                '\\' => match chars.next().expect("escape").1 {
                                    'n' => value.push('\n'),
                                    '\\' => value.push('\\'),
                                    '"' => value.push('"'),
                                    other => panic!("bad escape \\{other} in {line}"),
                                },
                                '"' => break,
                                c => value.push(c),
                            }
                        }
                        labels.insert(std::mem::take(&mut key), value);
                    }
                    c => key.push(c),
                }
            }
            let consumed = chars.next().map(|(i, _)| i).unwrap_or(after.len());
            rest = &after[consumed..];
        }
        let value_text = rest.trim();
        let value = match value_text {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            "NaN" => f64::NAN,
            text => text.parse().unwrap_or_else(|_| panic!("bad value in {line}")),
        };
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .filter_map(|suffix| name.strip_suffix(suffix))
            .find(|family| page.types.get(*family).map(String::as_str) == Some("histogram"))
            .unwrap_or(name);
        assert!(page.types.contains_key(family) && page.help.contains_key(family), "{name} before its # HELP and # TYPE");
        page.samples.push(Sample { name: name.to_string(), labels, value });
    }
    page
}

/// What `keel dev` wrote to stderr (in `dir/stderr.log`).
#[allow(dead_code, reason = "not every test binary starts keel dev")]
pub fn stderr_of(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("stderr.log")).unwrap_or_default()
}

/// A `keel dev --nodes 3` cluster, once it listed its nodes.
#[allow(dead_code, reason = "not every test binary starts keel dev")]
pub struct DevCluster {
    pub keel: Keel,
    /// The rest of `keel dev`'s output (kept open: it writes on stop).
    pub stdout: std::io::BufReader<std::process::ChildStdout>,
    pub admin_ports: Vec<u16>,
    pub pids: Vec<i32>,
    /// The Kafka bootstrap servers `keel dev` printed.
    pub bootstrap: String,
}

/// `keel dev --nodes 3` in `dir` on ports it binds itself (port bases 0;
/// data in `dir/cluster`), once it listed its nodes.
#[allow(dead_code, reason = "not every test binary starts keel dev")]
pub fn start_dev(dir: &Path, extra_args: &[&str]) -> DevCluster {
    use std::io::BufRead;
    let mut args = vec!["dev", "--nodes", "3", "--data-dir", "cluster", "--kafka-port-base", "0", "--admin-port-base", "0", "--peer-port-base", "0"];
    args.extend_from_slice(extra_args);
    let mut keel = Keel::spawn(dir, &args, &[], &dir.join("stderr.log"));
    let mut stdout = std::io::BufReader::new(keel.child.stdout.take().expect("piped stdout"));
    let (mut admin_ports, mut pids, mut bootstrap) = (Vec::new(), Vec::new(), String::new());
    let mut line = String::new();
    while stdout.read_line(&mut line).expect("read dev output") > 0 {
        if let Some(rest) = line.trim().strip_prefix("node ") {
            let field = |name: &str| rest.split(name).nth(1).and_then(|r| r.split_whitespace().next()).map(str::to_string);
            let admin_url = field("admin ").expect("admin url");
            admin_ports.push(admin_url.rsplit(':').next().expect("port").parse().expect("port number"));
            pids.push(field("pid ").expect("pid").parse().expect("pid number"));
        }
        if let Some(servers) = line.trim().strip_prefix("bootstrap servers: ") {
            bootstrap = servers.to_string();
        }
        if line.contains("Ctrl-C stops the cluster") {
            break;
        }
        line.clear();
    }
    assert_eq!(admin_ports.len(), 3, "keel dev lists three nodes; stderr: {}", stderr_of(dir));
    assert!(!bootstrap.is_empty(), "keel dev prints its bootstrap servers; stderr: {}", stderr_of(dir));
    DevCluster { keel, stdout, admin_ports, pids, bootstrap }
}
