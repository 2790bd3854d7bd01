//! `quill runs`: compare run directories; `quill plot`: their losses on one picture.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use quill_train::{
    PlotRun, PlotX, RunRecords, RunSummary, RunsPlot, differing_settings, human_count, is_run_dir,
};
use serde_json::{Value, json};

use crate::cli::{PlotArgs, PlotAxis, RunsArgs};

/// Where `quill runs` looks without arguments.
const RUNS: &str = "runs";

pub fn list(args: RunsArgs) -> Result<()> {
    let dirs = match args.dirs.is_empty() {
        true => children(Path::new(RUNS))?,
        false => args.dirs,
    };
    let mut runs: Vec<RunSummary> = Vec::new();
    for dir in &dirs {
        if let Some(run) = RunSummary::read(dir) {
            runs.push(run);
            continue;
        }
        // A directory of runs (`runs/`) stands for the runs inside it.
        let inside = match dir.is_dir() {
            true => children(dir)?,
            false => Vec::new(),
        };
        match inside.iter().any(|d| is_run_dir(d)) {
            true => runs.extend(inside.iter().filter_map(|d| RunSummary::read(d))),
            false => eprintln!("{}: not a run directory, skipped", dir.display()),
        }
    }
    // Best validation loss first; runs without one last.
    runs.sort_by(|a, b| {
        let key = |r: &RunSummary| r.best_val_loss.map_or(f32::INFINITY, |(l, _)| l);
        key(a).total_cmp(&key(b))
    });
    if args.json {
        let mut value = serde_json::to_value(&runs)?;
        if args.diff {
            value = json!({"runs": value, "differing_settings": differing(&runs)});
        }
        println!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(());
    }
    if runs.is_empty() {
        println!("no runs");
        return Ok(());
    }
    match args.diff {
        false => print_table(&runs),
        true => print_diff(&runs),
    }
    Ok(())
}

/// The directories directly inside `dir`, sorted.
fn children(dir: &Path) -> Result<Vec<PathBuf>> {
    let entries = std::fs::read_dir(dir).with_context(|| {
        format!(
            "{}: no runs here (name run directories as arguments)",
            dir.display()
        )
    })?;
    let mut dirs: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    Ok(dirs)
}

fn print_table(runs: &[RunSummary]) {
    let rows: Vec<[String; 11]> = runs
        .iter()
        .map(|r| {
            [
                r.path.display().to_string(),
                r.preset.clone().unwrap_or_else(|| "-".into()),
                r.data.as_ref().map_or("-".into(), |d| d.to_string()),
                r.data.as_ref().map_or("-".into(), |d| d.tokenizer.clone()),
                r.params.map_or("-".into(), |p| human_count(p as f64)),
                match r.max_iters {
                    Some(m) => format!("{}/{m}", r.steps),
                    None => r.steps.to_string(),
                },
                r.best_val_loss
                    .map_or("-".into(), |(l, _)| format!("{l:.4}")),
                r.best_val_loss.map_or("-".into(), |(_, i)| i.to_string()),
                r.tokens_per_s.map_or("-".into(), |t| format!("{t:.0}")),
                r.wall_s.map_or("-".into(), duration),
                r.state.to_string(),
            ]
        })
        .collect();
    let header = [
        "run",
        "preset",
        "data",
        "tokenizer",
        "params",
        "steps",
        "best val",
        "at step",
        "tokens/s",
        "wall",
        "state",
    ]
    .map(String::from);
    print_rows(&header, &rows);
}

/// Columns padded to their widest cell, numbers right-aligned.
fn print_rows<const N: usize>(header: &[String; N], rows: &[[String; N]]) {
    let widths: Vec<usize> = (0..N)
        .map(|c| {
            rows.iter()
                .map(|r| r[c].chars().count())
                .chain([header[c].chars().count()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    for row in std::iter::once(header).chain(rows) {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .enumerate()
            .map(|(c, (cell, &w))| match c {
                0..=3 => format!("{cell:<w$}"),
                _ if c + 1 == N => cell.clone(),
                _ => format!("{cell:>w$}"),
            })
            .collect();
        println!("{}", cells.join("  ").trim_end());
    }
}

/// `84.2 s`, `12m 05s`, `3h 02m`.
fn duration(seconds: f64) -> String {
    let s = seconds.round() as u64;
    match s {
        s if s < 60 => format!("{seconds:.1} s"),
        s if s < 3600 => format!("{}m {:02}s", s / 60, s % 60),
        s => format!("{}h {:02}m", s / 3600, s % 3600 / 60),
    }
}

/// The settings that differ between the runs, as JSON: `{setting: [value per run]}`.
fn differing(runs: &[RunSummary]) -> Value {
    let with: Vec<&RunSummary> = runs.iter().filter(|r| r.settings.is_some()).collect();
    let configs: Vec<_> = with.iter().filter_map(|r| r.settings.as_ref()).collect();
    let mut out = serde_json::Map::new();
    for (name, values) in differing_settings(&configs) {
        out.insert(
            name,
            Value::Array(
                values
                    .into_iter()
                    .map(|v| v.unwrap_or(Value::Null))
                    .collect(),
            ),
        );
    }
    Value::Object(out)
}

fn print_diff(runs: &[RunSummary]) {
    let with: Vec<&RunSummary> = runs.iter().filter(|r| r.settings.is_some()).collect();
    for r in runs.iter().filter(|r| r.settings.is_none()) {
        eprintln!(
            "{}: no checkpoint yet, so no settings to compare",
            r.path.display()
        );
    }
    let configs: Vec<_> = with.iter().filter_map(|r| r.settings.as_ref()).collect();
    let mut differ = differing_settings(&configs);
    // What they trained on, beside the settings.
    let data = |pick: fn(&quill_train::DataRecord) -> String| -> Vec<Option<Value>> {
        let values = with
            .iter()
            .map(|r| r.data.as_ref().map(|d| Value::String(pick(d))));
        values.collect()
    };
    for (name, values) in [
        ("data", data(|d| d.to_string())),
        ("tokenizer", data(|d| d.tokenizer.clone())),
    ] {
        if values.iter().any(|v| *v != values[0]) {
            differ.insert(0, (name.to_string(), values));
        }
    }
    if differ.is_empty() {
        println!("the runs have the same settings");
        return;
    }
    let show = |v: &Option<Value>| match v {
        Some(Value::String(s)) => s.clone(),
        Some(v) => v.to_string(),
        None => "-".into(),
    };
    // One column per run: setting, then each run's value.
    let width = differ.iter().map(|(n, _)| n.len()).max().unwrap_or(0);
    let columns: Vec<usize> = with
        .iter()
        .enumerate()
        .map(|(i, r)| {
            differ
                .iter()
                .map(|(_, v)| show(&v[i]).len())
                .chain([r.path.display().to_string().len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let header: Vec<String> = with
        .iter()
        .zip(&columns)
        .map(|(r, &w)| format!("{:<w$}", r.path.display().to_string()))
        .collect();
    println!("{:<width$}  {}", "setting", header.join("  ").trim_end());
    for (name, values) in &differ {
        let cells: Vec<String> = values
            .iter()
            .zip(&columns)
            .map(|(v, &w)| format!("{:<w$}", show(v)))
            .collect();
        println!("{name:<width$}  {}", cells.join("  ").trim_end());
    }
}

pub fn plot(args: PlotArgs) -> Result<()> {
    let mut runs = Vec::new();
    for dir in &args.runs {
        let Some((summary, RunRecords { steps, evals })) = RunSummary::read_with(dir) else {
            bail!("{}: not a run directory", dir.display());
        };
        if steps.is_empty() && evals.is_empty() {
            bail!("{}: the run has recorded nothing yet", dir.display());
        }
        let tokens_per_step = summary.settings.as_ref().map(|c| c.tokens_per_iter());
        if tokens_per_step.is_none() && args.x != PlotAxis::Step {
            bail!(
                "{}: no checkpoint yet, so its tokens a step are unknown: plot it with --x step",
                dir.display()
            );
        }
        runs.push(PlotRun {
            name: dir.display().to_string(),
            steps,
            evals,
            tokens_per_step: tokens_per_step.unwrap_or(0),
        });
    }
    let title = format!(
        "{} runs · val loss (points) and smoothed train loss",
        runs.len()
    );
    let picture = RunsPlot {
        title: &title,
        runs: &runs,
        x: match args.x {
            PlotAxis::Step => PlotX::Step,
            PlotAxis::Tokens => PlotX::Tokens,
            PlotAxis::Time => PlotX::Time,
        },
        log_y: args.log_y,
    };
    let out = args.out.unwrap_or_else(free_plot_name);
    let bytes = match out.extension().and_then(|e| e.to_str()) {
        Some("png") => picture.png()?,
        Some("svg") => picture.svg()?.into_bytes(),
        _ => bail!("--out {}: name a .png or .svg file", out.display()),
    };
    quill_data::atomic::write_file(&out, &bytes)?;
    eprintln!("wrote {}", out.display());
    Ok(())
}

/// `plot.png`, or the first of `plot-2.png`, `plot-3.png`, … that does not exist: the
/// default never replaces a file.
fn free_plot_name() -> PathBuf {
    std::iter::once(PathBuf::from("plot.png"))
        .chain((2..).map(|n| PathBuf::from(format!("plot-{n}.png"))))
        .find(|p| p.symlink_metadata().is_err())
        .expect("some numbered name is free")
}
