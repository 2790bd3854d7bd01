//! The loss picture of a run, `loss.svg` and `loss.png`, drawn with `plotters` from the
//! run's records: what TensorBoard or W&B would show.
//!
//! - top panel: the training loss of every step (faint) and its smoothed curve, the
//!   train and val losses of each evaluation on top, round tick values, a grid;
//! - bottom panel: the learning rate against the same iterations;
//! - a title naming the run, the model and the tokens seen.
//!
//! [`RunsPlot`] puts several runs on one picture (`quill plot`): their validation and
//! smoothed training losses, one colour per run.
//!
//! Text is laid out with DejaVu Sans, bundled (the `dejavu` crate), so the PNG looks the
//! same on every machine and nothing is read from the system.

use std::path::Path;
use std::sync::Once;

use image::ImageEncoder;
use plotters::coord::Shift;
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;

use crate::StepReport;
use crate::TrainError;
use crate::run::metrics::EvalRecord;

/// Canvas size in pixels (the SVG uses the same units).
const SIZE: (u32, u32) = (1000, 680);
/// Per-step points drawn at most; longer runs are averaged over buckets of steps.
const MAX_POINTS: usize = 2000;

const TRAIN: RGBColor = RGBColor(31, 119, 180);
const VAL: RGBColor = RGBColor(255, 127, 14);
const LR: RGBColor = RGBColor(44, 160, 44);
const FONT: &str = "sans-serif";

/// What one picture shows.
#[derive(Debug, Clone, Copy)]
pub struct LossPlot<'a> {
    /// The title line, e.g. `cpu · GPT 4×128 · 0.80 M parameters · 1.5 M tokens`.
    pub title: &'a str,
    /// One record per optimizer step.
    pub steps: &'a [StepReport],
    /// One record per evaluation.
    pub evals: &'a [EvalRecord],
}

impl LossPlot<'_> {
    /// The picture as an SVG document.
    pub fn svg(&self) -> Result<String, TrainError> {
        svg_of(self)
    }

    /// The picture as a PNG file's bytes.
    pub fn png(&self) -> Result<Vec<u8>, TrainError> {
        png_of(self)
    }

    /// The files [`LossPlot::write`] writes.
    pub const FILES: [&'static str; 2] = crate::run::run_dir::PLOT_FILES;

    /// Writes `loss.svg` and `loss.png` into `dir`.
    pub fn write(&self, dir: &Path) -> Result<(), TrainError> {
        let [svg, png] = Self::FILES;
        quill_data::atomic::write_file(&dir.join(svg), self.svg()?.as_bytes())?;
        Ok(quill_data::atomic::write_file(
            &dir.join(png),
            &self.png()?,
        )?)
    }

    fn draw_all<DB: DrawingBackend>(
        &self,
        root: &DrawingArea<DB, Shift>,
    ) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
        let root = canvas(root, self.title)?;
        let (top, bottom) = root.split_vertically(SIZE.1 as f32 * 0.68);
        let last_iter = self
            .steps
            .iter()
            .map(|s| s.iter)
            .chain(self.evals.iter().map(|e| e.iter))
            .max()
            .unwrap_or(0)
            .max(1) as f64;
        self.draw_losses(&top, last_iter)?;
        self.draw_learning_rate(&bottom, last_iter)
    }

    fn draw_losses<DB: DrawingBackend>(
        &self,
        area: &DrawingArea<DB, Shift>,
        last_iter: f64,
    ) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
        let raw = bucket_means(self.steps, |s| s.loss as f64);
        let smooth = smoothed(&raw);
        let losses = raw.iter().copied().chain(
            self.evals
                .iter()
                .flat_map(|e| [e.train_loss, e.val_loss].map(|l| (e.iter as f64, f64::from(l)))),
        );
        let (lo, hi) = readable_range(losses, last_iter);
        let mut chart = panel(area, last_iter, lo..hi, "iteration", "loss", None)?;
        chart.draw_series(LineSeries::new(
            raw.iter().copied(),
            TRAIN.mix(0.25).stroke_width(1),
        ))?;
        chart
            .draw_series(LineSeries::new(smooth, TRAIN.stroke_width(2)))?
            .label("train loss (each step, smoothed)")
            .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], TRAIN.stroke_width(2)));
        let points = |pick: fn(&EvalRecord) -> f32| {
            self.evals
                .iter()
                .map(move |e| (e.iter as f64, pick(e) as f64))
                .filter(|p| p.1.is_finite())
        };
        chart
            .draw_series(points(|e| e.train_loss).map(|p| Circle::new(p, 4, TRAIN.filled())))?
            .label("train loss (evaluation)")
            .legend(|(x, y)| Circle::new((x + 10, y), 4, TRAIN.filled()));
        chart.draw_series(LineSeries::new(points(|e| e.val_loss), VAL.stroke_width(2)))?;
        chart
            .draw_series(points(|e| e.val_loss).map(|p| Circle::new(p, 4, VAL.filled())))?
            .label("val loss (evaluation)")
            .legend(|(x, y)| Circle::new((x + 10, y), 4, VAL.filled()));
        legend(&mut chart)
    }

    fn draw_learning_rate<DB: DrawingBackend>(
        &self,
        area: &DrawingArea<DB, Shift>,
        last_iter: f64,
    ) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
        let lr = bucket_means(self.steps, |s| s.lr);
        let top = lr.iter().map(|p| p.1).fold(0.0, f64::max);
        let top = if top > 0.0 { top * 1.1 } else { 1.0 };
        let exponent = |y: &f64| match *y {
            0.0 => "0".to_string(),
            y => format!("{y:.0e}"),
        };
        let mut chart = panel(
            area,
            last_iter,
            0.0..top,
            "iteration",
            "learning rate",
            Some(&exponent),
        )?;
        chart.draw_series(LineSeries::new(lr, LR.stroke_width(2)))?;
        Ok(())
    }
}

impl Picture for LossPlot<'_> {
    fn draw<DB: DrawingBackend>(
        &self,
        root: &DrawingArea<DB, Shift>,
    ) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
        self.draw_all(root)
    }
}

/// Several runs on one picture (`quill plot`): each run's validation losses (points
/// joined by a line) and its smoothed training loss (a fainter line), one colour per
/// run, with a legend.
#[derive(Debug, Clone, Copy)]
pub struct RunsPlot<'a> {
    /// The title line.
    pub title: &'a str,
    /// The runs.
    pub runs: &'a [PlotRun],
    /// What the x axis counts.
    pub x: PlotX,
    /// A logarithmic loss axis.
    pub log_y: bool,
}

/// One run of a [`RunsPlot`].
#[derive(Debug, Clone)]
pub struct PlotRun {
    /// Its name in the legend.
    pub name: String,
    /// Its step records.
    pub steps: Vec<StepReport>,
    /// Its evaluation records.
    pub evals: Vec<EvalRecord>,
    /// Tokens a step trains on (for [`PlotX::Tokens`] and [`PlotX::Time`]).
    pub tokens_per_step: usize,
}

/// The x axis of a [`RunsPlot`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PlotX {
    /// Optimizer steps.
    #[default]
    Step,
    /// Training tokens seen.
    Tokens,
    /// Seconds of training, the steps' own time (evaluations left out): what a
    /// time-to-target comparison draws.
    Time,
}

impl PlotRun {
    /// Where step `iter` lies on `x`: the step, its tokens, or the training seconds up
    /// to it (summed from the steps' speeds).
    fn x_of(&self, x: PlotX) -> impl Fn(f64) -> f64 + '_ {
        let seconds: Vec<(f64, f64)> = match x {
            PlotX::Time => self
                .steps
                .iter()
                .scan(0.0, |total, s| {
                    *total += self.tokens_per_step as f64 / s.tokens_per_s.max(1e-9);
                    Some((s.iter as f64, *total))
                })
                .collect(),
            _ => Vec::new(),
        };
        move |iter| match x {
            PlotX::Step => iter,
            PlotX::Tokens => iter * self.tokens_per_step as f64,
            PlotX::Time => {
                let at = seconds.partition_point(|p| p.0 <= iter);
                match at {
                    0 => 0.0,
                    n => seconds[n - 1].1,
                }
            }
        }
    }
}

/// The runs' colours, in order (matplotlib's tab10), repeated past ten runs.
const PALETTE: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

impl RunsPlot<'_> {
    /// The picture as an SVG document.
    pub fn svg(&self) -> Result<String, TrainError> {
        svg_of(self)
    }

    /// The picture as a PNG file's bytes.
    pub fn png(&self) -> Result<Vec<u8>, TrainError> {
        png_of(self)
    }
}

impl Picture for RunsPlot<'_> {
    fn draw<DB: DrawingBackend>(
        &self,
        root: &DrawingArea<DB, Shift>,
    ) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
        let root = canvas(root, self.title)?;
        let y = |v: f64| if self.log_y { v.log10() } else { v };
        let curves: Vec<(Curve, Curve)> = self
            .runs
            .iter()
            .map(|run| {
                let x = run.x_of(self.x);
                let train = smoothed(&bucket_means(&run.steps, |s| s.loss as f64))
                    .into_iter()
                    .map(|(i, l)| (x(i), y(l)))
                    .collect();
                let val = (run.evals.iter())
                    .map(|e| (x(e.iter as f64), y(e.val_loss as f64)))
                    .filter(|p| p.1.is_finite())
                    .collect();
                (train, val)
            })
            .collect();
        let last_x = curves
            .iter()
            .flat_map(|(t, v)| t.iter().chain(v))
            .map(|p| p.0)
            .fold(1.0, f64::max);
        let (lo, hi) = readable_range(
            curves.iter().flat_map(|(t, v)| t.iter().chain(v)).copied(),
            last_x,
        );
        let x_desc = match self.x {
            PlotX::Step => "iteration",
            PlotX::Tokens => "training tokens",
            PlotX::Time => "training time (s), evaluations left out",
        };
        let unlog = |v: &f64| format!("{:.2}", 10f64.powf(*v));
        let y_format: Option<&dyn Fn(&f64) -> String> = self.log_y.then_some(&unlog);
        let y_desc = match self.log_y {
            true => "loss (log scale)",
            false => "loss",
        };
        let mut chart = panel(&root, last_x, lo..hi, x_desc, y_desc, y_format)?;
        for (i, (run, (train, val))) in self.runs.iter().zip(&curves).enumerate() {
            let colour = PALETTE[i % PALETTE.len()];
            chart.draw_series(LineSeries::new(
                train.iter().copied(),
                colour.mix(0.45).stroke_width(1),
            ))?;
            chart.draw_series(LineSeries::new(val.iter().copied(), colour.stroke_width(2)))?;
            chart
                .draw_series(val.iter().map(|&p| Circle::new(p, 4, colour.filled())))?
                .label(run.name.as_str())
                .legend(move |(x, y)| {
                    PathElement::new([(x, y), (x + 20, y)], colour.stroke_width(3))
                });
        }
        legend(&mut chart)
    }
}

/// `(iteration, value)` points.
type Curve = Vec<(f64, f64)>;

/// The white canvas with the title, the font registered.
fn canvas<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    title: &str,
) -> Result<DrawingArea<DB, Shift>, DrawingAreaErrorKind<DB::ErrorType>> {
    register_font();
    root.fill(&WHITE)?;
    root.margin(10, 4, 4, 10).titled(title, (FONT, 26))
}

/// The series' legend, top right.
fn legend<'a, DB: DrawingBackend + 'a>(
    chart: &mut Panel<'a, DB>,
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(RGBColor(200, 200, 200))
        .label_font((FONT, 17))
        .draw()
}

/// A picture drawn on any plotters backend.
trait Picture {
    fn draw<DB: DrawingBackend>(
        &self,
        root: &DrawingArea<DB, Shift>,
    ) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>>;
}

/// `picture` as an SVG document.
fn svg_of(picture: &impl Picture) -> Result<String, TrainError> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        picture.draw(&root).map_err(plot_error)?;
        root.present().map_err(plot_error)?;
    }
    Ok(svg)
}

/// `picture` as a PNG file's bytes.
fn png_of(picture: &impl Picture) -> Result<Vec<u8>, TrainError> {
    let (w, h) = SIZE;
    let mut rgb = vec![0u8; (w * h * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut rgb, SIZE).into_drawing_area();
        picture.draw(&root).map_err(plot_error)?;
        root.present().map_err(plot_error)?;
    }
    let mut png = Vec::new();
    image::codecs::png::PngEncoder::new(&mut png)
        .write_image(&rgb, w, h, image::ColorType::Rgb8)
        .map_err(plot_error)?;
    Ok(png)
}

/// A chart with iterations across and a value up.
type Panel<'a, DB> = ChartContext<'a, DB, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

/// A panel of the picture: iterations across, `y` up, with the shared margins, grid,
/// fonts and labels (`y_format` overrides plotters' own number format, and asks for
/// fewer ticks: the learning rate's labels are wider).
fn panel<'a, DB: DrawingBackend>(
    area: &'a DrawingArea<DB, Shift>,
    last_iter: f64,
    y: std::ops::Range<f64>,
    x_desc: &str,
    y_desc: &str,
    y_format: Option<&dyn Fn(&f64) -> String>,
) -> Result<Panel<'a, DB>, DrawingAreaErrorKind<DB::ErrorType>> {
    let mut chart = ChartBuilder::on(area)
        .margin(12)
        .x_label_area_size(46)
        .y_label_area_size(64)
        .build_cartesian_2d(0f64..last_iter, y)?;
    let mut mesh = chart.configure_mesh();
    mesh.light_line_style(TRANSPARENT)
        .bold_line_style(RGBColor(225, 225, 225))
        .x_desc(x_desc)
        .y_desc(y_desc)
        .x_label_formatter(&|x| format!("{x:.0}"))
        .label_style((FONT, 17))
        .axis_desc_style((FONT, 19));
    if let Some(format) = y_format {
        mesh.y_label_formatter(format).y_labels(4);
    }
    mesh.draw()?;
    Ok(chart)
}

/// Registers the bundled font under [`FONT`] once per process.
fn register_font() {
    static REGISTER: Once = Once::new();
    REGISTER.call_once(|| {
        // The bytes are DejaVu Sans as the `dejavu` crate ships it: a valid font.
        let registered =
            plotters::style::register_font(FONT, FontStyle::Normal, dejavu::sans::regular());
        assert!(registered.is_ok(), "the bundled DejaVu Sans font loads");
    });
}

fn plot_error(e: impl std::fmt::Display) -> TrainError {
    TrainError::Io {
        path: "loss plot".into(),
        source: std::io::Error::other(e.to_string()),
    }
}

/// `(iter, value)` per step, or the mean over buckets of consecutive steps when there
/// are more than [`MAX_POINTS`].
fn bucket_means(steps: &[StepReport], value: impl Fn(&StepReport) -> f64) -> Vec<(f64, f64)> {
    let size = steps.len().div_ceil(MAX_POINTS).max(1);
    steps
        .chunks(size)
        .map(|chunk| {
            let n = chunk.len() as f64;
            let iter = chunk.iter().map(|s| s.iter as f64).sum::<f64>() / n;
            (iter, chunk.iter().map(&value).sum::<f64>() / n)
        })
        .filter(|p| p.1.is_finite())
        .collect()
}

/// An exponential moving average with TensorBoard's debiasing (the first points are not
/// pulled towards zero), over a window of about 1/100 of the points (1 to 100): long
/// enough to see through the batch noise, short enough not to lag the first descent.
pub fn smoothed(points: &[(f64, f64)]) -> Vec<(f64, f64)> {
    let window = (points.len() as f64 / 100.0).clamp(1.0, 100.0);
    let beta = 1.0 - 1.0 / window;
    let mut average = 0.0;
    let mut weight = 0.0;
    points
        .iter()
        .map(|&(x, y)| {
            average = beta * average + (1.0 - beta) * y;
            weight = beta * weight + (1.0 - beta);
            (x, average / weight)
        })
        .collect()
}

/// The range of `values` with 5% of room on each side (or a unit range when empty).
/// The y range that keeps the last 80 % of a run readable: the range of the points past
/// the first fifth of the x axis (the first steps' high losses go off the top), padded;
/// all points when none lie there.
fn readable_range(points: impl Iterator<Item = (f64, f64)>, last_x: f64) -> (f64, f64) {
    let points: Vec<(f64, f64)> = points.filter(|p| p.1.is_finite()).collect();
    let later = || points.iter().filter(|p| p.0 >= 0.2 * last_x).map(|p| p.1);
    match later().next() {
        Some(_) => padded_range(later()),
        None => padded_range(points.iter().map(|p| p.1)),
    }
}

fn padded_range(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    });
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    let pad = ((hi - lo) * 0.05).max(1e-3);
    (lo - pad, hi + pad)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn steps(n: usize) -> Vec<StepReport> {
        (1..=n)
            .map(|iter| StepReport {
                iter,
                loss: 4.0 - 2.0 * iter as f32 / n as f32,
                lr: 1e-3,
                grad_norm: 1.0,
                tokens_per_s: 1.0,
                loss_scale: None,
                skipped_steps: None,
            })
            .collect()
    }

    fn evals() -> Vec<EvalRecord> {
        [(0, 4.2, 4.25), (50, 3.0, 3.2), (100, 2.0, 2.4)]
            .map(|(iter, train_loss, val_loss)| EvalRecord {
                iter,
                train_loss,
                val_loss,
                lr: 1e-3,
                tokens_per_s: 1.0,
                elapsed_s: 1.0,
            })
            .to_vec()
    }

    #[test]
    fn the_svg_has_title_axes_legend_and_round_ticks() {
        let (steps, evals) = (steps(100), evals());
        let plot = LossPlot {
            title: "demo · GPT",
            steps: &steps,
            evals: &evals,
        };
        let svg = plot.svg().unwrap();
        // The text of each <text> element, in order.
        let texts: Vec<&str> = svg
            .split("<text")
            .skip(1)
            .map(|t| t[t.find('>').unwrap() + 1..t.find("</text>").unwrap()].trim())
            .collect();
        for text in [
            "demo · GPT",
            "iteration",
            "learning rate",
            "loss",
            "train loss (each step, smoothed)",
            "train loss (evaluation)",
            "val loss (evaluation)",
        ] {
            assert!(texts.contains(&text), "{text} missing from {texts:?}");
        }
        // Round tick values on both axes, not fractions of the data's range.
        for tick in ["2.0", "2.4", "3.0", "3.6", "0", "50", "100", "5e-4", "1e-3"] {
            assert!(texts.contains(&tick), "tick {tick} missing from {texts:?}");
        }
        // The loss axis is for the last 80 %: the first steps' 4.0 is off the top.
        assert!(!texts.contains(&"4.0"), "{texts:?}");
        // one circle per evaluation and split, plus the two in the legend
        assert_eq!(svg.matches("<circle").count(), 2 * 3 + 2);
    }

    #[test]
    fn the_loss_axis_shows_the_last_four_fifths() {
        let line = (0..=100).map(|x| (x as f64, 4.0 - 2.0 * x as f64 / 100.0));
        let (lo, hi) = readable_range(line, 100.0);
        // From 2.0 to 3.6 (the loss at a fifth of the run), padded by 5 %.
        assert!(
            (lo - 1.92).abs() < 1e-9 && (hi - 3.68).abs() < 1e-9,
            "{lo} {hi}"
        );
        // Nothing past the first fifth: every point counts.
        assert_eq!(
            readable_range([(0.0, 4.0), (1.0, 3.0)].into_iter(), 100.0),
            (2.95, 4.05)
        );
    }

    #[test]
    fn runs_are_placed_by_steps_tokens_or_training_time() {
        let run = PlotRun {
            name: "a".into(),
            // 1000 tokens a step at 500 then 250 tokens/s: 2 s, then 4 s.
            steps: [(1, 500.0), (2, 250.0)]
                .map(|(iter, tokens_per_s)| StepReport {
                    tokens_per_s,
                    ..steps(2)[iter - 1]
                })
                .to_vec(),
            evals: Vec::new(),
            tokens_per_step: 1000,
        };
        let at = |x: PlotX| [0.0, 1.0, 2.0].map(run.x_of(x));
        assert_eq!(at(PlotX::Step), [0.0, 1.0, 2.0]);
        assert_eq!(at(PlotX::Tokens), [0.0, 1000.0, 2000.0]);
        assert_eq!(at(PlotX::Time), [0.0, 2.0, 6.0]);
    }

    #[test]
    fn the_png_is_a_png_of_the_canvas_size() {
        let dir = tempfile::tempdir().unwrap();
        let (steps, evals) = (steps(10), evals());
        let plot = LossPlot {
            title: "t",
            steps: &steps,
            evals: &evals,
        };
        plot.write(dir.path()).unwrap();
        let png = std::fs::read(dir.path().join("loss.png")).unwrap();
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
        // IHDR: width and height, big-endian, at bytes 16..24.
        assert_eq!(u32::from_be_bytes(png[16..20].try_into().unwrap()), SIZE.0);
        assert_eq!(u32::from_be_bytes(png[20..24].try_into().unwrap()), SIZE.1);
        let entries = std::fs::read_dir(dir.path()).unwrap().count();
        assert_eq!(entries, 2, "only loss.svg and loss.png, no temporary file");
    }

    #[test]
    fn long_runs_are_averaged_and_smoothing_is_unbiased() {
        let long = steps(10_000);
        let points = bucket_means(&long, |s| s.loss as f64);
        assert_eq!(points.len(), 2000);
        assert_eq!(points[0].0, 3.0);
        assert!(
            (points[0].1 - (4.0 - 2e-4 * 3.0)).abs() < 1e-5,
            "{:?}",
            points[0]
        );
        let flat = vec![(0.0, 3.0); 50];
        assert!(smoothed(&flat).iter().all(|p| (p.1 - 3.0).abs() < 1e-12));
    }
}
