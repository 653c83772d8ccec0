//! [`AccessLines`]: the access log's lines (target `request`, one per request) written without
//! `tracing-subscriber`'s general-purpose field formatting, byte for byte as it would write them.
//!
//! The library formats every field through `Debug` and `core::fmt::write`, and with its `ansi`
//! feature built in it wraps every field name in a style even when colours are off (a pipe, a
//! file, a container's log): under callgrind the production cluster's master spent 38,700
//! user-space instructions on a proxied request with the access log on, against 24,700 with
//! it off. Here strings that need no escaping are copied, integers are written with `itoa`,
//! and only what has no faster form (`Debug` values) goes through `fmt`: 33,200. Two more
//! cuts brought that to 32,000: the line is built in a buffer of the thread's own and handed to
//! the library's writer in one call, and a float that is a whole number of thousandths (the
//! request's duration, to the microsecond) is written without the float formatter, digit for
//! digit as `{:?}` writes it (`thousandths`).
//!
//! The line is not even an event where it need not be: [`write_direct`], which the cluster's
//! logging installs as `http::trace`'s direct writer, is handed the request's values and writes
//! the line their event would have made straight into the [`LogBuffer`], with the same head and
//! the same field writers. The event's dispatch and its visit of seven fields through
//! `dyn Value` cost 3,800 instructions of a proxied request with everything on; the direct line
//! costs 2,090, and the master's request went from 31,800 to 30,050. It declines, and the event
//! is sent, unless the current subscriber is the one the logging set up here, without colours.
//!
//! Everything else keeps the library's formatter: other targets, a terminal (where the
//! library's colours are wanted), and the JSON format. The timestamp is the library's timer's,
//! each second's date written once ([`LineClock`], checked against that timer), and the span
//! scope is read as the library reads it; `tests` checks the whole line, both the event's and
//! the direct one, against the library's for values that need escaping.

use std::cell::RefCell;
use std::fmt::{self, Write};

use tracing::field::{Field, Visit};
use tracing::{Dispatch, Event, Level, Subscriber};
use tracing_subscriber::Registry;
use tracing_subscriber::fmt::format::{DefaultFields, Format, Full, Writer};
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields, MakeWriter};
use tracing_subscriber::registry::{LookupSpan, SpanRef};

use super::line_clock::LineClock;
use crate::http::trace::{ACCESS_TARGET, Access};
use crate::log_buffer::LogBuffer;

/// The access log's lines by hand, everything else by `inner` (the library's full format with
/// the target off, as the cluster's logging sets it up).
pub(crate) struct AccessLines<F, T = LineClock> {
    inner: F,
    timer: T,
    /// Whether [`write_direct`] may write the access lines in place of their events: only where
    /// this formatter would write them by hand (no colours).
    direct: bool,
}

/// The library's format as the cluster's logging sets it up, which [`AccessLines`] wraps there.
pub(crate) type TextFormat = Format<Full, SystemTime>;

impl AccessLines<TextFormat> {
    pub(crate) fn new(inner: TextFormat, ansi: bool) -> Self {
        Self {
            inner,
            timer: LineClock,
            direct: !ansi,
        }
    }
}

thread_local! {
    /// Each thread's line, built here and handed to the library's writer in one call. Every
    /// write through that writer is a call through `dyn fmt::Write`, about 40 instructions for
    /// a piece of a few bytes under callgrind, and a line is some 40 pieces.
    static LINE: RefCell<String> = const { RefCell::new(String::new()) };
}

/// A thread's line buffer above this size is given back after its line: one long path must not
/// keep every edge thread's buffer that large.
const LINE_KEPT: usize = 1024;

impl<S, N, F, T> FormatEvent<S, N> for AccessLines<F, T>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
    T: FormatTime,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        if writer.has_ansi_escapes() || event.metadata().target() != ACCESS_TARGET {
            return self.inner.format_event(ctx, writer, event);
        }
        let sanitize = writer.sanitizes_ansi_escapes();
        with_line(|line| {
            self.write_line(ctx, line, event, sanitize)
                .and_then(|()| writer.write_str(line))
        })
    }
}

/// The direct writer the cluster's logging installs (see `http::trace`): the line
/// [`AccessLines`] writes for an access's event, put in the process's log without the event.
/// Declines (false, and the event is sent) unless the current subscriber is the cluster's own,
/// an [`AccessLines`] writing to the [`LogBuffer`] without colours.
pub(super) fn write_direct(access: &Access<'_>) -> bool {
    // `RUST_LOG` decides as it does for the event: same target, same level.
    if !tracing::enabled!(target: ACCESS_TARGET, Level::INFO) {
        return true;
    }
    tracing::dispatcher::get_default(|dispatch| {
        let ours = dispatch
            .downcast_ref::<AccessLines<TextFormat>>()
            .is_some_and(|lines| lines.direct);
        let Some(out) = dispatch.downcast_ref::<LogBuffer>().filter(|_| ours) else {
            return false;
        };
        with_line(|line| {
            if !direct_line(dispatch, &LineClock, line, access) {
                return false;
            }
            // A log that cannot be written has nowhere to report it: the line is dropped, as
            // the library's writer drops it.
            let _ = std::io::Write::write_all(&mut out.make_writer(), line.as_bytes());
            true
        })
    })
}

/// The line the access's event gets from [`AccessLines`], into `line`: the same head (time,
/// level, the spans the thread is in, read from `dispatch`'s registry) and the fields in the
/// event's order, each written by the function the event's field goes to. False, with nothing
/// to be used in `line`, if the subscriber keeps no registry of spans or the duration is one
/// the event writes with the float formatter.
fn direct_line<T: FormatTime>(
    dispatch: &Dispatch,
    timer: &T,
    line: &mut String,
    access: &Access<'_>,
) -> bool {
    let Some((whole, thousandths)) = thousandths(access.micros as f64 / 1000.0) else {
        return false;
    };
    let Some(registry) = dispatch.downcast_ref::<Registry>() else {
        return false;
    };
    if timer.format_time(&mut Writer::new(line)).is_err() {
        line.push_str("<unknown time>");
    }
    line.push_str("  INFO ");
    let current = dispatch.current_span();
    write_scope::<_, DefaultFields>(line, current.id().and_then(|id| registry.span(id)));
    // `method` and `path` are `Display` fields: written as they are, unquoted.
    line.push_str("request request_id=");
    if write_str_value(line, access.request_id).is_err() {
        return false;
    }
    line.push_str(" method=");
    line.push_str(access.method.as_str());
    line.push_str(" path=");
    line.push_str(access.path);
    line.push_str(" worker=");
    if write_str_value(line, access.worker).is_err() {
        return false;
    }
    line.push_str(" status=");
    line.push_str(itoa::Buffer::new().format(access.status));
    line.push_str(" duration_ms=");
    write_thousandths(line, whole, thousandths);
    line.push('\n');
    true
}

/// Runs `build` on this thread's line buffer, cleared.
fn with_line<R>(build: impl FnOnce(&mut String) -> R) -> R {
    LINE.with(|cell| {
        // A `Debug` value that logs while it is written finds the line taken: its line is built
        // in a buffer of its own.
        let mut spare = String::new();
        let mut taken = cell.try_borrow_mut();
        let line = match taken.as_deref_mut() {
            Ok(line) => line,
            Err(_) => &mut spare,
        };
        line.clear();
        let built = build(line);
        if line.capacity() > LINE_KEPT {
            line.shrink_to(LINE_KEPT);
        }
        built
    })
}

impl<F, T: FormatTime> AccessLines<F, T> {
    /// The whole line, its newline included, into `line`.
    fn write_line<S, N>(
        &self,
        ctx: &FmtContext<'_, S, N>,
        line: &mut String,
        event: &Event<'_>,
        sanitize: bool,
    ) -> fmt::Result
    where
        S: Subscriber + for<'a> LookupSpan<'a>,
        N: for<'a> FormatFields<'a> + 'static,
    {
        // A timer that fails is written over, not a reason to lose the line (the library's rule).
        if self.timer.format_time(&mut Writer::new(line)).is_err() {
            line.push_str("<unknown time>");
        }
        line.push_str(match *event.metadata().level() {
            Level::TRACE => " TRACE ",
            Level::DEBUG => " DEBUG ",
            Level::INFO => "  INFO ",
            Level::WARN => "  WARN ",
            Level::ERROR => " ERROR ",
        });
        write_scope::<_, N>(line, ctx.parent_span());
        let mut fields = Fields {
            line: &mut *line,
            first: true,
            sanitize,
            result: Ok(()),
        };
        event.record(&mut fields);
        fields.result?;
        line.push('\n');
        Ok(())
    }
}

/// The spans an event is in, outermost first, as the library writes them: `master: ` or
/// `worker{id=3}:conn{n=1}: ` (nothing outside any span). `span` is the innermost; `N` is the
/// field formatter whose text the spans keep.
fn write_scope<'a, R, N>(line: &mut String, span: Option<SpanRef<'a, R>>)
where
    R: LookupSpan<'a>,
    N: 'static,
{
    if let Some(span) = span {
        write_span::<R, N>(line, span);
        line.push(' ');
    }
}

/// `span` after its parents. Walked by hand rather than by the library's `Scope::from_root`,
/// which gathers the spans into a 16-place array first: under callgrind that walk cost an
/// access line more than its span's name and fields.
fn write_span<'a, R, N>(line: &mut String, span: SpanRef<'a, R>)
where
    R: LookupSpan<'a>,
    N: 'static,
{
    if let Some(parent) = span.parent() {
        write_span::<R, N>(line, parent);
    }
    line.push_str(span.metadata().name());
    let ext = span.extensions();
    if let Some(fields) = ext.get::<FormattedFields<N>>()
        && !fields.is_empty()
    {
        line.push('{');
        line.push_str(fields);
        line.push('}');
    }
    line.push(':');
}

/// Writes `name=value` pairs, space-separated, the message first without its name: the shape
/// of the library's default field formatter.
struct Fields<'a> {
    line: &'a mut String,
    first: bool,
    sanitize: bool,
    result: fmt::Result,
}

impl Fields<'_> {
    /// The separator and `name=` (nothing for the message); false if the field is not written.
    fn start(&mut self, field: &Field) -> bool {
        if self.result.is_err() {
            return false;
        }
        let name = field.name();
        // A `log` record's metadata, already in the line's head.
        if name.starts_with("log.") {
            return false;
        }
        if !std::mem::take(&mut self.first) {
            self.line.push(' ');
        }
        if name != "message" {
            self.line.push_str(name.strip_prefix("r#").unwrap_or(name));
            self.line.push('=');
        }
        true
    }
}

impl Visit for Fields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            return self.record_debug(field, &format_args!("{value}"));
        }
        if !self.start(field) {
            return;
        }
        self.result = write_str_value(self.line, value);
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        if self.start(field) {
            self.line.push_str(itoa::Buffer::new().format(value));
        }
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        if self.start(field) {
            self.line.push_str(itoa::Buffer::new().format(value));
        }
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        // The library sends a float to `record_debug`; the message is never one.
        let Some((whole, thousandths)) = thousandths(value).filter(|_| field.name() != "message")
        else {
            return self.record_debug(field, &value);
        };
        if self.start(field) {
            write_thousandths(self.line, whole, thousandths);
        }
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        if self.start(field) {
            self.line.push_str(if value { "true" } else { "false" });
        }
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        if !self.start(field) {
            return;
        }
        let sanitize = self.sanitize;
        self.result = write!(Escaping::new(self.line, sanitize), "{value}");
        if let Some(source) = value.source() {
            // The library names the list by the field's name as declared, `r#` and all.
            let name = field.name();
            self.result = self
                .result
                .and_then(|()| write!(self.line, " {name}.sources=["))
                .and_then(|()| {
                    let mut next = Some(source);
                    let mut first = true;
                    while let Some(err) = next {
                        if !std::mem::take(&mut first) {
                            self.line.push_str(", ");
                        }
                        write!(Escaping::new(self.line, sanitize), "{err}")?;
                        next = err.source();
                    }
                    self.line.push(']');
                    Ok(())
                });
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if !self.start(field) {
            return;
        }
        // The library guards only the message against terminal escapes: a field's `Debug` is
        // its own business, and a str's `Debug` escapes them anyway.
        self.result = if field.name() == "message" {
            let sanitize = self.sanitize;
            write!(Escaping::new(self.line, sanitize), "{value:?}")
        } else {
            write!(self.line, "{value:?}")
        };
    }
}

/// A str field's value as the library writes it, its `Debug`. That escapes quotes,
/// backslashes, controls and some Unicode: printable ASCII other than those comes out as it went
/// in, so it is copied between quotes.
fn write_str_value(line: &mut String, value: &str) -> fmt::Result {
    // Every byte checked, without stopping at the first that is not plain: a loop the compiler
    // can run over many bytes at once (an id is some 25).
    let plain = value.bytes().fold(true, |plain, b| {
        plain & (b' '..=b'~').contains(&b) & (b != b'"') & (b != b'\\')
    });
    if plain {
        line.push('"');
        line.push_str(value);
        line.push('"');
        Ok(())
    } else {
        write!(line, "{value:?}")
    }
}

/// `value` as whole and thousandths when it is a whole number of thousandths below 10^9, as the
/// access log's `duration_ms` is (to the microsecond); `None` for any other value.
///
/// Below 10^9 a unit in the last place of an `f64` is under 2^-22, far less than the 0.001
/// between two such values. So the decimal `whole.thousandths` is the shortest text that reads
/// back as `value`, which is what `{:?}` writes for it (in plain notation from 1e-4 to 1e16).
fn thousandths(value: f64) -> Option<(u64, u64)> {
    if !(0.0..1e9).contains(&value) || value.is_sign_negative() {
        return None;
    }
    let scaled = (value * 1000.0).round();
    // Only a value that is exactly the nearest float to some m/1000 is one of them.
    if scaled / 1000.0 != value {
        return None;
    }
    let m = scaled as u64;
    Some((m / 1000, m % 1000))
}

/// `whole.thousandths` as `{:?}` writes that float: trailing zeros cut, one digit kept (`2.0`).
fn write_thousandths(line: &mut String, whole: u64, thousandths: u64) {
    line.push_str(itoa::Buffer::new().format(whole));
    line.push('.');
    let digits = [
        b'0' + (thousandths / 100) as u8,
        b'0' + (thousandths / 10 % 10) as u8,
        b'0' + (thousandths % 10) as u8,
    ];
    let keep = match thousandths {
        t if t % 100 == 0 => 1,
        t if t % 10 == 0 => 2,
        _ => 3,
    };
    for &d in &digits[..keep] {
        line.push(char::from(d));
    }
}

/// Passes text through, with the characters a terminal would act on written as escapes when
/// `on` (the library's `ansi_sanitization`, on by default): a request path cannot rewrite
/// the operator's screen.
struct Escaping<'w> {
    inner: &'w mut String,
    on: bool,
}

impl<'w> Escaping<'w> {
    fn new(inner: &'w mut String, on: bool) -> Self {
        Self { inner, on }
    }
}

/// The characters a terminal acts on that the library's sanitizer escapes: ESC, BEL, BS, FF,
/// DEL and the C1 controls.
fn is_escaped(ch: char) -> bool {
    matches!(
        ch,
        '\x1b' | '\x07' | '\x08' | '\x0c' | '\x7f' | '\u{80}'..='\u{9f}'
    )
}

impl Write for Escaping<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        // The common case, text with nothing to escape, in one copy rather than a char at a time.
        if !self.on || !s.chars().any(is_escaped) {
            self.inner.push_str(s);
            return Ok(());
        }
        for ch in s.chars() {
            if !is_escaped(ch) {
                self.inner.push(ch);
            } else if ch.is_ascii() {
                write!(self.inner, "\\x{:02x}", ch as u32)?;
            } else {
                write!(self.inner, "\\u{{{:x}}}", ch as u32)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::sync::{Arc, Mutex};

    use tracing_subscriber::fmt::MakeWriter;

    use super::*;

    /// Every line written, kept.
    #[derive(Clone, Default)]
    struct Lines(Arc<Mutex<Vec<u8>>>);

    impl io::Write for Lines {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0
                .lock()
                .map_err(|_| io::ErrorKind::Other)?
                .extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Lines {
        type Writer = Lines;
        fn make_writer(&'a self) -> Lines {
            self.clone()
        }
    }

    impl Lines {
        fn take(&self) -> String {
            String::from_utf8(std::mem::take(&mut *self.0.lock().unwrap())).unwrap()
        }
    }

    /// The same instant every time, so two formatters' lines can be compared whole.
    struct Fixed;

    impl FormatTime for Fixed {
        fn format_time(&self, w: &mut Writer<'_>) -> fmt::Result {
            w.write_str("2026-12-02T00:00:00.000000Z")
        }
    }

    #[derive(Debug)]
    struct Outer(Inner);
    #[derive(Debug)]
    struct Inner;
    impl fmt::Display for Outer {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("outer \x1b[31m failed")
        }
    }
    impl fmt::Display for Inner {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("inner")
        }
    }
    impl std::error::Error for Outer {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }
    impl std::error::Error for Inner {}

    /// Access lines of every kind of value, inside `spans` (each entered in turn).
    fn emit_all(spans: Vec<tracing::Span>) {
        let _entered: Vec<_> = spans.iter().map(|s| s.enter()).collect();
        let paths = [
            "/ping",
            "/with space",
            "/q\"uote\\",
            "/caf\u{e9}",
            "/\x1b[2J",
            "/bel\x07bs\x08ff\x0cdel\x7f",
            "/c1\u{85}\u{9b}2J",
            "/\u{301}accent",
            "",
        ];
        for path in paths {
            tracing::info!(
                target: "request",
                request_id = "abc-123",
                method = %http::Method::POST,
                path = %path,
                quoted = path,
                worker = "1",
                status = 200u16,
                delta = -5i64,
                duration_ms = 1.5f64 / 3.0,
                whole_ms = 2.0f64,
                micros_ms = 1362.0f64 / 1000.0,
                ok = true,
                r#type = "raw",
                list = ?["a", "b"],
                "request"
            );
        }
        tracing::warn!(target: "request", "with \x1b[31m escape");
        let err = Outer(Inner);
        tracing::error!(target: "request", error = &err as &(dyn std::error::Error + 'static), "failed");
        tracing::info!(target: "request", error = &Inner as &(dyn std::error::Error + 'static));
        tracing::info!(target: "request", n = 7u64);
        // Floats on both sides of the hand-written path's edges, each against the library.
        for v in [
            0.0,
            -0.0,
            0.001,
            0.01,
            0.1 + 0.2,
            0.523_412_000_000_1,
            1e-7,
            999_999_999.999,
            1e9,
            1e16,
            f64::NAN,
            f64::INFINITY,
            -1.5,
        ] {
            tracing::info!(target: "request", duration_ms = v);
        }
        tracing::debug!(target: "request", "no fields");
        tracing::info!(target: "other", path = "/ping", "not the access log");
    }

    fn lines(ours: bool, span: fn() -> Vec<tracing::Span>) -> String {
        let out = Lines::default();
        let base = tracing_subscriber::fmt()
            .with_max_level(Level::TRACE)
            .with_ansi(false)
            .with_writer(out.clone());
        let format = tracing_subscriber::fmt::format()
            .with_target(false)
            .with_timer(Fixed);
        if ours {
            let subscriber = base
                .event_format(AccessLines {
                    inner: format,
                    timer: Fixed,
                    direct: false,
                })
                .finish();
            tracing::subscriber::with_default(subscriber, || emit_all(span()));
        } else {
            let subscriber = base.event_format(format).finish();
            tracing::subscriber::with_default(subscriber, || emit_all(span()));
        }
        out.take()
    }

    /// What `Fields` writes for `value`: the hand-written text or the library's.
    fn float_text(value: f64) -> Option<String> {
        let (whole, thousandths) = thousandths(value)?;
        let mut text = String::new();
        write_thousandths(&mut text, whole, thousandths);
        Some(text)
    }

    proptest::proptest! {
        #[test]
        fn a_whole_number_of_thousandths_is_written_as_debug_writes_it(m in 0u64..1_000_000_000_000) {
            let value = m as f64 / 1000.0;
            proptest::prop_assert_eq!(float_text(value), Some(format!("{value:?}")));
        }

        #[test]
        fn any_other_float_is_left_to_the_library_or_written_the_same(value in proptest::num::f64::ANY) {
            if let Some(text) = float_text(value) {
                proptest::prop_assert_eq!(text, format!("{value:?}"));
            }
        }
    }

    /// The spans an access line is tested in: none, the master's, a worker's, two nested.
    const SCOPES: [fn() -> Vec<tracing::Span>; 4] = [
        Vec::new,
        || vec![tracing::info_span!("master")],
        || vec![tracing::info_span!("worker", id = 3, name = "a b")],
        || {
            let outer = tracing::info_span!("master");
            let inner = outer.in_scope(|| tracing::info_span!("conn", n = 1));
            vec![outer, inner]
        },
    ];

    /// Each access's line as the library writes its event, and as [`direct_line`] writes it,
    /// inside the spans `scope` makes.
    fn both_ways(scope: fn() -> Vec<tracing::Span>, accesses: &[Access<'_>]) -> (String, String) {
        let out = Lines::default();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(out.clone())
            .event_format(
                tracing_subscriber::fmt::format()
                    .with_target(false)
                    .with_timer(Fixed),
            )
            .finish();
        let mut direct = String::new();
        tracing::subscriber::with_default(subscriber, || {
            let spans = scope();
            let _entered: Vec<_> = spans.iter().map(|s| s.enter()).collect();
            for access in accesses {
                access.event();
                tracing::dispatcher::get_default(|dispatch| {
                    let mut line = String::new();
                    assert!(
                        direct_line(dispatch, &Fixed, &mut line, access),
                        "{access:?}"
                    );
                    direct.push_str(&line);
                });
            }
        });
        (out.take(), direct)
    }

    #[test]
    fn a_direct_line_is_the_line_the_library_writes_for_the_event() {
        let get = http::Method::GET;
        let odd = http::Method::from_bytes(b"PURGE-ALL").unwrap();
        let base = Access {
            request_id: "c129a25c-0000000000000000",
            method: &get,
            path: "/ping",
            worker: "1",
            status: 200,
            micros: 1362,
        };
        let mut accesses = vec![base];
        for path in [
            "/with space",
            "/q\"uote\\",
            "/caf\u{e9}",
            "/\x1b[2J",
            "/c1\u{85}",
            "",
        ] {
            accesses.push(Access { path, ..base });
        }
        for request_id in [
            "",
            "trace-abc-123",
            "a \"quoted\" id",
            "tab\there",
            "\u{301}x",
        ] {
            accesses.push(Access { request_id, ..base });
        }
        for worker in ["master", "12", "a\\b"] {
            accesses.push(Access { worker, ..base });
        }
        for micros in [0, 1, 10, 100, 999, 1000, 1001, 2_000_000, 999_999_999_999] {
            accesses.push(Access { micros, ..base });
        }
        for status in [100, 404, 503, 999] {
            accesses.push(Access { status, ..base });
        }
        accesses.push(Access {
            method: &odd,
            ..base
        });
        for scope in SCOPES {
            let (want, got) = both_ways(scope, &accesses);
            assert_eq!(want.lines().count(), accesses.len(), "{want}");
            for (w, g) in want.lines().zip(got.lines()) {
                assert_eq!(g, w);
            }
            assert_eq!(got, want);
        }
    }

    #[test]
    fn the_direct_writer_declines_what_the_event_must_write() {
        let get = http::Method::GET;
        let access = Access {
            request_id: "abc",
            method: &get,
            path: "/ping",
            worker: "1",
            status: 200,
            micros: 5,
        };
        // A duration the event writes with the float formatter (over 11 days).
        let long = Access {
            micros: 1_000_000_000_000,
            ..access
        };
        let out = Lines::default();
        let library = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(out.clone())
            .finish();
        tracing::subscriber::with_default(library, || {
            tracing::dispatcher::get_default(|dispatch| {
                assert!(!direct_line(dispatch, &Fixed, &mut String::new(), &long));
            });
            assert!(
                !write_direct(&access),
                "another subscriber's lines are its own"
            );
        });
        assert_eq!(out.take(), "", "the direct writer wrote nothing itself");
        // Filtered out: nothing to write, by either way.
        let quiet = tracing_subscriber::fmt()
            .with_max_level(Level::WARN)
            .with_writer(out.clone())
            .finish();
        tracing::subscriber::with_default(quiet, || assert!(write_direct(&access)));
        assert_eq!(out.take(), "");
    }

    #[test]
    fn the_direct_writer_leaves_a_coloured_log_to_the_event() {
        // The cluster's own subscriber, but for a terminal: its lines need the library's colours.
        let get = http::Method::GET;
        let access = Access {
            request_id: "abc",
            method: &get,
            path: "/ping",
            worker: "1",
            status: 200,
            micros: 5,
        };
        let coloured = tracing_subscriber::fmt()
            .with_ansi(true)
            .with_writer(LogBuffer::install())
            .event_format(AccessLines::new(
                tracing_subscriber::fmt::format().with_target(false),
                true,
            ))
            .finish();
        tracing::subscriber::with_default(coloured, || assert!(!write_direct(&access)));
    }

    #[test]
    fn an_access_line_is_the_line_the_library_writes() {
        for span in SCOPES {
            let (want, got) = (lines(false, span), lines(true, span));
            assert!(want.lines().count() >= 12, "{want}");
            for (w, g) in want.lines().zip(got.lines()) {
                assert_eq!(g, w);
            }
            assert_eq!(got, want);
        }
        let plain = lines(true, || vec![tracing::info_span!("master")]);
        assert!(
            plain.contains("  INFO master: request request_id=\"abc-123\" method=POST path=/ping "),
            "{plain}"
        );
    }
}
