//! Real Redis and PostgreSQL servers for tests, each on a free loopback port, stopped on drop.

use std::{
    io::{BufRead, BufReader},
    net::TcpListener,
    path::PathBuf,
    process::{Child, Command, Stdio},
};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

pub struct RedisServer {
    child: Option<Child>,
    pub port: u16,
    extra: Vec<String>,
}

impl RedisServer {
    pub fn start() -> RedisServer {
        Self::start_with(&[])
    }

    /// Starts `redis-server` with no persistence; returns once it accepts connections.
    pub fn start_with(extra: &[&str]) -> RedisServer {
        let mut r =
            RedisServer { child: None, port: free_port(), extra: extra.iter().map(|s| s.to_string()).collect() };
        r.launch();
        r
    }

    fn launch(&mut self) {
        let mut child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--logfile", "", "--loglevel", "notice"])
            .args(&self.extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is installed (.ci/run installs it)");
        let out = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(out).lines();
        loop {
            let line = lines.next().expect("redis-server exited early").expect("read");
            if line.contains("Ready to accept connections") {
                break;
            }
        }
        std::thread::spawn(move || for _ in lines {});
        self.child = Some(child);
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills the server (SIGKILL) and waits for it to go.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same port, empty.
    pub fn restart(&mut self) {
        self.stop();
        self.launch();
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A private PostgreSQL cluster (initdb + pg_ctl) in a temp folder.
pub struct Postgres {
    dir: PathBuf,
    pub port: u16,
    running: bool,
}

fn pg_bin(name: &str) -> PathBuf {
    for version in ["17", "16", "15", "14", "13"] {
        let p = PathBuf::from(format!("/usr/lib/postgresql/{version}/bin/{name}"));
        if p.exists() {
            return p;
        }
    }
    PathBuf::from(name)
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().map(|o| o.stdout.starts_with(b"0")).unwrap_or(false)
}

/// Runs a PostgreSQL tool, as the `postgres` user when we are root (PostgreSQL refuses root).
fn pg_command(name: &str) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(pg_bin(name));
        c
    } else {
        Command::new(pg_bin(name))
    }
}

impl Postgres {
    pub fn start() -> Postgres {
        let dir = super::temp_path("pg");
        std::fs::create_dir_all(&dir).unwrap();
        if is_root() {
            let parent = dir.parent().unwrap();
            for d in [parent, dir.as_path()] {
                assert!(Command::new("chown").arg("postgres:postgres").arg(d).status().unwrap().success());
            }
        }
        let data = dir.join("data");
        let ok = pg_command("initdb")
            .args(["-D", data.to_str().unwrap(), "-U", "postgres", "--auth=trust", "-E", "UTF8"])
            .stdout(Stdio::null())
            .status()
            .expect("initdb is installed (.ci/run installs postgresql)");
        assert!(ok.success(), "initdb failed");
        let mut pg = Postgres { dir, port: free_port(), running: false };
        pg.launch();
        pg
    }

    fn launch(&mut self) {
        let data = self.dir.join("data");
        let opts = format!("-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off", self.port, self.dir.display());
        let ok = pg_command("pg_ctl")
            .args([
                "-D",
                data.to_str().unwrap(),
                "-o",
                &opts,
                "-l",
                self.dir.join("log").to_str().unwrap(),
                "-w",
                "start",
            ])
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(ok.success(), "pg_ctl start failed");
        self.running = true;
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Creates a database and returns its URL.
    pub fn database(&self, name: &str) -> String {
        let ok = pg_command("psql")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", "postgres", "-q", "-c"])
            .arg(format!("CREATE DATABASE {name}"))
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(ok.success(), "create database");
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }

    pub fn stop(&mut self) {
        if self.running {
            let data = self.dir.join("data");
            let _ = pg_command("pg_ctl")
                .args(["-D", data.to_str().unwrap(), "-m", "immediate", "-w", "stop"])
                .stdout(Stdio::null())
                .status();
            self.running = false;
        }
    }

    pub fn restart(&mut self) {
        self.stop();
        self.launch();
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A Redis Cluster of `n` masters (no replicas), made with `redis-cli --cluster create`.
pub struct RedisCluster {
    pub nodes: Vec<RedisServer>,
}

impl RedisCluster {
    pub fn start(n: usize) -> RedisCluster {
        let dir = super::temp_path("redis-cluster");
        let nodes: Vec<RedisServer> = (0..n)
            .map(|i| {
                let conf = dir.with_file_name(format!("nodes-{i}.conf"));
                RedisServer::start_with(&["--cluster-enabled", "yes", "--cluster-config-file", conf.to_str().unwrap()])
            })
            .collect();
        let addrs: Vec<String> = nodes.iter().map(|r| format!("127.0.0.1:{}", r.port)).collect();
        let ok = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addrs)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdout(Stdio::null())
            .status()
            .expect("redis-cli is installed (.ci/run installs redis-tools)");
        assert!(ok.success(), "cluster create");
        // `--cluster create` returns once slots are assigned; every node must agree before use.
        for r in &nodes {
            loop {
                let out =
                    Command::new("redis-cli").args(["-p", &r.port.to_string(), "cluster", "info"]).output().unwrap();
                if String::from_utf8_lossy(&out.stdout).contains("cluster_state:ok") {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
        }
        RedisCluster { nodes }
    }

    pub fn urls_toml(&self) -> String {
        let urls: Vec<String> = self.nodes.iter().map(|r| format!("\"{}\"", r.url())).collect();
        format!("[{}]", urls.join(","))
    }
}
