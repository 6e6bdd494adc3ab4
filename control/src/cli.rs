//! Command-line definitions (clap) and dispatch.

use clap::{Parser, Subcommand, ValueEnum};
use std::process::ExitCode;

#[derive(Parser, Debug)]
#[command(
    name = "vswitch",
    version,
    about = "Userspace virtual switch and NAT dataplane for containers"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the forwarding pipeline on in-memory ports and report its speed.
    Bench(BenchArgs),
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScenarioArg {
    L2,
    Vlan,
    Nat,
    All,
}

#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// Which traffic to run.
    #[arg(long, value_enum, default_value = "all")]
    pub scenario: ScenarioArg,
    /// Frame size in bytes (Ethernet header included, no FCS).
    #[arg(long, default_value_t = 64)]
    pub frame_size: usize,
    /// MAC addresses learned in the FDB.
    #[arg(long, default_value_t = 1024)]
    pub macs: usize,
    /// Flows for the NAT scenario.
    #[arg(long, default_value_t = 1024)]
    pub flows: usize,
    /// Seconds per scenario.
    #[arg(long, default_value_t = 3.0, allow_negative_numbers = true)]
    pub seconds: f64,
    /// Worker threads (one core each).
    #[arg(long, default_value_t = 1)]
    pub workers: usize,
    /// Print one JSON document.
    #[arg(long)]
    pub json: bool,
}

/// An error the CLI reports as one line.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Bench(#[from] dataplane::bench::BenchError),
}

pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            // Help and version go to stdout with success; a usage error is one line.
            if !e.use_stderr() {
                let _ = e.print();
                return ExitCode::SUCCESS;
            }
            eprintln!("vswitch: {}", usage_line(&e));
            return ExitCode::from(2);
        }
    };
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vswitch: {e}");
            ExitCode::FAILURE
        }
    }
}

/// clap's first line without its "error: " prefix, plus a pointer to --help.
fn usage_line(e: &clap::Error) -> String {
    let text = e.render().to_string();
    let first = text
        .lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("invalid arguments")
        .trim();
    let first = first.strip_prefix("error: ").unwrap_or(first);
    format!("{first} (see --help)")
}

fn run(cli: Cli) -> Result<(), CliError> {
    match cli.command {
        Command::Bench(a) => bench(a),
    }
}

fn bench(a: BenchArgs) -> Result<(), CliError> {
    use dataplane::bench::{self, Params, Scenario};
    let scenarios: Vec<Scenario> = match a.scenario {
        ScenarioArg::L2 => vec![Scenario::L2],
        ScenarioArg::Vlan => vec![Scenario::Vlan],
        ScenarioArg::Nat => vec![Scenario::Nat],
        ScenarioArg::All => vec![Scenario::L2, Scenario::Vlan, Scenario::Nat],
    };
    let mut results = Vec::new();
    let mut skipped = Vec::new();
    for s in scenarios {
        let p = Params {
            scenario: s,
            frame_size: a.frame_size,
            macs: a.macs,
            flows: a.flows,
            seconds: a.seconds,
            workers: a.workers,
        };
        match bench::run(&p) {
            Ok(o) => results.push(o),
            Err(bench::BenchError::Unavailable(name)) if a.scenario == ScenarioArg::All => {
                skipped.push(name)
            }
            Err(e) => return Err(e.into()),
        }
    }
    if a.json {
        let v = serde_json::json!({
            "results": results.iter().map(|o| serde_json::json!({
                "scenario": o.scenario,
                "mpps_per_core": round(o.mpps_per_core, 3),
                "ns_per_frame": round(o.ns_per_frame, 2),
                "frames": o.frames,
                "workers": o.workers,
                "frame_size": o.frame_size,
                "fdb_entries": o.fdb_entries,
            })).collect::<Vec<_>>(),
            "skipped": skipped,
        });
        println!("{v}");
    } else {
        println!(
            "{:<6} {:>8} {:>14} {:>10} {:>12} {:>8}",
            "scenario", "workers", "Mpps/core", "ns/frame", "frames", "FDB"
        );
        for o in &results {
            println!(
                "{:<8} {:>6} {:>14.2} {:>10.1} {:>12} {:>8}",
                o.scenario, o.workers, o.mpps_per_core, o.ns_per_frame, o.frames, o.fdb_entries
            );
        }
        for s in skipped {
            println!("{s:<8} skipped: not available in this build");
        }
    }
    Ok(())
}

fn round(x: f64, digits: i32) -> f64 {
    let m = 10f64.powi(digits);
    (x * m).round() / m
}
