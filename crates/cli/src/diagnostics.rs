//! Diagnostics on stderr through `tracing`: what the program says about its work (the data it
//! read, the settings it chose, warnings), not its results. Info lines read `losskit: …` as
//! they always have; other levels name their level and target. `RUST_LOG` (e.g. `debug`,
//! `losskit::train=trace`) or `-v` / `-vv` show more: the registry building the loss, the
//! device chosen, every training event. Errors stay the one `losskit: error: …` line `main`
//! prints.

use std::fmt;

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::{
    filter::Targets,
    fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields, format},
    prelude::*,
    registry::LookupSpan,
};

/// One line per event: `losskit: MESSAGE` at info, `losskit: LEVEL: TARGET: MESSAGE` otherwise.
struct Lines;

impl<S, N> FormatEvent<S, N> for Lines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        context: &FmtContext<'_, S, N>,
        mut writer: format::Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let metadata = event.metadata();
        match *metadata.level() {
            Level::INFO => write!(writer, "losskit: ")?,
            Level::WARN => write!(writer, "losskit: warning: ")?,
            level => {
                write!(
                    writer,
                    "losskit: {}: {}: ",
                    level.as_str().to_lowercase(),
                    metadata.target()
                )?;
                // The spans it happened in, outermost first: `run{out=… task=…}:epoch{epoch=3}: `.
                if let Some(scope) = context.event_scope() {
                    for span in scope.from_root() {
                        write!(writer, "{}", span.name())?;
                        let extensions = span.extensions();
                        if let Some(fields) = extensions.get::<FormattedFields<N>>()
                            && !fields.is_empty()
                        {
                            write!(writer, "{{{fields}}}")?;
                        }
                        write!(writer, ": ")?;
                    }
                }
            }
        }
        context
            .field_format()
            .format_fields(writer.by_ref(), event)?;
        writeln!(writer)
    }
}

/// Installs the stderr subscriber: `RUST_LOG` when set (and no `-v`), else info for losskit's
/// own targets (debug with `-v`, trace with `-vv`) and nothing from the libraries.
pub fn install(verbose: u8) {
    // Libraries' own events (burn's remote client warns of a dropped connection that the
    // error line already reports) show only when RUST_LOG asks for them.
    let default = match verbose {
        0 => "losskit=info",
        1 => "losskit=debug",
        _ => "losskit=trace",
    };
    let fallback = || {
        default
            .parse::<Targets>()
            .expect("the default filter parses")
    };
    let from_env = std::env::var("RUST_LOG")
        .ok()
        .filter(|value| verbose == 0 && !value.trim().is_empty());
    let (filter, problem) = match from_env {
        Some(value) => match value.parse::<Targets>() {
            Ok(filter) => (filter, None),
            Err(error) => (fallback(), Some(format!("RUST_LOG `{value}`: {error}"))),
        },
        None => (fallback(), None),
    };
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .event_format(Lines)
        .with_filter(filter);
    // A second install (tests calling `main`'s pieces) keeps the first.
    let _ = tracing_subscriber::registry().with(layer).try_init();
    if let Some(problem) = problem {
        tracing::warn!("{problem}; using `{default}` (levels: error, warn, info, debug, trace)");
    }
}
