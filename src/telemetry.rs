//! Logging: human-readable text by default, one JSON object per line for clusters
//! (`--log-format json`), to stderr, filtered by `RUST_LOG`.
//!
//! In JSON each line carries the fields of the current span (`span.namespace`, `span.name` in a
//! reconcile), so log queries can select one object without parsing messages.

use tracing_subscriber::EnvFilter;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line, with the current span's fields.
    Json,
}

/// The filter when `RUST_LOG` is unset: our own `info`, the chatty HTTP and client stacks only
/// when they warn.
pub const DEFAULT_FILTER: &str = "info,kube=warn,hyper=warn,tower=warn,h2=warn,rustls=warn";

/// The filter from `RUST_LOG`, or [`DEFAULT_FILTER`] when it is unset or empty. An unparsable
/// `RUST_LOG` is an error worth seeing, returned with the default filter to use instead.
fn filter() -> (EnvFilter, Option<String>) {
    match std::env::var(EnvFilter::DEFAULT_ENV) {
        Ok(spec) if !spec.trim().is_empty() => match EnvFilter::try_new(&spec) {
            Ok(filter) => (filter, None),
            Err(e) => (
                EnvFilter::new(DEFAULT_FILTER),
                Some(format!(
                    "ignoring RUST_LOG={spec:?} ({e}); using {DEFAULT_FILTER:?}"
                )),
            ),
        },
        _ => (EnvFilter::new(DEFAULT_FILTER), None),
    }
}

/// Installs the global subscriber. Idempotent: when one is already installed (a second call, or a
/// test harness's), this does nothing.
pub fn init(format: LogFormat) {
    let (filter, problem) = filter();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let installed = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
    };
    if let (Ok(()), Some(problem)) = (installed, problem) {
        tracing::warn!("{problem}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_filter_parses() {
        assert!(EnvFilter::try_new(DEFAULT_FILTER).is_ok());
    }

    #[test]
    fn log_format_is_chosen_by_lowercase_name() {
        use clap::ValueEnum;
        assert_eq!(
            LogFormat::from_str("json", false).ok(),
            Some(LogFormat::Json)
        );
        assert_eq!(
            LogFormat::from_str("text", false).ok(),
            Some(LogFormat::Text)
        );
        assert!(LogFormat::from_str("yaml", false).is_err());
    }
}
