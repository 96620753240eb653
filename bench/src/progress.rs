//! Progress of a run on standard error: an indicatif bar (points done, elapsed, estimated
//! time left, the point being measured) on a terminal, plain lines otherwise (CI logs, files).
//! One line per finished point either way, so the log keeps the results as they come.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

use crate::args::ProgressArg;

/// Where progress goes.
#[derive(Debug)]
pub enum Progress {
    /// An indicatif bar.
    Bar(ProgressBar),
    /// Plain lines.
    Plain {
        /// Number of points.
        total: usize,
    },
}

impl Progress {
    /// A display for `total` points.
    pub fn new(mode: ProgressArg, total: usize) -> Progress {
        let bar = match mode {
            ProgressArg::Bar => true,
            ProgressArg::Plain => false,
            ProgressArg::Auto => std::io::stderr().is_terminal(),
        };
        if !bar {
            return Progress::Plain { total };
        }
        let bar = ProgressBar::new(total as u64);
        let style = ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} points, ~{eta} left  {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar());
        bar.set_style(style);
        bar.enable_steady_tick(Duration::from_millis(200));
        Progress::Bar(bar)
    }

    /// A note (limits measurement, broker start).
    pub fn note(&self, text: &str) {
        match self {
            Progress::Bar(bar) => bar.println(text),
            Progress::Plain { .. } => eprintln!("{text}"),
        }
    }

    /// Point `index` (0-based) starts.
    pub fn start_point(&self, index: usize, description: &str) {
        match self {
            Progress::Bar(bar) => bar.set_message(description.to_owned()),
            Progress::Plain { total } => eprintln!("[{}/{total}] {description} ...", index + 1),
        }
    }

    /// Point `index` finished with this one-line summary.
    pub fn finish_point(&self, index: usize, summary: &str) {
        match self {
            Progress::Bar(bar) => {
                bar.println(format!(
                    "[{}/{}] {summary}",
                    index + 1,
                    bar.length().unwrap_or(0)
                ));
                bar.inc(1);
            }
            Progress::Plain { total } => eprintln!("[{}/{total}] {summary}", index + 1),
        }
    }

    /// The run is over.
    pub fn finish(&self) {
        if let Progress::Bar(bar) = self {
            bar.finish_and_clear();
        }
    }
}
