//! `quill train`: preset + config file + flags → the trainer, with a progress bar,
//! Ctrl-C handling, and a sample at the end.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Result, anyhow, bail};
use burn::tensor::backend::AutodiffBackend;
use quill_data::Dataset;
use quill_train::{
    Agreement, Batch, Checkpoint, DEFAULT_PRESET, EvalRecord, FloatType, MemoryEstimate, Observer,
    OutRequest, Outcome, Preset, Run, RunConfig, RunDir, RunSecret, Sources, StepReport,
    TrainError, Trainer, Which, World, check_run_dir, checkpoint_in, holds_run, human_bytes, train,
};

use crate::backend::{self, Job};
use crate::cli::{ParallelArgs, TrainArgs};
use crate::progress::Progress;
use quill_data::source::DataSource;

static STOP: AtomicBool = AtomicBool::new(false);

/// Tokens of the sample printed when training ends: 500 characters, or 150 subword
/// tokens (about as much text: GPT-2 averages 3.3 characters per token on tiny
/// Shakespeare).
const FINAL_SAMPLE_CHARS: usize = 500;
const FINAL_SAMPLE_SUBWORDS: usize = 150;

/// The data-parallel world the flags (or torchrun's variables) describe; `None` for one
/// process.
pub fn world(args: &ParallelArgs) -> Result<Option<World>> {
    let size = args.world_size.unwrap_or(1);
    let rank = args.rank.unwrap_or(0);
    if size == 1 && rank == 0 {
        return Ok(None);
    }
    let coordinator = (args.coordinator.clone()).unwrap_or_else(quill_train::coordinator_from_env);
    let timeout = Duration::from_secs(args.collective_timeout);
    let world = World::new(size, rank, &coordinator, timeout)?.with_listen_any(args.listen_any);
    Ok(Some(match secret(args)? {
        Some(secret) => world.with_secret(secret),
        None => world,
    }))
}

/// Set by `quill launch` in each rank's environment: it prefixes the rank's lines.
pub const LAUNCHED_VAR: &str = "QUILL_LAUNCHED";

/// The environment variable that carries the run's secret to its ranks.
pub const SECRET_VAR: &str = "QUILL_SECRET";

/// The run's secret: from `--secret-file`, else from `QUILL_SECRET`.
fn secret(args: &ParallelArgs) -> Result<Option<RunSecret>> {
    let text = match &args.secret_file {
        Some(file) => {
            super::warn_if_others_can_read(file, "--secret-file");
            quill_data::files::read_regular_text(file, 4096)
                .map_err(|e| anyhow!("--secret-file {}: {e}", file.display()))?
        }
        None => match std::env::var(SECRET_VAR) {
            Ok(text) => text,
            Err(_) => return Ok(None),
        },
    };
    Ok(Some(RunSecret::new(&text)?))
}

pub fn run(args: TrainArgs) -> Result<()> {
    let preset = args.preset.as_deref().unwrap_or(DEFAULT_PRESET);
    let world = world(&args.parallel)?;
    // Rank 0 of a data-parallel run (or the only process) writes and reports.
    let writer = world.as_ref().is_none_or(|w| w.rank == 0);
    // A run directory given for a checkpoint means its last/ (resume) or best/ (init).
    let resume_dir = (args.resume.as_deref())
        .map(|dir| super::checkpoint_dir(dir, Which::Last, "--resume"))
        .transpose()?;
    let init_dir = (args.init_from.as_deref())
        .map(|dir| super::checkpoint_dir(dir, Which::Best, "--init-from"))
        .transpose()?;
    // Only the writer needs (and checks) a run directory; `note` says why it is not the
    // obvious one, on the first line of output.
    let (out, note) = match writer {
        true => OutRequest {
            named: args.out.as_deref(),
            resume: resume_dir.as_deref(),
            init_from: init_dir.as_deref(),
            preset: args.preset.as_deref(),
            overwrite: args.overwrite,
        }
        .choose()?,
        false => (args.out.clone().unwrap_or_default(), None),
    };
    // Never among a user's files: the run directory is empty, new, or quill's.
    if writer {
        check_run_dir(&out)?;
        match &note {
            Some(why) => println!("# run directory: {} ({why})", out.display()),
            None => println!("# run directory: {}", out.display()),
        }
    }
    // Every check that needs no data comes first: the device, the settings, the memory.
    let devices = args.target.device.0.clone();
    if devices.len() > 1 && world.is_some() {
        bail!(
            "--device lists several devices and --world-size starts several processes: use one (quill launch hands a device list out, one per rank)"
        );
    }
    // A resumed run's directory is opened (locked, and cleaned of what killed writers
    // left, which may put a checkpoint back in place) before its checkpoint is read.
    let mut run_dir = match &resume_dir {
        Some(_) if writer && !args.dry_run && out.is_dir() => Some(RunDir::open(&out)?),
        _ => None,
    };
    let resume = resume_dir.as_deref().map(Checkpoint::load).transpose()?;
    let dtype = run_dtype(args.target.dtype, resume_dir.as_deref(), resume.as_ref())?;
    let target = backend::prepare(devices[0], dtype)?;
    let init_from = init_dir.as_deref().map(Checkpoint::load).transpose()?;
    let file = super::config_file(args.config.as_deref())?;
    let config = RunConfig::resolve(&Sources {
        preset: args.preset.as_deref(),
        resume: resume.as_ref(),
        init_from: init_from.as_ref(),
        file: Some(&file),
        flags: Some(&args.overrides),
    })?;
    // Before the corpus is read (or downloaded): the memory without the vocabulary's
    // share, which is all of it for settings that would need terabytes.
    let known_vocab = resume
        .as_ref()
        .or(init_from.as_ref())
        .map_or(1, |c| c.tokenizer.vocab_size());
    target.check_memory(&MemoryEstimate::training(
        &config,
        known_vocab,
        target.dtype_bytes(),
    ))?;

    if let (Some(checkpoint), Some(dir)) = (&resume, &resume_dir)
        && checkpoint.state.iter >= config.train.max_iters
    {
        eprintln!(
            "note: {} has taken all {} steps of its run (max_iters): it is evaluated again; --max-iters N (more than {}) trains it further",
            dir.display(),
            checkpoint.state.iter,
            checkpoint.state.iter
        );
    }
    let tokenizer = resume.as_ref().or(init_from.as_ref()).map(|c| &c.tokenizer);
    let spec = Preset::named(preset)?.tokenizer;
    // Only the writer may prepare a dataset; another rank that cannot see it stops.
    let source = DataSource {
        read_only: args.dry_run || !writer,
        ..resumed_source((&args.source).into(), resume.as_ref(), writer)
    };
    let loaded = super::load_dataset(&source, tokenizer, spec, config.train.val_fraction)?;
    let dataset = loaded.dataset;
    dataset.split.check_block_size(config.block_size())?;
    if let Some(checkpoint) = &init_from {
        checkpoint.check_init(&config.model_for(dataset.tokenizer.vocab_size()))?;
    }
    let estimate = MemoryEstimate::training(
        &config,
        dataset.tokenizer.vocab_size(),
        target.dtype_bytes(),
    );
    target.check_memory(&estimate)?;
    if writer {
        println!(
            "# effective configuration ({})",
            match (&resume_dir, &init_dir) {
                (Some(dir), _) => format!("resumed from {}", dir.display()),
                (None, Some(dir)) => format!("finetuning {}", dir.display()),
                (None, None) => format!("preset {preset}"),
            }
        );
        print!("{}", config.flat().to_toml()?);
        println!(
            "# data: {}, vocab_size {}",
            loaded.description,
            dataset.tokenizer.vocab_size(),
        );
        println!(
            "# memory: {estimate}{}",
            target.memory().map_or_else(
                || format!("; {} does not report its memory", target.name()),
                |(bytes, place)| format!("; {place} has {}", human_bytes(bytes))
            )
        );
    }
    if args.dry_run {
        if writer {
            // A few steps of a throwaway model of the same shapes, on the same device.
            let probe = StepTimer {
                config: config.clone(),
                dataset: &dataset,
            };
            let per_step = target.run(probe)?;
            let left = config
                .train
                .max_iters
                .saturating_sub(resume.as_ref().map_or(0, |c| c.state.iter));
            crate::progress::print_time_estimate(per_step, left, target.on_cpu());
            println!(
                "# dry run: nothing written; the run would write to {}",
                out.display()
            );
        }
        return Ok(());
    }
    // Rank 0 (or the only process) records; the other ranks write nothing.
    let run_dir = match (writer, run_dir.take()) {
        (false, _) => None,
        (true, Some(dir)) => Some(dir),
        (true, None) => Some(RunDir::open(&out)?),
    };
    let run_dir = match args.no_tensorboard {
        true => run_dir.map(RunDir::without_tensorboard),
        false => run_dir,
    };
    // --overwrite: the earlier run goes now, before this one writes anything.
    let mut run_dir = run_dir;
    if let Some(dir) = run_dir
        .as_mut()
        .filter(|_| args.overwrite && holds_run(&out))
    {
        let continues = resume_dir
            .as_deref()
            .is_some_and(|c| checkpoint_in(c, &out));
        if !continues {
            eprintln!("{}: replacing the run it held (--overwrite)", out.display());
            dir.clear()?;
        }
    }
    for note in run_dir.iter().flat_map(RunDir::recovered) {
        eprintln!("{}: {note}", out.display());
    }
    install_stop_handler();
    let job = TrainJob {
        config,
        dataset: Arc::new(dataset),
        out: run_dir,
        resume,
        init_from,
        world,
        log_interval: args.log_interval,
        on_cpu: target.on_cpu(),
        data_source: loaded.record.clone(),
    };
    if devices.len() == 1 {
        target.run(job)?;
    } else {
        let timeout = Duration::from_secs(args.parallel.collective_timeout);
        run_on_devices(target, &devices[1..], dtype, timeout, job)?;
    }
    // Stopped by Ctrl-C, with its checkpoint saved: exit status 130.
    match STOP.load(Ordering::SeqCst) {
        true => Err(super::Interrupted.into()),
        false => Ok(()),
    }
}

/// The float type a run trains in: a resumed run's own (an explicit `--dtype` must
/// agree with it), else `--dtype`, else f32.
fn run_dtype(
    flag: Option<backend::DType>,
    dir: Option<&Path>,
    resume: Option<&Checkpoint>,
) -> Result<backend::DType> {
    let (Some(dir), Some(checkpoint)) = (dir, resume) else {
        return Ok(flag.unwrap_or_default());
    };
    let Some(saved) = FloatType::of_state(&checkpoint.state) else {
        let dtype = flag.unwrap_or_default();
        if checkpoint.state.iter > 0 {
            eprintln!(
                "note: {} does not record the float type it trained in; continuing in {dtype} (--dtype chooses)",
                dir.display()
            );
        }
        return Ok(dtype);
    };
    let saved = match saved {
        FloatType::F32 => backend::DType::F32,
        FloatType::Bf16 => backend::DType::Bf16,
        FloatType::F16 => backend::DType::F16,
    };
    match flag {
        Some(asked) if asked != saved => bail!(
            "--dtype {asked} differs from the {saved} that {} trained in: a resumed run continues in its own float type (leave --dtype out), or start a new run with --init-from",
            dir.display()
        ),
        _ => Ok(saved),
    }
}

/// The data of a run: `source` as given, or, when it names none, the data a resumed
/// checkpoint recorded (saying so, on the writing rank); the default corpus stays the
/// default.
fn resumed_source(source: DataSource, resume: Option<&Checkpoint>, writer: bool) -> DataSource {
    let record = resume.and_then(|c| c.state.data.as_ref());
    let (None, Some(record)) = (&source.data, record) else {
        return source;
    };
    if record.source == quill_data::TINY_SHAKESPEARE.default_path {
        return source;
    }
    if writer {
        eprintln!(
            "note: the run continues on the data it trained on, {record} (--data names other data)"
        );
    }
    let (data, val_data) = record.paths();
    DataSource {
        data: Some(data.into()),
        val_data,
        ..source
    }
}

/// Data parallelism in one process: one worker per device, each a rank of an
/// in-process world ([`quill_train::run_on_devices`]); `job` is rank 0's, which writes.
fn run_on_devices(
    first: backend::Prepared,
    more: &[backend::DeviceChoice],
    dtype: backend::DType,
    timeout: Duration,
    job: TrainJob,
) -> Result<()> {
    let mut targets = vec![first];
    for &device in more {
        let target = backend::prepare(device, dtype)?;
        if !target.same_backend(&targets[0]) {
            bail!(
                "the devices of one process must use one backend; {} and {} differ",
                targets[0].name(),
                target.name()
            );
        }
        targets.push(target);
    }
    let mut jobs: Vec<(TrainJob, &backend::Prepared)> = (targets.iter())
        .map(|target| {
            let job = TrainJob {
                config: job.config.clone(),
                dataset: job.dataset.clone(),
                out: None,
                resume: job.resume.clone(),
                init_from: job.init_from.clone(),
                world: None,
                data_source: job.data_source.clone(),
                log_interval: job.log_interval,
                on_cpu: job.on_cpu,
            };
            (job, target)
        })
        .collect();
    jobs[0].0.out = job.out;
    quill_train::run_on_devices(
        jobs,
        timeout,
        |(job, target), world| {
            target.run(TrainJob {
                world: Some(world),
                ..job
            })
        },
        |e: &anyhow::Error| {
            matches!(
                e.downcast_ref::<TrainError>(),
                Some(TrainError::OtherWorkerFailed)
            )
        },
    )
}

/// Ctrl-C saves a checkpoint and stops (all ranks together); a second one quits at once.
fn install_stop_handler() {
    let _ = ctrlc::set_handler(|| {
        if STOP.swap(true, Ordering::SeqCst) {
            std::process::exit(130);
        }
        eprintln!("\ninterrupted: saving a checkpoint (Ctrl-C again quits at once)");
    });
}

/// Times training steps of `config`'s model, freshly initialised, on `dataset`: one
/// step of warm-up, then the mean of two. Nothing is kept.
struct StepTimer<'a> {
    config: RunConfig,
    dataset: &'a Dataset,
}

impl Job for StepTimer<'_> {
    type Output = f64;
    fn run<B: AutodiffBackend>(self, device: B::Device) -> Result<f64> {
        let (config, split) = (&self.config, &self.dataset.split);
        let model = config.model_for(self.dataset.tokenizer.vocab_size());
        let mut trainer = Trainer::new(model.init::<B>(config.train.seed, &device)?, &config.train);
        let mut sampler = config.batch_sampler()?;
        let mut step = || -> Result<()> {
            let batch =
                Batch::sample(&mut sampler, &split.train, config.train.grad_accum, &device)?;
            trainer.step(&batch)?;
            Ok(())
        };
        step()?;
        let start = std::time::Instant::now();
        step()?;
        step()?;
        Ok(start.elapsed().as_secs_f64() / 2.0)
    }
}

struct TrainJob {
    config: RunConfig,
    dataset: Arc<Dataset>,
    /// `None` on the ranks other than 0.
    out: Option<RunDir>,
    resume: Option<Checkpoint>,
    init_from: Option<Checkpoint>,
    world: Option<World>,
    /// Where the data came from, as named.
    data_source: quill_data::source::SourceRecord,
    /// Step lines every this many steps when stdout is not a terminal.
    log_interval: usize,
    /// Whether it trains on the CPU (for the time estimate's suggestion).
    on_cpu: bool,
}

/// Passes progress on to the progress bar (rank 0), and keeps the weights' fingerprint
/// of a data-parallel run.
struct RankObserver<'a> {
    progress: Option<&'a mut Progress>,
    agreed: Option<Agreement>,
}

impl Observer for RankObserver<'_> {
    fn on_start(&mut self, start: usize, max_iters: usize) {
        if let Some(p) = self.progress.as_mut() {
            p.on_start(start, max_iters);
        }
    }
    fn on_step(&mut self, step: &StepReport) {
        if let Some(p) = self.progress.as_mut() {
            p.on_step(step);
        }
    }
    fn on_eval_batch(&mut self, done: usize, total: usize) {
        if let Some(p) = self.progress.as_mut() {
            p.on_eval_batch(done, total);
        }
    }
    fn on_eval(&mut self, record: &EvalRecord, sample: Option<&str>) {
        if let Some(p) = self.progress.as_mut() {
            p.on_eval(record, sample);
        }
    }
    fn on_ranks_agree(&mut self, agreement: &Agreement) {
        self.agreed = Some(*agreement);
    }
}

impl Job for TrainJob {
    type Output = ();
    fn run<B: AutodiffBackend>(self, device: B::Device) -> Result<()> {
        let started = std::time::Instant::now();
        let rank = self.world.as_ref().map_or(0, |w| w.rank);
        // Under `quill launch`, which prefixes each rank's lines, a rank does not name
        // itself again.
        let prefix = match std::env::var_os(LAUNCHED_VAR) {
            Some(_) => String::new(),
            None => format!("rank {rank}: "),
        };
        let size = self.world.as_ref().map_or(1, |w| w.size);
        // Rank 0 (the one with the run directory) shows progress and the sample.
        let places = self.out.as_ref().map(|out| (out.last(), out.best()));
        let model = self.config.model_for(self.dataset.tokenizer.vocab_size());
        let flops = quill_train::bench::flops_per_token(&model, model.num_params() as usize);
        let tokens_per_step = self.config.tokens_per_iter() * size;
        let mut progress = (places.is_some()).then(|| {
            let accum = self.config.train.grad_accum;
            Progress::new(
                self.log_interval,
                flops,
                tokens_per_step,
                accum,
                self.on_cpu,
            )
        });
        let mut observer = RankObserver {
            progress: progress.as_mut(),
            agreed: None,
        };
        let run = Run::new(self.config, &self.dataset)
            .with_out(self.out)
            .with_resume(self.resume)
            .with_init_from(self.init_from)
            .with_stop(&STOP)
            .with_data(self.data_source.data, self.data_source.val)
            .with_world(self.world);
        let outcome = train::<B>(run, &device, &mut observer);
        let weights = agreed(&observer, size);
        if let Some(progress) = &progress {
            progress.finish();
        }
        let Some((last, best)) = places else {
            let iter = match outcome? {
                Outcome::Finished(record) => record.iter,
                Outcome::Interrupted(iter) => iter,
            };
            let weights = weights.map_or_else(String::new, |w| format!("; {w}"));
            println!("{prefix}stopped after {iter} iterations{weights}");
            return Ok(());
        };
        if let Some(weights) = weights {
            println!("{prefix}{weights}");
        }
        match outcome? {
            Outcome::Interrupted(iter) => {
                println!(
                    "stopped after {iter} iterations; checkpoint saved to {}",
                    last.display()
                );
                println!("resume with: quill train --resume {}", last.display());
            }
            Outcome::Finished(record) => {
                println!(
                    "done: {} iterations, train loss {:.4}, val loss {:.4}; {:.1} s of the run's clock to the last evaluation, {:.1} s in all (loading, the last evaluation and sampling included)",
                    record.iter,
                    record.train_loss,
                    record.val_loss,
                    record.elapsed_s,
                    started.elapsed().as_secs_f64()
                );
                // A run resumed into another directory whose validation loss never beat
                // the checkpoint's has written no best/ there.
                let dir = if best.is_dir() { best } else { last };
                let checkpoint = Checkpoint::load(&dir)?;
                let model = checkpoint.model::<B::InnerBackend>(&device)?;
                let seed = checkpoint.config.train.seed;
                let tokens = match checkpoint.tokenizer.as_char() {
                    Some(_) => FINAL_SAMPLE_CHARS,
                    None => FINAL_SAMPLE_SUBWORDS,
                };
                let request = quill_model::SampleRequest::from_newline(tokens, seed);
                let text =
                    quill_model::sample_texts(&model, &checkpoint.tokenizer, &request, |_, _| {})?;
                println!("--- a sample from {} ---\n{}", dir.display(), text[0]);
            }
        }
        Ok(())
    }
}

/// `weights fingerprint 3f…, equal on all 2 ranks at step 200; 0.41 s in 205
/// all-reduces`; `None` for one process.
fn agreed(observer: &RankObserver<'_>, ranks: usize) -> Option<String> {
    let a = observer.agreed.filter(|_| ranks > 1)?;
    Some(format!(
        "weights fingerprint {:016x}, equal on all {ranks} ranks at step {}; {:.2} s in {} all-reduces",
        a.weights, a.iter, a.exchange_s, a.exchanges
    ))
}
