//! Command line of `poolbench`: parsing, validation into a [`Plan`], and the
//! one-line error convention (bad arguments: one line on stderr, exit 2).

use clap::Parser;
use pipeline::HdrPoolStrategy;
use std::path::PathBuf;

/// Header-pool lock contention benchmark: strategies x threads x GRO factor.
#[derive(Parser, Debug)]
#[command(name = "poolbench", version)]
pub struct Cli {
    /// Strategies to run, comma separated: locked, batched, packed, ring.
    #[arg(long, default_value = "locked,batched,packed,ring")]
    pub strategies: String,
    /// Thread counts, comma separated (1 = RX and application on one
    /// thread). Default: 1 up to the cores present.
    #[arg(long)]
    pub threads: Option<String>,
    /// GRO factors (segments per coalesced packet), comma separated, 1..=64.
    #[arg(long, default_value = "1,16")]
    pub gro: String,
    /// Measuring time per cell and repeat, in milliseconds (1..=60000).
    #[arg(long, default_value_t = 300)]
    pub duration_ms: u64,
    /// Repeats per cell (1..=100); the table shows median and min.
    #[arg(long, default_value_t = 3)]
    pub repeats: usize,
    /// Real headers per hand-off to an application thread and per
    /// give_back call (1..=1024).
    #[arg(long, default_value_t = 64)]
    pub batch: usize,
    /// Header slots in the pool.
    #[arg(long, default_value_t = 32768)]
    pub buffers: usize,
    /// Header slot size in bytes (64..=256 for packed).
    #[arg(long, default_value_t = 64)]
    pub slot: usize,
    /// Descriptors (posted header slots) in the simulated RX ring (8..=4096).
    #[arg(long, default_value_t = 512)]
    pub ring: usize,
    /// Do not pin threads to cores.
    #[arg(long)]
    pub no_pin: bool,
    /// Print one JSON array of rows instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Write an SVG plot of throughput against threads to FILE.
    #[arg(long, value_name = "FILE")]
    pub plot: Option<PathBuf>,
}

/// Validated settings.
#[derive(Debug)]
pub struct Plan {
    pub strategies: Vec<HdrPoolStrategy>,
    pub threads: Vec<usize>,
    pub gro: Vec<usize>,
    pub duration_ms: u64,
    pub repeats: usize,
    pub batch: usize,
    pub buffers: usize,
    pub slot: usize,
    pub ring: usize,
    pub pin: bool,
    pub json: bool,
    pub plot: Option<PathBuf>,
}

/// Prints help / version normally; any other parse error as one line on
/// stderr, then exits 2.
pub fn exit_on_parse_error(e: clap::Error) -> ! {
    use clap::error::ErrorKind;
    if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
        let _ = e.print();
        std::process::exit(0);
    }
    let text = e.to_string();
    let line = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("bad arguments");
    eprintln!("poolbench: {}", line.trim_start_matches("error: "));
    std::process::exit(2);
}

/// CPUs this process may run on, in order.
pub fn cores() -> Vec<usize> {
    let mut ids: Vec<usize> = core_affinity::get_core_ids()
        .unwrap_or_default()
        .into_iter()
        .map(|c| c.id)
        .collect();
    if ids.is_empty() {
        ids.push(0);
    }
    ids
}

fn list<T>(
    what: &str,
    s: &str,
    parse: impl Fn(&str) -> Result<T, String>,
) -> Result<Vec<T>, String> {
    let v: Vec<T> = s
        .split(',')
        .map(str::trim)
        .filter(|x| !x.is_empty())
        .map(parse)
        .collect::<Result<_, _>>()?;
    if v.is_empty() {
        return Err(format!("--{what} needs at least one value"));
    }
    Ok(v)
}

fn number(what: &'static str, lo: usize, hi: usize) -> impl Fn(&str) -> Result<usize, String> {
    move |s| match s.parse::<usize>() {
        Ok(n) if (lo..=hi).contains(&n) => Ok(n),
        _ => Err(format!(
            "--{what} values must be integers in {lo}..={hi}, not {s:?}"
        )),
    }
}

fn check(what: &str, v: usize, lo: usize, hi: usize) -> Result<usize, String> {
    if (lo..=hi).contains(&v) {
        Ok(v)
    } else {
        Err(format!("--{what} must be in {lo}..={hi}, not {v}"))
    }
}

impl Cli {
    pub fn plan(&self, cores: &[usize]) -> Result<Plan, String> {
        let strategies = list("strategies", &self.strategies, |s| {
            s.parse::<HdrPoolStrategy>()
        })?;
        let n = cores.len();
        let threads = match &self.threads {
            Some(t) => list("threads", t, number("threads", 1, n))?,
            None => (1..=n).collect(),
        };
        let gro = list("gro", &self.gro, number("gro", 1, 64))?;
        let ring = check("ring", self.ring, 8, 4096)?;
        let plan = Plan {
            strategies,
            threads,
            gro,
            duration_ms: check("duration-ms", self.duration_ms as usize, 1, 60_000)? as u64,
            repeats: check("repeats", self.repeats, 1, 100)?,
            batch: check("batch", self.batch, 1, 1024)?,
            buffers: check("buffers", self.buffers, 1024, 1 << 24)?,
            slot: check("slot", self.slot, 64, 960)?,
            ring,
            pin: !self.no_pin,
            json: self.json,
            plot: self.plot.clone(),
        };
        if !plan.slot.is_multiple_of(64)
            || (plan.strategies.contains(&HdrPoolStrategy::Packed) && plan.slot > 256)
        {
            return Err(format!(
                "--slot must be a multiple of 64, at most 256 with packed, not {}",
                plan.slot
            ));
        }
        // Room for the ring plus every hand-off in flight, even when each
        // real header pins a whole packed page.
        let max_threads = plan.threads.iter().copied().max().unwrap_or(1);
        let per_page = 4096 / plan.slot;
        let max_gro = plan.gro.iter().copied().max().unwrap_or(1);
        let in_flight = (max_threads.saturating_sub(1) * 9 + 1) * plan.batch;
        let pages_needed =
            ring.div_ceil(per_page) + 2 + in_flight.div_ceil((per_page / max_gro).max(1));
        if plan.buffers / per_page < pages_needed {
            return Err(format!(
                "--buffers {} is too small for this ring, batch and thread count: need at least {}",
                plan.buffers,
                pages_needed * per_page
            ));
        }
        Ok(plan)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(args: &[&str]) -> Result<Plan, String> {
        let cli = Cli::try_parse_from(std::iter::once("poolbench").chain(args.iter().copied()))
            .map_err(|e| e.to_string())?;
        cli.plan(&[0, 1])
    }

    #[test]
    fn defaults_sweep_everything() {
        let p = plan(&[]).unwrap();
        assert_eq!(p.strategies, HdrPoolStrategy::ALL.to_vec());
        assert_eq!(
            (p.threads, p.gro, p.duration_ms),
            (vec![1, 2], vec![1, 16], 300)
        );
    }

    #[test]
    fn bad_values_are_refused_with_a_message() {
        for args in [
            &["--strategies", "spin"][..],
            &["--threads", "3"],
            &["--threads", "0"],
            &["--gro", "0"],
            &["--gro", "x"],
            &["--duration-ms", "0"],
            &["--repeats", "0"],
            &["--batch", "2000"],
            &["--slot", "512"],
            &["--buffers", "1024"],
            &["--strategies", ","],
        ] {
            assert!(plan(args).is_err(), "{args:?}");
        }
        assert!(plan(&["--strategies", "ring", "--slot", "512"]).is_ok());
    }
}
