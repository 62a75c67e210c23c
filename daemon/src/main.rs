//! r1d: the r1 training daemon. See `r1d --help`, docs/daemon.md and docs/DESIGN.md.

use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::Actor;
use actix_web::web;
use anyhow::{bail, Context};
use clap::Parser;
use rand::RngCore;

use futures_util::future::{select, Either};
use r1_daemon::exposure::{
    check_token_file, connection_cap, listen_policy, prepare_state_dir, raise_descriptor_limit,
};
use r1_daemon::inputs::InputLimits;
use r1_daemon::metrics::Metrics;
use r1_daemon::notify;
use r1_daemon::runs::{Hub, LiveRuns, LoadingRuns, SuspendAll};
use r1_daemon::server::{serve, AppState, DownloadSlots, ServerLimits};
use r1_daemon::store::Store;

/// The r1 training daemon: runs training stages, keeps their state in sled, serves the control
/// API and /metrics on 127.0.0.1 (another address only with --allow-remote).
#[derive(Parser)]
#[command(version)]
struct Args {
    /// Folder for state (sled store, run outputs, the token). systemd's $STATE_DIRECTORY when set.
    #[arg(long, env = "STATE_DIRECTORY", default_value = "/var/lib/r1d")]
    state_dir: PathBuf,
    /// Address of the HTTP API (port 0: any free port; the bound address goes to STATE_DIR/r1d.addr).
    #[arg(long, default_value = "127.0.0.1:7878")]
    listen: SocketAddr,
    /// Bearer-token file (created with mode 0600 if missing). Default: STATE_DIR/token.
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// Seconds a shutdown waits for runs to checkpoint before exiting anyway.
    #[arg(long, default_value_t = 120)]
    stop_timeout: u64,
    /// Allow a --listen address other than loopback. r1d speaks plain HTTP: put a TLS reverse
    /// proxy in front of it.
    #[arg(long)]
    allow_remote: bool,
    /// Most client connections held open at once (also capped at a quarter of the descriptor
    /// limit); further clients wait in the listen backlog.
    #[arg(long, default_value_t = 256)]
    max_connections: usize,
    /// Most checkpoint-file downloads served at once; more get 503 with Retry-After.
    #[arg(long, default_value_t = 4)]
    max_downloads: usize,
    /// Largest data file (prompts, SFT set) a run may name, in bytes: they are read into memory.
    #[arg(long, default_value_t = r1_daemon::inputs::DEFAULT_MAX_DATA_BYTES)]
    max_data_bytes: u64,
}

/// Reads the token, or creates one (32 random bytes, hex) readable by the owner only. An
/// existing file that others can read is refused: whoever reads it controls r1d.
fn token(path: &Path) -> anyhow::Result<String> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            check_token_file(path)?;
            let token = text.trim().to_string();
            if token.len() < 16 {
                bail!(
                    "token file {}: the token is shorter than 16 characters",
                    path.display()
                );
            }
            Ok(token)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut bytes = [0u8; 32];
            rand::rng().fill_bytes(&mut bytes);
            let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .with_context(|| format!("creating token file {}", path.display()))?;
            writeln!(file, "{token}")?;
            file.sync_all()?;
            Ok(token)
        }
        Err(e) => Err(e).with_context(|| format!("reading token file {}", path.display())),
    }
}

/// Writes `text` to `path` atomically (temp file, fsync, rename).
fn write_atomic(path: &Path, text: &str) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)
}

fn run(args: Args) -> anyhow::Result<()> {
    if let Some(warning) = listen_policy(args.listen, args.allow_remote)? {
        tracing::warn!("{warning}");
        eprintln!("r1d: warning: {warning}");
    }
    let state_dir = prepare_state_dir(&args.state_dir)?;
    let token_path = args.token_file.unwrap_or_else(|| state_dir.join("token"));
    let token = token(&token_path)?;
    let descriptors = raise_descriptor_limit().context("reading the descriptor limit")?;
    let limits = ServerLimits {
        max_connections: connection_cap(descriptors, args.max_connections),
        ..ServerLimits::default()
    };
    tracing::info!(
        descriptors,
        max_connections = limits.max_connections,
        "descriptor limit"
    );
    let store = Store::open(&state_dir.join("state.sled"))?;
    let listener =
        TcpListener::bind(args.listen).with_context(|| format!("listening on {}", args.listen))?;
    let addr = listener.local_addr()?;
    write_atomic(&state_dir.join("r1d.addr"), &format!("{addr}\n"))?;
    let metrics = Arc::new(Metrics::new(env!("CARGO_PKG_VERSION")));
    tracing::info!(
        "r1d {} listening on http://{addr}, state in {}",
        env!("CARGO_PKG_VERSION"),
        state_dir.display()
    );
    eprintln!(
        "r1d: listening on http://{addr} (state {})",
        state_dir.display()
    );

    let stop_timeout = Duration::from_secs(args.stop_timeout);
    let system = actix::System::new();
    system.block_on(async move {
        let inputs = InputLimits {
            max_data_bytes: args.max_data_bytes,
        };
        let hub = Hub::new(store.clone(), metrics.clone(), state_dir.clone())
            .with_input_limits(inputs)
            .start();
        let state = web::Data::new(AppState {
            store,
            hub: hub.clone(),
            metrics,
            token,
            downloads: DownloadSlots::new(args.max_downloads),
        });
        let server = serve(listener, state, limits)?;
        let handle = server.handle();
        actix::spawn(server);
        // Signals are ours from here on, also while resumed runs load.
        let mut signalled = Box::pin(signal_received()?);
        // READY once the API serves and every resumed run has loaded its model.
        let loaded = async {
            while !matches!(hub.send(LoadingRuns).await, Ok(0) | Err(_)) {
                actix::clock::sleep(Duration::from_millis(20)).await;
            }
        };
        if let Either::Left(((), _)) = select(Box::pin(loaded), signalled.as_mut()).await {
            notify::ready();
            if let Some(interval) = notify::watchdog_interval() {
                // Pinged from the event loop: a hung loop stops the pings and systemd restarts us.
                actix::spawn(async move {
                    let mut tick = actix::clock::interval(interval / 2);
                    loop {
                        tick.tick().await;
                        notify::watchdog_ping();
                    }
                });
            }
            signalled.await;
        }
        eprintln!(
            "r1d: stopping: checkpointing runs (at most {}s)",
            stop_timeout.as_secs()
        );
        notify::stopping();
        hub.do_send(SuspendAll);
        let began = Instant::now();
        while began.elapsed() < stop_timeout {
            match hub.send(LiveRuns).await {
                Ok(0) | Err(_) => break,
                Ok(_) => actix::clock::sleep(Duration::from_millis(50)).await,
            }
        }
        handle.stop(true).await;
        anyhow::Ok(())
    })?;
    eprintln!("r1d: stopped");
    Ok(())
}

/// Registers for SIGTERM and SIGINT; the future ends when either arrives.
fn signal_received() -> std::io::Result<impl std::future::Future<Output = ()>> {
    use actix_web::rt::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        select(Box::pin(term.recv()), Box::pin(int.recv())).await;
    })
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "r1d=info,r1_daemon=info,r1_actors=info".into()),
        )
        .with_writer(std::io::stderr)
        // Colour codes only on a terminal: a redirected log (a file, journald) stays plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let args = Args::parse();
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("r1d: error: {e:#}");
            ExitCode::from(1)
        }
    }
}
