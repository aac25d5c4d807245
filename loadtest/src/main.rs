//! `loadtest`: load generator for hub.
//!
//! - `idle`: hold N authenticated sockets; report the hub's resident memory per socket.
//! - `fanout`: N subscribers over R channels, publishers at a paced rate; report deliveries/s,
//!   end-to-end latency, the hub's CPU per delivered frame and its memory before and after.
//! - `chat`: N matched pairs (made through the server API) sending `chat.send` at a paced total
//!   rate; report the sender's ack latency, the delivery latency to the peer, messages/s, errors,
//!   messages lost, and the hub's CPU and memory.
//! - `sfu`: meeting rooms of N webrtc-rs participants through the hub's signaling, publishing
//!   synthetic audio and VP8 video and receiving each other's; forwarded packets/s, loss and
//!   one-way latency per forwarded stream, the hub's CPU per forwarded packet.
//! - `sfu-core`: the forwarding core (`sfu::Forwarder`) alone in this process, packets per core.
//!
//! One process may hold only so many open files and one source address only ~28k ephemeral
//! ports, so the coordinator re-executes itself as hidden `worker` processes, each binding its
//! sockets to 127.0.0.(2+k), and talks to them over stdin/stdout pipes (see `ipc`). Everything
//! is bounded: every wait has a deadline, every loop a count and a time limit. Loopback only.

mod chat;
mod conn;
mod fanout;
mod hubstats;
mod idle;
mod ipc;
mod pool;
mod publisher;
mod report;
mod sfu;
mod sys;
mod worker;

use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};

use crate::conn::CodecArg;
use crate::hubstats::HubApi;
use crate::ipc::WorkerPlan;
use crate::publisher::Via;

#[derive(Parser)]
#[command(name = "loadtest", version, about = "Load generator for hub (loopback only)")]
struct Cli {
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Subcommand)]
enum Scenario {
    /// Hold N authenticated idle sockets and report the hub's RSS per socket.
    Idle(IdleArgs),
    /// N subscribers over R channels; publishers at a given rate; latency and hub CPU per frame.
    Fanout(FanoutArgs),
    /// N matched pairs exchanging chat messages at a given rate; ack and delivery latency.
    Chat(ChatArgs),
    /// Meeting rooms of webrtc-rs peers through the hub's SFU; forwarded packets, loss, latency.
    Sfu(sfu::SfuArgs),
    /// The SFU's forwarding core alone, in-process: forwarded packets per core.
    SfuCore(sfu::core::CoreArgs),
    /// Internal: one worker process (plan and commands on stdin, events on stdout).
    #[command(hide = true)]
    Worker,
}

/// Options of every scenario.
#[derive(Args, Clone, Debug)]
pub struct Common {
    /// Hub WebSocket URL; repeat or comma-separate for several hubs (sockets go round-robin).
    #[arg(long = "url", value_delimiter = ',', default_value = "ws://127.0.0.1:8000/ws")]
    pub urls: Vec<String>,
    /// Hub HTTP base for /api/v1 (stats; API publishing); one per hub, figures are summed.
    #[arg(long = "api", value_delimiter = ',', default_value = "http://127.0.0.1:8000")]
    pub apis: Vec<String>,
    /// Sockets to open (subscribers, in fanout; the chat scenario opens 2 × --pairs instead).
    #[arg(long, default_value_t = 1000)]
    pub connections: u64,
    /// Worker processes; default: one per --per-worker sockets.
    #[arg(long)]
    pub workers: Option<usize>,
    /// Sockets per worker when --workers is not given.
    #[arg(long, default_value_t = 10_000)]
    pub per_worker: u64,
    /// Tokio threads per worker (1: a current-thread runtime).
    #[arg(long, default_value_t = 1)]
    pub worker_threads: usize,
    /// HS256 secret the hub accepts (tokens are minted here).
    #[arg(long, default_value = "dev-secret-change-me-0123456789")]
    pub secret: String,
    /// API key for /api/v1.
    #[arg(long, default_value = "dev-api-key-change-me-0123456789")]
    pub api_key: String,
    #[arg(long, value_enum, default_value_t = CodecArg::Json)]
    pub codec: CodecArg,
    /// Socket handshakes in flight at once, per worker.
    #[arg(long, default_value_t = 200)]
    pub connect_concurrency: usize,
    /// Seconds allowed for all sockets to come up.
    #[arg(long, default_value_t = 180)]
    pub connect_timeout: u64,
    /// Read buffer of each client socket, bytes.
    #[arg(long, default_value_t = 8192)]
    pub client_read_buffer: usize,
    /// Seconds to wait after the sockets are up before taking figures.
    #[arg(long, default_value_t = 3.0)]
    pub settle: f64,
    /// Print the final report as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct IdleArgs {
    #[command(flatten)]
    pub common: Common,
    /// Seconds to keep the sockets open after the figure is taken.
    #[arg(long, default_value_t = 0.0)]
    pub hold: f64,
}

#[derive(Args, Debug)]
pub struct FanoutArgs {
    #[command(flatten)]
    pub common: Common,
    /// Channels; subscriber g subscribes to channel g % channels.
    #[arg(long, default_value_t = 10)]
    pub channels: u64,
    /// Publications per second, all publishers together (deliveries/s = rate × subscribers
    /// per channel).
    #[arg(long, default_value_t = 100.0)]
    pub rate: f64,
    /// Seconds of publishing.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// At most this many publications (default: rate × duration).
    #[arg(long)]
    pub count: Option<u64>,
    /// Publisher connections (or API request streams).
    #[arg(long, default_value_t = 1)]
    pub publishers: usize,
    #[arg(long, value_enum, default_value_t = Via::Ws)]
    pub publish_via: Via,
    /// Hub WebSocket URL(s) the publishers use (default: --url). With subscribers on other
    /// nodes of a cluster this measures "publish on node A, receive on node B".
    #[arg(long = "publish-url", value_delimiter = ',')]
    pub publish_urls: Vec<String>,
    /// Hub HTTP base(s) for `--publish-via api` (default: --api, which still gives the stats).
    #[arg(long = "publish-api", value_delimiter = ',')]
    pub publish_apis: Vec<String>,
    /// Size of each publication's data, as JSON.
    #[arg(long, default_value_t = 100)]
    pub payload_bytes: usize,
    /// Seconds to wait, after the last publication, for deliveries still under way.
    #[arg(long, default_value_t = 10.0)]
    pub drain: f64,
    /// Channel names are PREFIX + number; the bench config's namespace is "bench".
    #[arg(long, default_value = "bench:")]
    pub channel_prefix: String,
}

#[derive(Args, Debug)]
pub struct ChatArgs {
    /// Side A of every pair connects to --url; --api lists every hub whose stats count.
    #[command(flatten)]
    pub common: Common,
    /// Matched pairs: 2 × pairs sockets, each subscribed to its own `user:{id}`.
    #[arg(long, default_value_t = 500)]
    pub pairs: u64,
    /// Hub WebSocket URL(s) for side B of every pair (default: --url). With another node of a
    /// cluster, every message crosses nodes.
    #[arg(long = "peer-url", value_delimiter = ',')]
    pub peer_urls: Vec<String>,
    /// Hub HTTP base where the matches are made (default: the first --api).
    #[arg(long)]
    pub match_api: Option<String>,
    /// Matches created at once before the run.
    #[arg(long, default_value_t = 32)]
    pub setup_concurrency: usize,
    /// Messages per second, all senders together.
    #[arg(long, default_value_t = 1000.0)]
    pub rate: f64,
    /// Seconds of sending.
    #[arg(long, default_value_t = 20.0)]
    pub duration: f64,
    /// Only side A sends; side B only receives (default: both sides send).
    #[arg(long)]
    pub one_way: bool,
    /// Bytes of text in each message.
    #[arg(long, default_value_t = 100)]
    pub text_bytes: usize,
    /// Seconds to wait, after the last send, for acknowledgements and deliveries.
    #[arg(long, default_value_t = 10.0)]
    pub drain: f64,
    /// Users are PREFIX{pair}a and PREFIX{pair}b (default: "lt" + the time + "-", new users each
    /// run).
    #[arg(long)]
    pub user_prefix: Option<String>,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.scenario {
        Scenario::Worker => worker::main(),
        Scenario::Idle(args) => runtime().and_then(|rt| rt.block_on(idle::run(args))),
        Scenario::Fanout(args) => runtime().and_then(|rt| rt.block_on(fanout::run(args))),
        Scenario::Chat(args) => runtime().and_then(|rt| rt.block_on(chat::run(args))),
        Scenario::Sfu(args) => runtime().and_then(|rt| rt.block_on(sfu::run(args))),
        Scenario::SfuCore(args) => sfu::core::run(args),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("loadtest: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?)
}

impl Common {
    pub fn workers(&self) -> usize {
        self.workers.unwrap_or_else(|| self.connections.div_ceil(self.per_worker.max(1)) as usize).max(1)
    }

    pub fn api(&self) -> anyhow::Result<HubApi> {
        HubApi::new(&self.apis, &self.api_key)
    }

    /// The plan every worker starts from; `pool::plans` fills in its share.
    pub fn worker_template(&self, channels: u64, prefix: &str, run_secs: f64) -> WorkerPlan {
        let connect_ms = self.connect_timeout * 1000;
        WorkerPlan {
            index: 0,
            source_ip: std::net::Ipv4Addr::LOCALHOST,
            urls: self.urls.clone(),
            first: 0,
            count: 0,
            channels,
            channel_prefix: prefix.to_string(),
            codec: self.codec,
            secret: self.secret.clone(),
            token_ttl_secs: 3600 + run_secs as u64,
            connect_concurrency: self.connect_concurrency,
            handshake_timeout_ms: 15_000,
            connect_deadline_ms: connect_ms,
            // Connect, settle, run, drain, report, plus a margin: then it goes by itself.
            lifetime_ms: connect_ms + ((self.settle * 2.0 + run_secs) * 1000.0) as u64 + 60_000,
            read_buffer_bytes: self.client_read_buffer,
            threads: self.worker_threads,
            chat: None,
        }
    }
}

/// A progress bar on stderr (drawn only on a terminal).
pub fn bar(len: u64, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template(&format!("{what:>10} [{{bar:40}}] {{pos}}/{{len}} {{msg}} ({{elapsed}})"))
            .expect("static template")
            .progress_chars("=> "),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

/// Logs a phase on stderr (stdout carries the report).
pub fn phase(bar: &ProgressBar, text: impl AsRef<str>) {
    bar.suspend(|| eprintln!("loadtest: {}", text.as_ref()));
}
