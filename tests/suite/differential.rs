//! Differential test: what the gateway judged is exactly what the upstream
//! receives, read the lenient way real backends read requests.
//!
//! A recording upstream (written here, on raw TCP) parses whatever arrives
//! leniently: methods upper-cased, targets resolved against `/`, `_` in header
//! names read as `-`, every copy of a header kept, paths routed in any letter
//! case (as Express, ASP.NET and IIS do). It answers a request that carries
//! `Upgrade` with `101 Switching Protocols` and then keeps reading the
//! "tunnel" as HTTP, the way a backend that trusts its proxy does.
//!
//! A seeded generator writes raw requests mixing method spellings, target
//! forms and letter cases (`/ADMIN/x`, `/Item/x`, `/LOGIN`), `_method` in every
//! spelling a framework reads (`;` separators, `.method`, ` _method`,
//! `[method`, `_method[...]`), HTTP/1.0 with and without Host, identity /
//! client-address / forwarding / URL-rewrite / hop-by-hop / override headers,
//! duplicate and odd Content-Types, form bodies (urlencoded and multipart, with
//! and without a `_method` field; small, chunked, exactly 64 KiB and, rarely,
//! larger), framing tricks, tokens and pipelining (all at once, or one after
//! the other on a kept-alive connection). Each request carries a unique
//! `X-Request-Id`, so the gateway's decision (its JSON access log and its
//! answer) and the upstream's arrivals can be matched. Then, for every request:
//!
//! - the decision follows the gateway's rules (an oracle written from the spec:
//!   canonical method and target, `_method` in the query and, where the route
//!   table judges methods differently, in form bodies (411 chunked, 413 over
//!   64 KiB), Host, Content-Type, framing, case-insensitive route and built-in
//!   paths, route policies);
//! - refused, answered by the gateway itself, or never answered: nothing with
//!   its id reached the upstream;
//! - forwarded: exactly one arrival, whose method and target are the canonical
//!   ones the gateway logged and matched (letter case kept), with no
//!   client-sent identity, client-address, URL-rewrite, override or hop-by-hop
//!   headers and no `_` header names, with exactly the `X-Forwarded-For` chain
//!   the gateway decided on (`<client>, <trusted hops...>, <peer>`) and the
//!   `X-Forwarded-Proto` / `-Host` / `Forwarded` it owes, one visible-ASCII
//!   Content-Type, no `_method` form field where an override would change the
//!   judgement, with the identity of the token that was used and only that,
//!   and which a re-judge (a model of the route table, matching in any letter
//!   case) allows with the identity that arrived;
//! - on a one-request-at-a-time connection, a request after one the gateway
//!   must keep the connection open for is answered (pipelined requests after
//!   the first are dropped by pingora, which closes: they must never arrive;
//!   and a pipelined request whose successor arrives while it is proxied may
//!   be given up on, closing without an answer, but not answered 502);
//! - nothing arrived that the gateway did not log as forwarded (smuggling,
//!   tunnels), and no request reached the upstream cut short unless the
//!   gateway gave up on it;
//! - the run covered enough: minimum shares of forwarded and refused requests,
//!   tunnels, later requests answered on kept-alive connections, letter-case
//!   variants, `_method` refusals from the query and from form bodies, and
//!   HTTP/1.0 (checked from 200 cases up).
//!
//! The same checks run over the tracker's known attacks, over a gateway behind
//! a trusted proxy (with `Forwarded` on) and one that rejects `_` header names;
//! and, without a gateway, over what the gateway did before the
//! request-integrity work (and other broken gateways: case-sensitive routes,
//! an attacker's chain passed on, closing after one request, ...), which must
//! fail them (so the run can fail if that class of bug comes back).
//!
//! Environment: `DIFFERENTIAL_CASES` (default 400), `DIFFERENTIAL_SEED`
//! (decimal or 0x-hex; the seed is printed), `DIFFERENTIAL_EXAMPLES` (failures
//! of each kind printed in full, default 2). The run prints its coverage
//! (decisions, connection ends) with `--nocapture`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use gatehouse::config::file::{FileConfig, HealthCheck, LogSection, Word};
use gatehouse::config::LogFormat;
use gatehouse::request::UnderscoreHeaders;
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

use crate::common::config::{route, spanned};
use crate::common::{Gateway, Options, Upstream};

const DEFAULT_SEED: u64 = 0x6a7e_4055_d1ff_0001;
const DEFAULT_CASES: usize = 400;
/// Concurrent client connections while running cases.
const WORKERS: usize = 4;
/// How long a client waits for any byte of an answer.
const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// After a 101, how long to wait for what comes back through the tunnel.
const TUNNEL_TIMEOUT: Duration = Duration::from_millis(1500);

/// The Host every generated request sends (and the expected X-Forwarded-Host).
const HOST: &str = "gatehouse.test";
/// The gateway sees every test connection from here.
const PEER_IP: &str = "127.0.0.1";
/// The identity headers the gateway injects, without the `x-auth-` prefix.
const IDENTITY_FIELDS: [&str; 7] = ["user-id", "username", "email", "admin", "fresh", "token-id", "roles"];
/// A form body where an override matters is read whole up to this (pingora's
/// body buffer); a longer one is refused with 413.
const FORM_LIMIT: usize = 64 * 1024;
/// Client-address and URL-rewrite headers no client request keeps (the
/// gateway sets `X-Forwarded-For` and, if configured, `Forwarded` itself).
const NEVER_FORWARDED: [&str; 8] = [
    "x-real-ip",
    "true-client-ip",
    "x-client-ip",
    "x-cluster-client-ip",
    "cf-connecting-ip",
    "x-original-url",
    "x-original-uri",
    "x-rewrite-url",
];
/// `X-Forwarded-*` headers passed on from a trusted proxy only, and never set
/// by the gateway (`-Proto` and `-Host` are checked apart).
const FORWARDED_URL: [&str; 3] = ["x-forwarded-port", "x-forwarded-prefix", "x-forwarded-server"];

/// Routes added to the harness's: an admin area, a websocket area, and a
/// public catch-all (the dangerous common setup: every unmatched request goes
/// through without a token, so a path or method the gateway reads differently
/// from the upstream is a bypass).
fn add_extra_routes(c: &mut FileConfig) {
    let mut ws = route("/ws/**", &[], "any");
    ws.get_mut().websocket = true;
    c.routes.extend([route("/admin/**", &[], "admin"), ws, route("/**", &[], "public")]);
}

/// The `[server]` settings a world can start with; the model reads them back.
#[derive(Clone, Copy, Default)]
struct Server {
    /// `trusted_proxies = ["127.0.0.1/32"]`: the test peer is a trusted proxy.
    trusted_peer: bool,
    /// `underscore_headers = "reject"`.
    underscore_reject: bool,
    /// `forwarded_header = true`.
    forwarded_header: bool,
}

impl Server {
    fn apply(self, c: &mut FileConfig) {
        if self.trusted_peer {
            c.server.trusted_proxies = Some(vec![spanned("127.0.0.1/32".into())]);
        }
        if self.underscore_reject {
            c.server.underscore_headers = Some(UnderscoreHeaders::Reject);
        }
        if self.forwarded_header {
            c.server.forwarded_header = Some(true);
        }
    }
}

// ============================================================================
// Recording upstream
// ============================================================================

/// One request as the recording upstream parsed it off the wire.
#[derive(Clone, Debug)]
struct Arrival {
    conn: usize,
    /// Parsed from a connection the upstream had already switched with a 101.
    in_tunnel: bool,
    method: String,
    target: Vec<u8>,
    /// Raw name (lossy UTF-8, trimmed) and raw value (trimmed).
    headers: Vec<(String, String)>,
    /// The body, de-chunked.
    body: Vec<u8>,
    head: Vec<u8>,
    /// The body arrived whole. A request whose body the gateway stopped
    /// sending (it aborted the exchange) is recorded with what came of it.
    complete: bool,
}

impl Arrival {
    /// Every value of every header a lenient backend reads as `name`
    /// (lower-case, `_` read as `-`).
    fn values(&self, name: &str) -> Vec<String> {
        self.headers.iter().filter(|(n, _)| lenient_name(n) == name).map(|(_, v)| v.clone()).collect()
    }

    /// (lenient name, value) for every header.
    fn lenient_headers(&self) -> impl Iterator<Item = (String, &str)> {
        self.headers.iter().map(|(n, v)| (lenient_name(n), v.as_str()))
    }

    fn show(&self) -> String {
        format!(
            "conn {}{}{}: {}{}",
            self.conn,
            if self.in_tunnel { " (inside a 101 tunnel)" } else { "" },
            if self.complete { "" } else { " (body cut short)" },
            show(&self.head),
            if self.body.is_empty() { String::new() } else { format!(" + body {}", show_short(&self.body)) }
        )
    }
}

fn lenient_name(name: &str) -> String {
    name.trim().to_ascii_lowercase().replace('_', "-")
}

/// Bytes that never formed a request: (upstream connection, bytes).
type Leftovers = Arc<Mutex<Vec<(usize, Vec<u8>)>>>;

struct Recorder {
    addr: SocketAddr,
    arrivals: Arc<Mutex<Vec<Arrival>>>,
    leftovers: Leftovers,
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
}

impl Recorder {
    fn start() -> Recorder {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let arrivals = Arc::new(Mutex::new(Vec::new()));
        let leftovers = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let accept = {
            let (arrivals, leftovers, stop) = (arrivals.clone(), leftovers.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut next_conn = 0;
                while !stop.load(Ordering::SeqCst) {
                    match listener.accept() {
                        Ok((stream, _)) => {
                            next_conn += 1;
                            let (arrivals, leftovers, stop) =
                                (arrivals.clone(), leftovers.clone(), stop.clone());
                            let conn = next_conn;
                            std::thread::spawn(move || {
                                serve_upstream_conn(stream, conn, arrivals, leftovers, stop)
                            });
                        }
                        Err(e) if e.kind() == ErrorKind::WouldBlock => {
                            std::thread::sleep(Duration::from_millis(2))
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(10)),
                    }
                }
            })
        };
        Recorder { addr, arrivals, leftovers, stop, accept: Some(accept) }
    }

    fn arrivals(&self) -> Vec<Arrival> {
        self.arrivals.lock().unwrap().clone()
    }

    fn leftovers(&self) -> Vec<(usize, Vec<u8>)> {
        self.leftovers.lock().unwrap().clone()
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }
}

fn serve_upstream_conn(
    mut stream: TcpStream,
    conn: usize,
    arrivals: Arc<Mutex<Vec<Arrival>>>,
    leftovers: Leftovers,
    stop: Arc<AtomicBool>,
) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
    let mut buf: Vec<u8> = Vec::new();
    let mut tunnel = false;
    loop {
        match parse_request(&buf) {
            Parsed::Complete(mut arrival, used) => {
                buf.drain(..used);
                arrival.conn = conn;
                arrival.in_tunnel = tunnel;
                let upgrade = arrival.values("upgrade").into_iter().next();
                let close =
                    arrival.values("connection").iter().any(|v| v.to_ascii_lowercase().contains("close"));
                let id = arrival.values("x-request-id").join(",");
                arrivals.lock().unwrap().push(arrival);
                let response = match upgrade {
                    Some(protocol) => {
                        tunnel = true;
                        format!(
                            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: {protocol}\r\nConnection: Upgrade\r\n\r\n"
                        )
                    }
                    None => {
                        let body = format!("recorded {id}");
                        format!(
                            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nX-Recorder: 1\r\n\r\n{body}",
                            body.len()
                        )
                    }
                };
                if stream.write_all(response.as_bytes()).is_err() || (close && !tunnel) {
                    break;
                }
                continue;
            }
            Parsed::Incomplete => {}
            Parsed::Bad => {
                leftovers.lock().unwrap().push((conn, std::mem::take(&mut buf)));
                let _ = stream
                    .write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
                break;
            }
        }
        let mut chunk = [0u8; 16384];
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
            }
            Err(_) => break,
        }
    }
    if buf.iter().any(|b| !b.is_ascii_whitespace()) {
        match cut_short(&buf) {
            Some(mut arrival) => {
                arrival.conn = conn;
                arrival.in_tunnel = tunnel;
                arrivals.lock().unwrap().push(arrival);
            }
            None => leftovers.lock().unwrap().push((conn, buf)),
        }
    }
}

enum Parsed {
    Complete(Arrival, usize),
    Incomplete,
    Bad,
}

/// Lenient request parsing: request line split on whitespace, header lines
/// split at the first `:`, body framed by chunked (any `Transfer-Encoding`
/// mentioning it) or else the first `Content-Length` number.
fn parse_request(buf: &[u8]) -> Parsed {
    let Some((lines, head_end)) = split_head(buf) else {
        return Parsed::Incomplete;
    };
    let Some(mut arrival) = parse_head(&lines, &buf[..head_end]) else {
        return Parsed::Bad;
    };
    let chunked =
        arrival.values("transfer-encoding").iter().any(|v| v.to_ascii_lowercase().contains("chunked"));
    if chunked {
        match parse_chunked(&buf[head_end..]) {
            Chunked::Done(body, used) => {
                arrival.body = body;
                Parsed::Complete(arrival, head_end + used)
            }
            Chunked::Incomplete => Parsed::Incomplete,
            Chunked::Bad => Parsed::Bad,
        }
    } else {
        let length = arrival
            .values("content-length")
            .first()
            .and_then(|v| v.split(',').next().and_then(|n| n.trim().parse::<usize>().ok()))
            .unwrap_or(0);
        if buf.len() < head_end + length {
            return Parsed::Incomplete;
        }
        arrival.body = buf[head_end..head_end + length].to_vec();
        Parsed::Complete(arrival, head_end + length)
    }
}

/// What is left on a connection that ended: a request whose body was cut
/// short (its head, and the raw bytes of body that came), or `None`.
fn cut_short(buf: &[u8]) -> Option<Arrival> {
    let (lines, head_end) = split_head(buf)?;
    let mut arrival = parse_head(&lines, &buf[..head_end])?;
    arrival.body = buf[head_end..].to_vec();
    arrival.complete = false;
    Some(arrival)
}

/// A request head: request line split on whitespace, header lines split at the first `:`.
fn parse_head(lines: &[&[u8]], head: &[u8]) -> Option<Arrival> {
    let mut parts = lines[0].split(|b| b.is_ascii_whitespace()).filter(|s| !s.is_empty());
    let (Some(method), Some(target)) = (parts.next(), parts.next()) else {
        return None;
    };
    let mut headers = Vec::new();
    for line in &lines[1..] {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        // Only ASCII whitespace trimmed: what the checks must see, byte for byte.
        let ascii_trim = |b: &[u8]| String::from_utf8_lossy(b.trim_ascii()).into_owned();
        headers.push((ascii_trim(&line[..colon]), ascii_trim(&line[colon + 1..])));
    }
    Some(Arrival {
        conn: 0,
        in_tunnel: false,
        method: String::from_utf8_lossy(method).into_owned(),
        target: target.to_vec(),
        headers,
        body: Vec::new(),
        head: head.to_vec(),
        complete: true,
    })
}

/// The lines of a message head (leading blank lines skipped, `\r` trimmed)
/// and the bytes it takes, blank line included; `None` until it is complete.
fn split_head(buf: &[u8]) -> Option<(Vec<&[u8]>, usize)> {
    let mut lines = Vec::new();
    let mut start = 0;
    while let Some(nl) = buf[start..].iter().position(|&b| b == b'\n') {
        let mut line = &buf[start..start + nl];
        if line.last() == Some(&b'\r') {
            line = &line[..line.len() - 1];
        }
        start += nl + 1;
        if line.is_empty() {
            if lines.is_empty() {
                continue;
            }
            return Some((lines, start));
        }
        lines.push(line);
    }
    None
}

enum Chunked {
    Done(Vec<u8>, usize),
    Incomplete,
    Bad,
}

fn parse_chunked(buf: &[u8]) -> Chunked {
    let mut pos = 0;
    let mut out = Vec::new();
    loop {
        let Some(nl) = buf[pos..].iter().position(|&b| b == b'\n') else {
            return Chunked::Incomplete;
        };
        let line = String::from_utf8_lossy(&buf[pos..pos + nl]).into_owned();
        let size_text = line.trim_end_matches('\r').split(';').next().unwrap_or("").trim().to_owned();
        let Ok(size) = usize::from_str_radix(&size_text, 16) else {
            return Chunked::Bad;
        };
        pos += nl + 1;
        if size == 0 {
            // Trailers until a blank line.
            loop {
                let Some(nl) = buf[pos..].iter().position(|&b| b == b'\n') else {
                    return Chunked::Incomplete;
                };
                let blank = buf[pos..pos + nl].iter().all(|&b| b == b'\r');
                pos += nl + 1;
                if blank {
                    return Chunked::Done(out, pos);
                }
            }
        }
        if buf.len() < pos + size + 1 {
            return Chunked::Incomplete;
        }
        out.extend_from_slice(&buf[pos..pos + size]);
        pos += size;
        if buf[pos..].starts_with(b"\r\n") {
            pos += 2;
        } else if buf[pos..].starts_with(b"\n") {
            pos += 1;
        } else if buf.len() < pos + 2 {
            return Chunked::Incomplete;
        } else {
            return Chunked::Bad;
        }
    }
}

// ============================================================================
// Canonical and lenient readings of targets
// ============================================================================

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

fn push_escape(out: &mut String, b: u8) {
    let _ = write!(out, "%{b:02X}");
}

/// Dot segments removed and empty segments collapsed, like the gateway's
/// normaliser (a trailing `/`, `/.` or `/..` leaves a trailing slash).
fn resolve_segments(decoded: &str) -> String {
    let mut segments: Vec<&str> = Vec::new();
    let mut trailing_slash = false;
    for segment in decoded.split('/').skip(1) {
        trailing_slash = false;
        match segment {
            "" | "." => trailing_slash = true,
            ".." => {
                segments.pop();
                trailing_slash = true;
            }
            s => segments.push(s),
        }
    }
    let mut normal = String::new();
    for s in &segments {
        normal.push('/');
        normal.push_str(s);
    }
    if normal.is_empty() || trailing_slash {
        normal.push('/');
    }
    normal
}

/// Why the spec refuses a request, and how it may be refused.
#[derive(Clone, Debug)]
struct Reason {
    status: u16,
    code: &'static str,
    /// pingora's own answer (no JSON body, no access-log line) is acceptable.
    plain_ok: bool,
    why: String,
}

/// A reason whose refusal may carry any error code (the spec names none).
const ANY_CODE: &str = "*";

fn reason(status: u16, code: &'static str, plain_ok: bool, why: impl Into<String>) -> Reason {
    Reason { status, code, plain_ok, why: why.into() }
}

/// Characters URIs don't allow that parsers accept: the gateway percent-encodes
/// them (with non-ASCII bytes), because backends decode them differently.
fn must_encode(b: u8) -> bool {
    b >= 0x80 || matches!(b, b'"' | b'<' | b'>' | b'^' | b'`' | b'{' | b'|' | b'}')
}

/// The canonical (path, query) the spec says the gateway forwards and matches
/// for a raw target, or why it refuses it.
fn canonical_target(raw: &[u8]) -> Result<(String, Option<String>), Reason> {
    if raw.first() != Some(&b'/') {
        return Err(reason(400, "invalid_path", true, "the target is not origin-form (no leading `/`)"));
    }
    if std::str::from_utf8(raw).is_err() {
        return Err(reason(400, "invalid_path", true, "the target is not UTF-8"));
    }
    if raw.contains(&b'#') {
        return Err(reason(400, "invalid_path", true, "a `#` fragment"));
    }
    let (path, query) = match raw.iter().position(|&b| b == b'?') {
        Some(q) => (&raw[..q], Some(&raw[q + 1..])),
        None => (raw, None),
    };
    let mut decoded = String::new();
    let mut i = 0;
    while i < path.len() {
        let b = path[i];
        match b {
            b'%' => {
                let (Some(h), Some(l)) =
                    (path.get(i + 1).and_then(|&h| hex(h)), path.get(i + 2).and_then(|&l| hex(l)))
                else {
                    return Err(reason(400, "invalid_path", false, "a broken percent escape"));
                };
                let v = h * 16 + l;
                match v {
                    b'/' | b'\\' => return Err(reason(400, "invalid_path", false, "an encoded `/` or `\\`")),
                    b';' => return Err(reason(400, "invalid_path", false, "an encoded `;`")),
                    v if v < 0x20 || v == 0x7f => {
                        return Err(reason(400, "invalid_path", false, "an encoded control character"))
                    }
                    v if is_unreserved(v) => decoded.push(v as char),
                    v => push_escape(&mut decoded, v),
                }
                i += 3;
                continue;
            }
            b'\\' => return Err(reason(400, "invalid_path", true, "a raw backslash")),
            b';' => return Err(reason(400, "invalid_path", false, "a `;` path parameter")),
            b if b < 0x20 || b == 0x7f => {
                return Err(reason(400, "invalid_path", true, "a raw control byte"))
            }
            b if must_encode(b) => push_escape(&mut decoded, b),
            b => decoded.push(b as char),
        }
        i += 1;
    }
    let query = match query.filter(|q| !q.is_empty()) {
        None => None,
        Some(q) => {
            let mut out = String::new();
            for &b in q {
                if must_encode(b) || b < 0x20 || b == 0x7f {
                    push_escape(&mut out, b);
                } else {
                    out.push(b as char);
                }
            }
            if broken_escape(out.as_bytes()) {
                return Err(reason(400, "invalid_path", false, "a broken percent escape in the query"));
            }
            if has_method_field(out.as_bytes()) {
                return Err(reason(400, "method_override_refused", false, "a `_method` query parameter"));
            }
            Some(out)
        }
    };
    Ok((resolve_segments(&decoded), query))
}

fn broken_escape(text: &[u8]) -> bool {
    text.iter().enumerate().any(|(i, &b)| {
        b == b'%'
            && !(text.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
                && text.get(i + 2).is_some_and(u8::is_ascii_hexdigit))
    })
}

fn join_target(path: &str, query: Option<&str>) -> String {
    match query {
        Some(q) => format!("{path}?{q}"),
        None => path.to_owned(),
    }
}

/// Whether some framework reads a decoded form field name as `_method`:
/// leading spaces (and tabs) dropped, ` ` and `.` read as `_` (PHP), an
/// unmatched `[` read as `_` (PHP: `[method`), `_method[...]` read as
/// `_method` (PHP, Rack), any letter case.
fn is_method_field(name: &[u8]) -> bool {
    let name: Vec<u8> = name.iter().copied().skip_while(|&b| b == b' ' || b == b'\t').collect();
    let unmatched = name.contains(&b'[') && !name.contains(&b']');
    let folded: Vec<u8> = name
        .iter()
        .map(|&b| match b {
            b'[' if unmatched => b'_',
            b' ' | b'.' => b'_',
            b => b.to_ascii_lowercase(),
        })
        .collect();
    let key = folded.split(|&b| b == b'[').next().unwrap_or_default();
    key == b"_method"
}

/// Whether a query or urlencoded body has a `_method` field: fields split on
/// `&` and `;` (Rack 2), names percent-decoded with `+` as a space.
fn has_method_field(fields: &[u8]) -> bool {
    fields.split(|&b| b == b'&' || b == b';').any(|field| {
        let name = field.split(|&b| b == b'=').next().unwrap_or(b"");
        is_method_field(&percent_decode(name))
    })
}

/// The `name` (or RFC 2231 `name*`) of every part of a multipart body, as a
/// framework reads it: parts start after `--boundary` lines, their headers end
/// at a blank line.
fn multipart_field_names(body: &[u8], boundary: &[u8]) -> Vec<Vec<u8>> {
    let mut delimiter = b"\n--".to_vec();
    delimiter.extend_from_slice(boundary);
    let body = [b"\n", body].concat();
    let mut names = Vec::new();
    let mut rest = &body[..];
    while let Some(at) = find(rest, &delimiter) {
        rest = &rest[at + delimiter.len()..];
        let Some(end) = find(rest, b"\r\n\r\n").or_else(|| find(rest, b"\n\n")) else { break };
        for line in rest[..end].split(|&b| b == b'\n') {
            let Some(colon) = line.iter().position(|&b| b == b':') else { continue };
            if !line[..colon].trim_ascii().eq_ignore_ascii_case(b"content-disposition") {
                continue;
            }
            for param in line[colon + 1..].split(|&b| b == b';').skip(1) {
                let Some(eq) = param.iter().position(|&b| b == b'=') else { continue };
                let (key, value) = (param[..eq].trim_ascii(), param[eq + 1..].trim_ascii());
                let value = match value {
                    [b'"', inner @ .., b'"'] | [b'\'', inner @ .., b'\''] => inner,
                    v => v,
                };
                if key.eq_ignore_ascii_case(b"name") {
                    names.push(value.to_vec());
                } else if key.eq_ignore_ascii_case(b"name*") {
                    let encoded = value.rsplit(|&b| b == b'\'').next().unwrap_or_default();
                    names.push(decode_percent(encoded, false));
                }
            }
        }
    }
    names
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// What a `Content-Type` makes of a body: a form a framework parses for
/// `_method`, and how.
#[derive(Clone, Debug, PartialEq, Eq)]
enum FormKind {
    UrlEncoded,
    Multipart(Vec<u8>),
}

/// The form kind of a `Content-Type` value. `lenient`: read as a lenient
/// backend does (Unicode spaces trimmed), else exactly (the gateway's reading).
fn form_kind(content_type: &str, lenient: bool) -> Option<FormKind> {
    let content_type = if lenient { content_type.trim_matches(char::is_whitespace) } else { content_type };
    let mut params = content_type.split(';');
    let essence = params
        .next()
        .unwrap_or("")
        .trim_matches(|c: char| c == ' ' || c == '\t' || (lenient && c.is_whitespace()));
    if essence.eq_ignore_ascii_case("application/x-www-form-urlencoded") {
        return Some(FormKind::UrlEncoded);
    }
    if !essence.eq_ignore_ascii_case("multipart/form-data") {
        return None;
    }
    params.find_map(|param| {
        let (key, value) = param.split_once('=')?;
        key.trim().eq_ignore_ascii_case("boundary").then(|| {
            let value = value.trim();
            let value = value.strip_prefix('"').and_then(|v| v.strip_suffix('"')).unwrap_or(value);
            FormKind::Multipart(value.as_bytes().to_vec())
        })
    })
}

/// Whether a body of this form kind has a `_method` field.
fn form_has_method_field(kind: &FormKind, body: &[u8]) -> bool {
    match kind {
        FormKind::UrlEncoded => has_method_field(body),
        FormKind::Multipart(boundary) => {
            multipart_field_names(body, boundary).iter().any(|name| is_method_field(name))
        }
    }
}

/// Percent-decoded, `+` read as a space (forms and queries).
fn percent_decode(bytes: &[u8]) -> Vec<u8> {
    decode_percent(bytes, true)
}

fn decode_percent(bytes: &[u8], plus_is_space: bool) -> Vec<u8> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match (bytes[i], bytes.get(i + 1).and_then(|&h| hex(h)), bytes.get(i + 2).and_then(|&l| hex(l))) {
            (b'%', Some(h), Some(l)) => {
                out.push(h * 16 + l);
                i += 3;
            }
            (b'+', _, _) if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    out
}

/// How a lenient backend resolves a target: scheme and authority dropped,
/// relative targets taken from `/`, unreserved characters, `/` and `\` decoded,
/// `\` read as `/`, dot segments removed, `//` collapsed. Returns (path, query).
fn lenient_target(raw: &[u8]) -> (String, Option<Vec<u8>>) {
    let (mut path, query) = match raw.iter().position(|&b| b == b'?') {
        Some(q) => (&raw[..q], Some(raw[q + 1..].to_vec())),
        None => (raw, None),
    };
    if let Some(fragment) = path.iter().position(|&b| b == b'#') {
        path = &path[..fragment];
    }
    let lower = path.to_ascii_lowercase();
    if let Some(scheme_end) = lower.windows(3).position(|w| w == b"://") {
        if lower[..scheme_end].iter().all(|b| b.is_ascii_alphabetic()) {
            let rest = &path[scheme_end + 3..];
            path = rest.iter().position(|&b| b == b'/').map_or(&b"/"[..], |slash| &rest[slash..]);
        }
    }
    let mut decoded = String::from("/");
    if path.first() == Some(&b'/') {
        decoded.clear();
    }
    let mut i = 0;
    while i < path.len() {
        let b = path[i];
        if b == b'%' {
            if let (Some(h), Some(l)) =
                (path.get(i + 1).and_then(|&h| hex(h)), path.get(i + 2).and_then(|&l| hex(l)))
            {
                let v = h * 16 + l;
                if is_unreserved(v) || v == b'/' {
                    decoded.push(v as char);
                } else if v == b'\\' {
                    decoded.push('/');
                } else {
                    push_escape(&mut decoded, v);
                }
                i += 3;
                continue;
            }
        }
        match b {
            b'\\' => decoded.push('/'),
            b if b >= 0x80 => push_escape(&mut decoded, b),
            b => decoded.push(b as char),
        }
        i += 1;
    }
    (resolve_segments(&decoded), query)
}

/// Why a target that reached the upstream is not in canonical form, if it isn't.
fn non_canonical(target: &[u8]) -> Option<String> {
    if target.first() != Some(&b'/') {
        return Some("it does not start with `/`".into());
    }
    if let Some(&b) = target.iter().find(|&&b| !(0x21..=0x7e).contains(&b)) {
        return Some(format!(
            "it holds the raw byte {b:#04x} (spaces, controls and non-ASCII must be percent-encoded)"
        ));
    }
    let path = target.split(|&b| b == b'?').next().unwrap_or(b"");
    if target.contains(&b'#') {
        return Some("it holds a fragment".into());
    }
    if path.contains(&b'\\') {
        return Some("its path holds a backslash".into());
    }
    if path.contains(&b';') {
        return Some("its path holds `;`".into());
    }
    let mut i = 0;
    while i < path.len() {
        if path[i] == b'%' {
            let escape = path.get(i + 1..i + 3).unwrap_or(&[]);
            let (Some(h), Some(l)) =
                (escape.first().and_then(|&h| hex(h)), escape.get(1).and_then(|&l| hex(l)))
            else {
                return Some("its path has a broken escape".into());
            };
            let v = h * 16 + l;
            if escape.iter().any(u8::is_ascii_lowercase) {
                return Some(format!("its path has a lower-case escape %{}", show(escape)));
            }
            if is_unreserved(v) || v == b'/' || v == b'\\' || v == b';' || v < 0x20 || v == 0x7f {
                return Some(format!(
                    "its path has an escape that must be decoded or refused: %{}",
                    show(escape)
                ));
            }
            i += 3;
        } else {
            i += 1;
        }
    }
    let text = String::from_utf8_lossy(path);
    if text.contains("//") {
        return Some("its path has `//`".into());
    }
    if text.split('/').any(|s| s == "." || s == "..") {
        return Some("its path has dot segments".into());
    }
    None
}

// ============================================================================
// A model of the route table (harness routes + add_extra_routes)
// ============================================================================

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Policy {
    Public,
    Optional,
    Any,
    Fresh,
    Admin,
    AdminFresh,
    Deny,
}

/// The route the gateway must match for a canonical method and path: exact
/// patterns first, then `/**` prefixes from the longest; HEAD follows GET.
/// Literal segments match in any ASCII letter case.
fn model_route(method: &str, path: &str) -> (&'static str, Policy) {
    let lower = path.to_ascii_lowercase();
    let segs: Vec<&str> = lower.split('/').filter(|s| !s.is_empty()).collect();
    let get_like = method == "GET" || method == "HEAD";
    match segs.as_slice() {
        ["item", _] if get_like => return ("/item/{name}", Policy::Any),
        ["item", _] if method == "POST" => return ("/item/{name}", Policy::Fresh),
        ["item", _] if method == "DELETE" => return ("/item/{name}", Policy::Admin),
        ["items"] if get_like => return ("/items", Policy::Optional),
        ["product", _] if method == "DELETE" => return ("/product/{name}", Policy::AdminFresh),
        ["debug", "slow"] => return ("/debug/slow", Policy::Public),
        _ => {}
    }
    if let ["debug", "echo", which, ..] = segs.as_slice() {
        let found = match *which {
            "public" => Some(("/debug/echo/public/**", Policy::Public)),
            "optional" => Some(("/debug/echo/optional/**", Policy::Optional)),
            "any" => Some(("/debug/echo/any/**", Policy::Any)),
            "fresh" => Some(("/debug/echo/fresh/**", Policy::Fresh)),
            "admin" => Some(("/debug/echo/admin/**", Policy::Admin)),
            "deny" => Some(("/debug/echo/deny/**", Policy::Deny)),
            _ => None,
        };
        if let Some(found) = found {
            return found;
        }
    }
    match segs.first() {
        Some(&"admin") => ("/admin/**", Policy::Admin),
        Some(&"ws") => ("/ws/**", Policy::Any),
        _ => ("/**", Policy::Public),
    }
}

/// Whether the route table judges every method alike on a path: there a
/// `_method` override can't change the judgement, so form bodies go unread.
fn judged_alike(path: &str) -> bool {
    let methods = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];
    let first = model_route("POST", path).1;
    methods.iter().all(|m| model_route(m, path).1 == first)
}

const WEBSOCKET_ROUTE: &str = "/ws/**";

/// Paths of the gateway's own endpoints, read leniently (trailing `/` ignored,
/// any letter case): such a request must be answered by the gateway or
/// refused, never forwarded.
fn endpoint_like(path: &str) -> bool {
    let lower = path.to_ascii_lowercase();
    let p = lower.trim_end_matches('/');
    if matches!(p, "/login" | "/refresh" | "/logout" | "/register" | "/.well-known/jwks.json") {
        return true;
    }
    match p.strip_prefix("/user/") {
        Some(rest) => {
            let parts: Vec<&str> = rest.split('/').collect();
            matches!(parts.as_slice(), [id] if !id.is_empty()) || matches!(parts.as_slice(), [_, "tokens"])
        }
        None => false,
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Caller {
    admin: bool,
    fresh: bool,
}

fn allows(policy: Policy, caller: Option<Caller>) -> bool {
    match policy {
        Policy::Public | Policy::Optional => true,
        Policy::Any => caller.is_some(),
        Policy::Fresh => caller.is_some_and(|c| c.fresh),
        Policy::Admin => caller.is_some_and(|c| c.admin),
        Policy::AdminFresh => caller.is_some_and(|c| c.admin && c.fresh),
        Policy::Deny => false,
    }
}

// ============================================================================
// Requests, tokens and cases
// ============================================================================

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Tok {
    None,
    /// A normal user's access token, fresh (from /login).
    User,
    /// The same user's access token from /refresh (not fresh).
    UserStale,
    /// The admin's fresh access token.
    Admin,
}

struct Identity {
    token: String,
    user_id: u64,
    username: String,
    email: String,
    admin: bool,
    fresh: bool,
    /// `x-auth-roles` as the gateway writes it: the token's roles (no test
    /// user's roles change here), sorted, comma-separated.
    roles: String,
}

struct Tokens {
    user: Identity,
    user_stale: Identity,
    admin: Identity,
}

impl Tokens {
    fn get(&self, tok: Tok) -> Option<&Identity> {
        match tok {
            Tok::None => None,
            Tok::User => Some(&self.user),
            Tok::UserStale => Some(&self.user_stale),
            Tok::Admin => Some(&self.admin),
        }
    }
}

#[derive(Clone, Debug)]
struct Req {
    id: String,
    method: String,
    target: Vec<u8>,
    /// `HTTP/1.1` or `HTTP/1.0`.
    version: &'static str,
    /// Header lines in order; the first is Host (unless removed).
    /// X-Request-Id and Authorization are written right after the first.
    headers: Vec<(String, String)>,
    /// Bytes after the head.
    body: Vec<u8>,
    /// What the body means (de-chunked): what an upstream must receive.
    payload: Vec<u8>,
    token: Tok,
    /// Nothing may be sent after it on the connection (ambiguous framing,
    /// possible tunnels, CONNECT, HTTP/1.0, bodies the gateway may leave unread).
    last: bool,
    /// The gateway may answer and close before reading the body (over 64 KiB):
    /// an error writing the body is no failure.
    unread_body_ok: bool,
    notes: Vec<String>,
}

impl Req {
    fn new(method: &str, target: &[u8]) -> Req {
        Req {
            id: String::new(),
            method: method.to_owned(),
            target: target.to_vec(),
            version: "HTTP/1.1",
            headers: vec![("Host".into(), HOST.into())],
            body: Vec::new(),
            payload: Vec::new(),
            token: Tok::None,
            last: false,
            unread_body_ok: false,
            notes: Vec::new(),
        }
    }

    /// HTTP/1.0, with or without its Host; pingora closes after the answer.
    fn http10(mut self, host: bool) -> Req {
        self.version = "HTTP/1.0";
        if !host {
            self.headers.retain(|(n, _)| !n.eq_ignore_ascii_case("host"));
        }
        self.last = true;
        self.note(if host { "HTTP/1.0" } else { "HTTP/1.0 without Host" });
        self
    }

    /// Over 64 KiB: may be answered and closed on before the body is read.
    fn unread(mut self) -> Req {
        self.unread_body_ok = true;
        self.last = true;
        self
    }

    /// A body sent with `Content-Length`, or chunked (in two chunks when it can be split).
    fn body(mut self, payload: &[u8], chunked: bool) -> Req {
        if chunked {
            self.headers.push(("Transfer-Encoding".into(), "chunked".into()));
            let mut body = Vec::new();
            let half = payload.len() / 2;
            for piece in [&payload[..half], &payload[half..]] {
                if !piece.is_empty() {
                    body.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
                    body.extend_from_slice(piece);
                    body.extend_from_slice(b"\r\n");
                }
            }
            body.extend_from_slice(b"0\r\n\r\n");
            self.body = body;
        } else {
            self.headers.push(("Content-Length".into(), payload.len().to_string()));
            self.body = payload.to_vec();
        }
        self.payload = payload.to_vec();
        self
    }

    fn header(mut self, name: &str, value: &str) -> Req {
        self.headers.push((name.into(), value.into()));
        self
    }

    fn token(mut self, tok: Tok) -> Req {
        self.token = tok;
        self
    }

    fn framing(mut self, framing: Framing) -> Req {
        framing.apply(&mut self);
        self
    }

    fn note(&mut self, note: impl Into<String>) {
        self.notes.push(note.into());
    }

    /// The bytes on the wire; tokens written as placeholders without `tokens`.
    fn wire(&self, tokens: Option<&Tokens>) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(self.method.as_bytes());
        out.push(b' ');
        out.extend_from_slice(&self.target);
        out.extend_from_slice(format!(" {}\r\n", self.version).as_bytes());
        let ours = |out: &mut Vec<u8>| {
            out.extend_from_slice(format!("X-Request-Id: {}\r\n", self.id).as_bytes());
            if self.token != Tok::None {
                let token = match tokens.and_then(|t| t.get(self.token)) {
                    Some(identity) => identity.token.clone(),
                    None => format!("<{:?} token>", self.token),
                };
                out.extend_from_slice(format!("Authorization: Bearer {token}\r\n").as_bytes());
            }
        };
        if self.headers.is_empty() {
            ours(&mut out);
        }
        for (i, (name, value)) in self.headers.iter().enumerate() {
            out.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
            if i == 0 {
                ours(&mut out);
            }
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(&self.body);
        out
    }

    /// Whether the client asked to close the connection after this request.
    fn asks_close(&self) -> bool {
        self.sent("connection")
            .iter()
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case("close"))
    }

    /// Client header values under exactly this name (case-insensitive, no `_` folding).
    fn sent(&self, name: &str) -> Vec<&str> {
        self.headers.iter().filter(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str()).collect()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Framing {
    None,
    Cl,
    ClTwice,
    ClComma,
    ClDiffer,
    Chunked,
    TeGzipChunked,
    TeTwice,
    TeIdentity,
    ClAndTe,
    ClPlus,
}

const CHUNKED_HELLO: &[u8] = b"5\r\nhello\r\n0\r\n\r\n";

impl Framing {
    fn apply(self, r: &mut Req) {
        let hello = b"hello".to_vec();
        let mut header = |n: &str, v: &str| r.headers.push((n.into(), v.into()));
        match self {
            Framing::None => {}
            Framing::Cl => header("Content-Length", "5"),
            Framing::ClTwice => {
                header("Content-Length", "5");
                header("Content-Length", "5");
            }
            Framing::ClComma => header("Content-Length", "5, 5"),
            Framing::ClDiffer => {
                header("Content-Length", "5");
                header("Content-Length", "6");
            }
            Framing::Chunked => header("Transfer-Encoding", "chunked"),
            Framing::TeGzipChunked => header("Transfer-Encoding", "gzip, chunked"),
            Framing::TeTwice => {
                header("Transfer-Encoding", "chunked");
                header("Transfer-Encoding", "chunked");
            }
            Framing::TeIdentity => {
                header("Transfer-Encoding", "identity");
                header("Content-Length", "5");
            }
            Framing::ClAndTe => {
                header("Content-Length", "5");
                header("Transfer-Encoding", "chunked");
            }
            Framing::ClPlus => header("Content-Length", "+5"),
        }
        match self {
            Framing::None => {}
            Framing::Cl | Framing::ClTwice | Framing::ClComma | Framing::ClPlus | Framing::TeIdentity => {
                r.body = hello.clone();
                r.payload = hello;
            }
            Framing::ClDiffer => {
                r.body = b"hello!".to_vec();
                r.payload = hello;
            }
            Framing::Chunked | Framing::TeGzipChunked | Framing::TeTwice | Framing::ClAndTe => {
                r.body = CHUNKED_HELLO.to_vec();
                r.payload = hello;
            }
        }
        if !matches!(
            self,
            Framing::None | Framing::Cl | Framing::ClTwice | Framing::ClComma | Framing::Chunked
        ) {
            r.last = true;
        }
        if self != Framing::None {
            r.note(format!("framing {self:?}"));
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// Every request written at once.
    Pipelined,
    /// One request, its answer, then the next on the same connection.
    Sequential,
}

#[derive(Clone, Debug)]
struct Case {
    label: String,
    mode: Mode,
    reqs: Vec<Req>,
}

// ============================================================================
// The generator
// ============================================================================

fn pick<'a, T>(rng: &mut StdRng, items: &'a [(u32, T)]) -> &'a T {
    let total: u32 = items.iter().map(|(w, _)| w).sum();
    let mut roll = rng.random_range(0..total);
    for (w, item) in items {
        if roll < *w {
            return item;
        }
        roll -= w;
    }
    unreachable!()
}

const BASES: &[&[u8]] = &[
    b"/item/x",
    b"/item/chair",
    b"/items",
    b"/admin/x",
    b"/admin/secret",
    b"/public/x",
    b"/debug/echo/admin/x",
    b"/debug/echo/public/x",
    b"/debug/echo/any/x",
    b"/debug/echo/deny/x",
    b"/product/x",
    b"/login",
    b"/caf\xc3\xa9",
    b"/",
    b"/ws/chat",
    // Letter-case variants: judged by the same routes, forwarded as sent.
    b"/ADMIN/x",
    b"/Admin/secret",
    b"/Item/x",
    b"/ITEM/chair",
    b"/ITEMS",
    b"/Product/x",
    b"/Debug/Echo/Admin/x",
    b"/DEBUG/echo/DENY/x",
    b"/LOGIN",
    b"/Login/",
    b"/User/999",
    b"/REGISTER",
];

const QUERIES: &[(u32, &[u8])] = &[
    (40, b""),
    (2, b"?a=1"),
    (1, b"?_method=DELETE"),
    (1, b"?%5Fmethod=delete"),
    (1, b"?x=1&_METHOD=put"),
    (1, b"?_method"),
    (1, b"?q=caf\xc3\xa9"),
    (1, b"?next=/admin/x"),
    (1, b"?__method=x"),
    (1, b"?method=DELETE"),
    (1, b"?q=%2e%2e/a"),
    // `_method` the way Rack, PHP and friends also read it.
    (1, b"?a=1;_method=DELETE"),
    (1, b"?.method=DELETE"),
    (1, b"?%2Emethod=DELETE"),
    (1, b"?+_method=DELETE"),
    (1, b"?%20%20_method=DELETE"),
    (1, b"?%09_method=DELETE"),
    (1, b"?_method[]=DELETE"),
    (1, b"?_method[x]=DELETE"),
    (1, b"?_method%5B%5D=DELETE"),
    (1, b"?[method=DELETE"),
    (1, b"?%5Bmethod=DELETE"),
    (1, b"?_MeThOd=patch"),
    (1, b"?a=1;b=2;%5fMETHOD"),
    (1, b"?_method[aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa]=DELETE"),
    // Not `_method` for any framework.
    (1, b"?my_method=1&_methods=2&x=_method"),
    (1, b"?a[_method]=DELETE"),
    (1, b"?_method.x=1"),
    (1, b"?_method[=DELETE"),
    (1, b"?a=1;b=2"),
];

#[derive(Clone, Copy, Debug)]
enum Transform {
    Verbatim,
    Relative,
    PublicDotDot,
    EncodedDotDot,
    DoubleSlash,
    Star,
    Absolute,
    DotSlash,
    EncodeLetter,
    EncodeSlash,
    TrailingSlash,
    PublicEncodedDotDot,
    DotDotRelative,
    Semicolon,
    LowerEscape,
    Upper,
    MixedCase,
}

const TRANSFORMS: &[(u32, Transform)] = &[
    (18, Transform::Verbatim),
    (2, Transform::Relative),
    (2, Transform::PublicDotDot),
    (1, Transform::EncodedDotDot),
    (1, Transform::DoubleSlash),
    (1, Transform::Star),
    (1, Transform::Absolute),
    (1, Transform::DotSlash),
    (1, Transform::EncodeLetter),
    (1, Transform::EncodeSlash),
    (1, Transform::TrailingSlash),
    (1, Transform::PublicEncodedDotDot),
    (1, Transform::DotDotRelative),
    (1, Transform::Semicolon),
    (1, Transform::LowerEscape),
    (2, Transform::Upper),
    (2, Transform::MixedCase),
];

fn transform(t: Transform, base: &[u8]) -> Vec<u8> {
    let cat = |a: &[u8], b: &[u8]| [a, b].concat();
    match t {
        Transform::Verbatim => base.to_vec(),
        Transform::Relative => base[1..].to_vec(),
        Transform::PublicDotDot => cat(b"/public/..", base),
        Transform::EncodedDotDot => cat(b"/%2e%2e", base),
        Transform::DoubleSlash => cat(b"/", base),
        Transform::Star => cat(b"*", base),
        Transform::Absolute => cat(b"http://gatehouse.test", base),
        Transform::DotSlash => cat(b"/.", base),
        Transform::EncodeLetter => match base.iter().position(u8::is_ascii_lowercase) {
            Some(i) => [&base[..i], format!("%{:02x}", base[i]).as_bytes(), &base[i + 1..]].concat(),
            None => base.to_vec(),
        },
        Transform::EncodeSlash => match base.iter().rposition(|&b| b == b'/') {
            Some(i) if i > 0 => [&base[..i], b"%2f", &base[i + 1..]].concat(),
            _ => base.to_vec(),
        },
        Transform::TrailingSlash => cat(base, b"/"),
        Transform::PublicEncodedDotDot => cat(b"/public/%2E%2E", base),
        Transform::DotDotRelative => cat(b"..", base),
        Transform::Semicolon => cat(b"/x;y/..", base),
        Transform::LowerEscape => cat(base, b"/%2a"),
        Transform::Upper => base.to_ascii_uppercase(),
        // The first letter of every segment flipped: `/item/x` is `/Item/X`.
        Transform::MixedCase => {
            let mut out = base.to_vec();
            for i in 0..out.len() {
                if (i == 0 || base[i - 1] == b'/') && out[i].is_ascii_alphabetic() {
                    out[i] ^= 0x20;
                }
            }
            out
        }
    }
}

fn random_target(rng: &mut StdRng, bases: &[&[u8]], note: &mut Vec<String>) -> Vec<u8> {
    if rng.random_bool(0.04) {
        let odd: &[u8] = pick::<&[u8]>(
            rng,
            &[
                (1, &b"*"[..]),
                (1, &b"gatehouse.test:443"[..]),
                (1, &b"/caf\xe9"[..]),
                (1, &b"/public\\..\\admin/x"[..]),
                (1, &b"../admin/x"[..]),
                (1, &b"*/admin/x"[..]),
            ],
        );
        note.push("odd target".into());
        return odd.to_vec();
    }
    let base = bases.choose(rng).unwrap();
    let t = *pick(rng, TRANSFORMS);
    let mut target = transform(t, base);
    if !matches!(t, Transform::Verbatim) {
        note.push(format!("target {t:?}"));
    }
    let query = *pick(rng, QUERIES);
    target.extend_from_slice(query);
    target
}

struct HeaderGroup {
    name: &'static str,
    lines: &'static [(&'static str, &'static str)],
    /// Must be the last request of its connection (may open a tunnel).
    last: bool,
}

const fn group(name: &'static str, lines: &'static [(&'static str, &'static str)]) -> HeaderGroup {
    HeaderGroup { name, lines, last: false }
}

const HEADER_GROUPS: &[(u32, HeaderGroup)] = &[
    // Identity headers, every spelling.
    (2, group("identity", &[("X-Auth-User-Id", "1")])),
    (1, group("identity", &[("x-auth-user-id", "1")])),
    (2, group("identity", &[("X_Auth_User_Id", "1")])),
    (1, group("identity", &[("x_auth_user_id", "1")])),
    (2, group("identity", &[("X-Auth_User-Id", "1")])),
    (1, group("identity", &[("X-AUTH-USER-ID", "1")])),
    (2, group("identity", &[("X-Auth-Admin", "true")])),
    (2, group("identity", &[("x_auth_admin", "true")])),
    (1, group("identity", &[("X_AUTH_ADMIN", "true")])),
    (1, group("identity", &[("x-auth_admin", "true")])),
    (1, group("identity", &[("X-Auth-Email", "root@example.com"), ("X-Auth-Username", "root")])),
    (1, group("identity", &[("X-Auth-Fresh", "true"), ("X-Auth-Token-Id", "forged")])),
    (1, group("identity", &[("X-Auth-Role", "admin")])),
    (1, group("identity", &[("X-Auth-User-Id", "1"), ("X-Auth-User-Id", "2")])),
    (1, group("identity", &[("X-Auth-Admin", "true"), ("x_auth_admin", "true"), ("X_Auth_User_Id", "1")])),
    // Forwarding headers.
    (2, group("forwarding", &[("X-Forwarded-For", "1.2.3.4")])),
    (1, group("forwarding", &[("X_Forwarded_For", "1.2.3.4")])),
    (1, group("forwarding", &[("x-forwarded-for", "10.0.0.1, 1.2.3.4")])),
    (1, group("forwarding", &[("X-Real-IP", "1.2.3.4")])),
    (1, group("forwarding", &[("Forwarded", "for=1.2.3.4;proto=https")])),
    (1, group("forwarding", &[("X-Forwarded-Host", "evil.test"), ("X-Forwarded-Proto", "https")])),
    (1, group("forwarding", &[("X-Forwarded-For", "6.6.6.6, 1.2.3.4"), ("X-Forwarded-For", "127.0.0.1")])),
    (1, group("forwarding", &[("X-Forwarded-For", "1.2.3.4, 127.0.0.1, 10.0.0.1:8080")])),
    (1, group("forwarding", &[("X-Forwarded-For", "[2001:db8::1]:443, 127.0.0.1")])),
    (1, group("forwarding", &[("X-Forwarded-For", "unknown, 1.2.3.4")])),
    (1, group("forwarding", &[("X-Forwarded-Proto", "ftp"), ("X-Forwarded-Port", "443")])),
    (1, group("forwarding", &[("X-Forwarded-Prefix", "/admin"), ("X-Forwarded-Server", "evil.test")])),
    // Client addresses some backends believe.
    (1, group("client-address", &[("True-Client-IP", "1.2.3.4")])),
    (1, group("client-address", &[("X-Client-IP", "1.2.3.4"), ("X-Cluster-Client-IP", "1.2.3.4")])),
    (1, group("client-address", &[("CF-Connecting-IP", "1.2.3.4")])),
    // URL rewrites (IIS, Zend, older Symfony route on them).
    (1, group("rewrite", &[("X-Original-URL", "/admin/secret")])),
    (1, group("rewrite", &[("X-Original-URI", "/admin/secret")])),
    (1, group("rewrite", &[("X-Rewrite-URL", "/admin/secret")])),
    (1, group("rewrite", &[("x-original-url", "/item/x"), ("X_Rewrite_URL", "/admin/x")])),
    // Upgrades (may open a tunnel on the websocket route: last on their connection).
    (
        2,
        HeaderGroup {
            name: "upgrade",
            lines: &[("Upgrade", "websocket"), ("Connection", "Upgrade")],
            last: true,
        },
    ),
    (1, HeaderGroup { name: "upgrade", lines: &[("Upgrade", "websocket")], last: true }),
    (
        1,
        HeaderGroup {
            name: "upgrade",
            lines: &[
                ("Upgrade", "h2c"),
                ("Connection", "Upgrade, HTTP2-Settings"),
                ("HTTP2-Settings", "AAMAAABkAARAAAAAAAIAAAAA"),
            ],
            last: true,
        },
    ),
    (
        1,
        HeaderGroup {
            name: "upgrade",
            lines: &[
                ("Connection", "upgrade, x-auth-admin"),
                ("Upgrade", "websocket"),
                ("X-Auth-Admin", "true"),
            ],
            last: true,
        },
    ),
    // Hop-by-hop.
    (1, group("hop-by-hop", &[("Connection", "keep-alive, x-custom-hop"), ("X-Custom-Hop", "1")])),
    (1, group("hop-by-hop", &[("Keep-Alive", "timeout=5")])),
    (1, group("hop-by-hop", &[("Proxy-Connection", "keep-alive")])),
    (1, group("hop-by-hop", &[("TE", "trailers")])),
    // Method overrides.
    (1, group("override", &[("X-HTTP-Method-Override", "DELETE")])),
    (1, group("override", &[("X-HTTP-Method", "DELETE")])),
    (1, group("override", &[("X-Method-Override", "DELETE")])),
    (1, group("override", &[("X_HTTP_Method_Override", "DELETE")])),
    // Content-Type: one visible-ASCII value or nothing.
    (1, group("content-type", &[("Content-Type", "text/plain"), ("Content-Type", "application/json")])),
    (
        1,
        group(
            "content-type",
            &[
                ("Content-Type", "application/x-www-form-urlencoded"),
                ("content-type", "application/x-www-form-urlencoded"),
            ],
        ),
    ),
    (1, group("content-type", &[("Content-Type", "application/x-www-form-urlencoded\u{a0}")])),
    (1, group("content-type", &[("Content-Type", "multipart/form-data\u{85}; boundary=xyz")])),
    (1, group("content-type", &[("Content_Type", "application/x-www-form-urlencoded")])),
    (1, group("content-type", &[("Content-Type", "application/json")])),
    (1, group("content-type", &[("Content-Type", "application/x-www-form-urlencoded")])),
    // Other.
    (1, group("connection close", &[("Connection", "close")])),
    (1, group("underscore", &[("Some_Header", "v")])),
    (1, group("plain", &[("X-Custom", "ok")])),
    (1, group("second host", &[("Host", "evil.test")])),
];

const FRAMINGS: &[(u32, Framing)] = &[
    (30, Framing::None),
    (3, Framing::Cl),
    (1, Framing::ClTwice),
    (1, Framing::ClComma),
    (1, Framing::ClDiffer),
    (2, Framing::Chunked),
    (1, Framing::TeGzipChunked),
    (1, Framing::TeTwice),
    (1, Framing::TeIdentity),
    (1, Framing::ClAndTe),
    (1, Framing::ClPlus),
];

const TOKENS: &[(u32, Tok)] = &[(8, Tok::None), (4, Tok::User), (3, Tok::UserStale), (5, Tok::Admin)];

fn random_request(rng: &mut StdRng) -> Req {
    if rng.random_bool(0.1) {
        return form_request(rng);
    }
    let method = *pick(
        rng,
        &[
            (14, "GET"),
            (2, "get"),
            (1, "Get"),
            (6, "DELETE"),
            (2, "delete"),
            (1, "dElEtE"),
            (5, "POST"),
            (1, "G3T"),
            (1, "CONNECT"),
            (1, "OPTIONS"),
        ],
    );
    let mut notes = Vec::new();
    let target = random_target(rng, BASES, &mut notes);
    let mut r = Req::new(method, &target).token(*pick(rng, TOKENS));
    r.notes = notes;
    if method == "CONNECT" {
        r.last = true;
    }
    add_header_groups(rng, &mut r);
    let http10 = rng.random_bool(0.06);
    if http10 {
        r = r.http10(rng.random_bool(0.5));
    } else if rng.random_bool(0.01) {
        r.headers.retain(|(n, _)| !n.eq_ignore_ascii_case("host"));
        r.note("no Host");
    }
    let framing = *pick(rng, FRAMINGS);
    if http10 && !matches!(framing, Framing::None | Framing::Cl) {
        return r;
    }
    r.framing(framing)
}

fn add_header_groups(rng: &mut StdRng, r: &mut Req) {
    let groups = *pick(rng, &[(3, 0usize), (4, 1), (3, 2), (2, 3)]);
    for _ in 0..groups {
        let g = pick(rng, HEADER_GROUPS);
        for (n, v) in g.lines {
            r.headers.push(((*n).into(), (*v).into()));
        }
        r.last |= g.last;
        r.note(g.name);
    }
}

/// Paths for form bodies: where the route table judges methods differently
/// (an override matters: the body is checked), where it doesn't, a built-in.
const FORM_BASES: &[(u32, &[u8])] = &[
    (4, b"/item/x"),
    (2, b"/Item/chair"),
    (1, b"/items"),
    (1, b"/product/x"),
    (3, b"/public/x"),
    (1, b"/admin/x"),
    (1, b"/ADMIN/x"),
    (1, b"/debug/echo/any/x"),
    (1, b"/login"),
];

const URLENCODED_BODIES: &[&[u8]] = &[
    b"a=1&b=2",
    b"title=hello+world",
    b"x=_method&my_method=1&_methods=2",
    b"a[_method]=DELETE&_method.x=1",
    b"_method=DELETE",
    b"a=1;_method=DELETE",
    b"a=1&%5Fmethod=delete",
    b"a=1&.method=PUT",
    b"+_method=DELETE",
    b"%20_method=DELETE",
    b"%09_method=DELETE",
    b"_method[]=DELETE",
    b"_method%5Bx%5D=DELETE",
    b"[method=DELETE",
    b"_METHOD=patch",
    b"a=1&_method",
    b"_method[aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa]=DELETE",
];

/// A part's header lines (the content follows a blank line).
const MULTIPART_PARTS: &[(&str, &str)] = &[
    ("Content-Disposition: form-data; name=\"title\"", "hello"),
    (
        "Content-Disposition: form-data; name=\"file\"; filename=\"f.html\"\r\nContent-Type: text/html",
        "<input name=\"_method\" value=\"DELETE\">",
    ),
    ("Content-Disposition: form-data; name=\"_method\"", "DELETE"),
    ("content-disposition: form-data; NAME=_method", "DELETE"),
    ("Content-Disposition: form-data; name=\".method\"", "DELETE"),
    ("Content-Disposition: form-data; name*=UTF-8''%5Fmethod", "DELETE"),
    ("Content-Disposition: form-data; name=\"_method[]\"", "DELETE"),
    ("Content-Disposition: form-data; name = ' _Method'", "DELETE"),
];

fn multipart_body(part: (&str, &str)) -> Vec<u8> {
    format!(
        "--xyz\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\n1\r\n--xyz\r\n{}\r\n\r\n{}\r\n--xyz--\r\n",
        part.0, part.1
    )
    .into_bytes()
}

/// A urlencoded body of exactly `len` bytes, with or without a `_method` field at its end.
fn padded_form(len: usize, method_field: bool) -> Vec<u8> {
    let tail: &[u8] = if method_field { b"&_method=DELETE" } else { b"&b=2" };
    let mut body = b"pad=".to_vec();
    body.resize(len - tail.len(), b'x');
    body.extend_from_slice(tail);
    body
}

/// A request with a form body (or a body a form parser would read, under
/// another Content-Type): small with Content-Length, chunked, exactly 64 KiB,
/// or rarely larger.
fn form_request(rng: &mut StdRng) -> Req {
    let method = *pick(rng, &[(5, "POST"), (3, "GET"), (2, "DELETE"), (2, "PUT")]);
    let mut notes = vec!["form body".to_owned()];
    let base = *pick(rng, FORM_BASES);
    let t = *pick(rng, &[(6, Transform::Verbatim), (1, Transform::MixedCase), (1, Transform::PublicDotDot)]);
    if !matches!(t, Transform::Verbatim) {
        notes.push(format!("target {t:?}"));
    }
    let mut r = Req::new(method, &transform(t, base)).token(*pick(rng, TOKENS));
    r.notes = notes;
    if rng.random_bool(0.3) {
        add_header_groups(rng, &mut r);
    }
    let size = *pick(rng, &[(40, "small"), (6, "chunked"), (2, "64 KiB"), (3, "over 64 KiB")]);
    let multipart = rng.random_bool(0.3) && matches!(size, "small" | "chunked");
    let content_type = if multipart {
        *pick(
            rng,
            &[
                (4, "multipart/form-data; boundary=xyz"),
                (2, "multipart/form-data; boundary=\"xyz\""),
                (2, "Multipart/Form-Data; BOUNDARY=xyz"),
                (1, "multipart/form-data"),
            ],
        )
    } else {
        *pick(
            rng,
            &[
                (5, "application/x-www-form-urlencoded"),
                (2, "application/x-www-form-urlencoded; charset=utf-8"),
                (2, "Application/X-WWW-Form-URLEncoded"),
                (1, "text/plain"),
                (1, "application/json"),
            ],
        )
    };
    r.headers.push(("Content-Type".into(), content_type.into()));
    let method_field = rng.random_bool(0.5);
    let payload = match size {
        "64 KiB" => padded_form(FORM_LIMIT, method_field),
        "over 64 KiB" => padded_form(FORM_LIMIT + rng.random_range(1..4096), method_field),
        _ if multipart => multipart_body(*MULTIPART_PARTS.choose(rng).unwrap()),
        _ => URLENCODED_BODIES.choose(rng).unwrap().to_vec(),
    };
    r.note(format!("{size} {content_type}"));
    let chunked = size == "chunked";
    r = r.body(&payload, chunked);
    if chunked || size == "over 64 KiB" {
        // Refused unread (411, 413) where an override matters: the connection closes.
        r.last = true;
        r.unread_body_ok = size == "over 64 KiB";
    }
    r
}

/// A request with an Upgrade header on a route that is not a websocket one:
/// if the gateway passes the Upgrade, the upstream answers 101 and what follows
/// on the connection is never judged.
fn upgrade_smuggler(rng: &mut StdRng) -> Req {
    let bases: Vec<&[u8]> = BASES.iter().copied().filter(|b| !b.starts_with(b"/ws")).collect();
    let base = bases.choose(rng).unwrap();
    let t =
        *pick(rng, &[(4, Transform::Verbatim), (1, Transform::PublicDotDot), (1, Transform::DoubleSlash)]);
    let mut r = Req::new("GET", &transform(t, base)).token(*pick(rng, TOKENS));
    let g = pick(
        rng,
        &HEADER_GROUPS.iter().filter(|(_, g)| g.name == "upgrade").map(|(w, g)| (*w, g)).collect::<Vec<_>>(),
    )
    .lines;
    for (n, v) in g {
        r.headers.push(((*n).into(), (*v).into()));
    }
    r.note("upgrade smuggler");
    r
}

/// What an attacker pipelines behind an upgrade: a privileged request with
/// forged identity headers and no token.
fn forged_after_upgrade(rng: &mut StdRng) -> Req {
    let (method, target) = *[
        ("DELETE", &b"/item/x"[..]),
        ("GET", b"/admin/secret"),
        ("DELETE", b"/product/x"),
        ("GET", b"/debug/echo/admin/x"),
    ]
    .choose(rng)
    .unwrap();
    let mut r = Req::new(method, target)
        .header("X-Auth-User-Id", "1")
        .header("X-Auth-Admin", "true")
        .header("X-Auth-Fresh", "true")
        .header("X-Auth-Username", "admin");
    r.note("forged, behind an upgrade");
    r
}

/// A clean WebSocket handshake on the websocket route (the gateway passes
/// those only), with the usual hostile headers beside it. Last on its
/// connection: what follows a granted 101 is the application's.
fn websocket_handshake(rng: &mut StdRng) -> Req {
    let t =
        *pick(rng, &[(4, Transform::Verbatim), (1, Transform::PublicDotDot), (1, Transform::DoubleSlash)]);
    let mut r = Req::new("GET", &transform(t, b"/ws/chat"))
        .token(*pick(rng, TOKENS))
        .header("Upgrade", "websocket")
        .header("Connection", "Upgrade")
        .header("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
        .header("Sec-WebSocket-Version", "13");
    r.note("websocket handshake");
    for _ in 0..*pick(rng, &[(2, 0usize), (2, 1), (1, 2)]) {
        let g = pick(rng, HEADER_GROUPS);
        if g.name != "upgrade" {
            for (n, v) in g.lines {
                r.headers.push(((*n).into(), (*v).into()));
            }
            r.note(g.name);
        }
    }
    r.last = true;
    r
}

fn generate_case(rng: &mut StdRng, index: usize) -> Case {
    let mode = if rng.random_bool(0.4) { Mode::Pipelined } else { Mode::Sequential };
    let mut reqs = Vec::new();
    if rng.random_bool(0.12) {
        reqs.push(upgrade_smuggler(rng));
        reqs.push(forged_after_upgrade(rng));
    } else if rng.random_bool(0.06) {
        if rng.random_bool(0.5) {
            reqs.push(random_request(rng));
            reqs.retain(|r| !r.last);
        }
        reqs.push(websocket_handshake(rng));
    } else {
        let n = *pick(rng, &[(5, 1usize), (3, 2), (2, 3)]);
        for _ in 0..n {
            reqs.push(random_request(rng));
        }
        // Requests after which nothing can be sent go last, and only one of them.
        reqs.sort_by_key(|r| r.last);
        if let Some(p) = reqs.iter().position(|r| r.last) {
            reqs.truncate(p + 1);
        }
    }
    for (i, r) in reqs.iter_mut().enumerate() {
        r.id = format!("d-{index}-{i}");
    }
    Case { label: format!("random #{index}"), mode, reqs }
}

// ============================================================================
// Running cases over raw TCP
// ============================================================================

#[derive(Clone, Debug)]
struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    /// Came after a 101: the upstream's bytes, not the gateway's answer.
    via_tunnel: bool,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    fn error_code(&self) -> Option<String> {
        serde_json::from_slice::<Value>(&self.body).ok()?.get("error")?.as_str().map(str::to_owned)
    }

    fn show(&self) -> String {
        format!(
            "{}{} {}",
            if self.via_tunnel { "(through the tunnel) " } else { "" },
            self.status,
            show(&self.body[..self.body.len().min(200)])
        )
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum End {
    /// Every request got an answer.
    Done,
    Closed,
    Timeout,
    Broken(String),
}

#[derive(Clone, Debug)]
struct Exchange {
    /// How many requests were written.
    sent: usize,
    /// Answers in order (index = request index).
    responses: Vec<Resp>,
    end: End,
    elapsed: Duration,
}

fn parse_response(buf: &[u8], eof: bool) -> Result<Option<(Resp, usize)>, String> {
    let Some((lines, head_end)) = split_head(buf) else {
        return Ok(None);
    };
    let status_line = String::from_utf8_lossy(lines[0]).into_owned();
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("not an HTTP response: {}", show(&buf[..head_end])))?;
    let headers: Vec<(String, String)> = lines[1..]
        .iter()
        .filter_map(|l| {
            let colon = l.iter().position(|&b| b == b':')?;
            Some((
                String::from_utf8_lossy(&l[..colon]).trim().to_owned(),
                String::from_utf8_lossy(&l[colon + 1..]).trim().to_owned(),
            ))
        })
        .collect();
    let mut resp = Resp { status, headers, body: Vec::new(), via_tunnel: false };
    if (100..200).contains(&status) || status == 204 || status == 304 {
        return Ok(Some((resp, head_end)));
    }
    if resp.header("transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked")) {
        return match parse_chunked(&buf[head_end..]) {
            Chunked::Done(body, used) => {
                resp.body = body;
                Ok(Some((resp, head_end + used)))
            }
            Chunked::Incomplete => Ok(None),
            Chunked::Bad => Err("a broken chunked response".into()),
        };
    }
    match resp.header("content-length").and_then(|v| v.trim().parse::<usize>().ok()) {
        Some(length) if buf.len() >= head_end + length => {
            resp.body = buf[head_end..head_end + length].to_vec();
            Ok(Some((resp, head_end + length)))
        }
        Some(_) => Ok(None),
        None if eof => {
            resp.body = buf[head_end..].to_vec();
            Ok(Some((resp, buf.len())))
        }
        None => Ok(None),
    }
}

fn read_response(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Result<Resp, End> {
    let mut eof = false;
    loop {
        match parse_response(buf, eof) {
            Ok(Some((resp, used))) => {
                buf.drain(..used);
                return Ok(resp);
            }
            Ok(None) if eof => {
                return Err(if buf.is_empty() {
                    End::Closed
                } else {
                    End::Broken(format!("closed in the middle of an answer: {}", show(buf)))
                })
            }
            Ok(None) => {}
            Err(e) => return Err(End::Broken(e)),
        }
        let mut chunk = [0u8; 16384];
        match stream.read(&mut chunk) {
            Ok(0) => eof = true,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return Err(End::Timeout)
            }
            Err(e) if matches!(e.kind(), ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted) => {
                eof = true
            }
            Err(e) => return Err(End::Broken(e.to_string())),
        }
    }
}

/// Writes `bytes`; an error past `strict` bytes is ignored (the peer may
/// have answered and closed without reading them).
fn write_tolerant(stream: &mut TcpStream, bytes: &[u8], strict: usize) -> std::io::Result<()> {
    stream.write_all(&bytes[..strict])?;
    let _ = stream.write_all(&bytes[strict..]);
    Ok(())
}

/// How a failed write ended the exchange: the gateway had closed (a reset
/// answers what was written after a close that left bytes unread), or worse.
fn write_end(e: &std::io::Error) -> End {
    match e.kind() {
        ErrorKind::BrokenPipe | ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted => End::Closed,
        _ => End::Broken(format!("write: {e}")),
    }
}

fn run_case(addr: SocketAddr, case: &Case, tokens: &Tokens) -> Exchange {
    let started = Instant::now();
    let mut ex = Exchange { sent: 0, responses: Vec::new(), end: End::Done, elapsed: Duration::ZERO };
    let mut stream = match TcpStream::connect(addr) {
        Ok(s) => s,
        Err(e) => {
            ex.end = End::Broken(format!("connect: {e}"));
            return ex;
        }
    };
    stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    stream.set_write_timeout(Some(READ_TIMEOUT)).unwrap();
    let wires: Vec<Vec<u8>> = case.reqs.iter().map(|r| r.wire(Some(tokens))).collect();
    // Where a write error is no failure: in the body of a request the gateway
    // may refuse (and close on) unread.
    let tolerated =
        |r: &Req, wire: &[u8]| if r.unread_body_ok { wire.len() - r.body.len() } else { wire.len() };
    let mut buf = Vec::new();
    let mut tunnel = false;
    let mut read_one = |stream: &mut TcpStream, ex: &mut Exchange, tunnel: &mut bool| -> bool {
        match read_response(stream, &mut buf) {
            Ok(mut resp) => {
                resp.via_tunnel = *tunnel;
                if resp.status == 101 && !*tunnel {
                    *tunnel = true;
                    let _ = stream.set_read_timeout(Some(TUNNEL_TIMEOUT));
                }
                ex.responses.push(resp);
                true
            }
            Err(end) => {
                ex.end = end;
                false
            }
        }
    };
    match case.mode {
        Mode::Pipelined => {
            let all = wires.concat();
            let last = case.reqs.len() - 1;
            let strict = all.len() - wires[last].len() + tolerated(&case.reqs[last], &wires[last]);
            if let Err(e) = write_tolerant(&mut stream, &all, strict) {
                ex.end = write_end(&e);
            } else {
                ex.sent = wires.len();
                for _ in 0..wires.len() {
                    if !read_one(&mut stream, &mut ex, &mut tunnel) {
                        break;
                    }
                }
            }
        }
        Mode::Sequential => {
            for (r, wire) in case.reqs.iter().zip(&wires) {
                if let Err(e) = write_tolerant(&mut stream, wire, tolerated(r, wire)) {
                    ex.end = write_end(&e);
                    break;
                }
                ex.sent += 1;
                if !read_one(&mut stream, &mut ex, &mut tunnel) {
                    break;
                }
            }
        }
    }
    ex.elapsed = started.elapsed();
    ex
}

// ============================================================================
// The world: recording upstream, gateway, tokens
// ============================================================================

struct World {
    gw: Gateway,
    _mock: Upstream,
    recorder: Recorder,
    model: Model,
}

/// What the checks need to know about the gateway under test.
struct Model {
    tokens: Tokens,
    /// `server.trusted_proxies` includes the test peer.
    trusted_peer: bool,
    /// `server.underscore_headers = "reject"`.
    underscore_reject: bool,
    /// `server.forwarded_header = true`.
    forwarded_header: bool,
}

/// What was seen: the gateway's access log and what reached the upstream.
struct Observed {
    logs: HashMap<String, Vec<Value>>,
    arrivals: Vec<Arrival>,
    /// Bytes that never formed a request, per upstream connection.
    leftovers: Vec<(usize, Vec<u8>)>,
}

fn claims_of(token: &str) -> Value {
    let payload = token.split('.').nth(1).expect("a JWT");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

fn identity(token: String, username: &str, email: &str) -> Identity {
    let claims = claims_of(&token);
    Identity {
        user_id: claims["sub"].as_str().and_then(|s| s.parse().ok()).expect("numeric sub"),
        admin: claims["is_admin"].as_bool().unwrap_or(false),
        fresh: claims["fresh"].as_bool().unwrap_or(false),
        roles: claims["roles"]
            .as_array()
            .map(|roles| roles.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(","))
            .unwrap_or_default(),
        username: username.into(),
        email: email.into(),
        token,
    }
}

impl World {
    fn start(server: Server) -> World {
        let recorder = Recorder::start();
        // The harness wants an upstream-mock; the gateway is pointed at the recorder instead.
        let mock = Upstream::start();
        let gw = Gateway::start(
            &mock,
            Options {
                upstreams: Some(vec![recorder.addr.to_string()]),
                grace_period: "0s",
                ..Options::default()
            }
            .config(move |c| {
                c.log = LogSection { format: Some(Word(LogFormat::Json)), level: Some("info".into()) };
                c.upstream.get_mut().health_check = Some(Word(HealthCheck::None));
                server.apply(c);
                add_extra_routes(c);
            }),
        );
        let (admin, _) = gw.admin_login();
        let (email, username, password) = ("differ@example.com", "differ", "differ-password-1");
        gw.register(email, username, password);
        let (user, refresh) = gw.login(email, password);
        let (status, body) = gw.post("/refresh", Some(&refresh), Value::Null);
        assert_eq!(status, 200, "refresh: {body}");
        let stale = body["access_token"].as_str().unwrap().to_owned();
        let tokens = Tokens {
            admin: identity(admin, "admin", crate::common::ADMIN_EMAIL),
            user: identity(user, username, email),
            user_stale: identity(stale, username, email),
        };
        assert!(tokens.admin.admin && !tokens.user.admin && tokens.user.fresh);
        World {
            gw,
            _mock: mock,
            recorder,
            model: Model {
                tokens,
                trusted_peer: server.trusted_peer,
                underscore_reject: server.underscore_reject,
                forwarded_header: server.forwarded_header,
            },
        }
    }

    fn observe(&self) -> Observed {
        Observed {
            logs: self.access_log(),
            arrivals: self.recorder.arrivals(),
            leftovers: self.recorder.leftovers(),
        }
    }

    fn check<'a>(&'a self, cases: &'a [Case], exchanges: &'a [Exchange]) -> Checker<'a> {
        Checker::new(&self.model, cases, exchanges, self.observe())
    }

    fn run(&self, cases: &[Case]) -> Vec<Exchange> {
        let next = AtomicUsize::new(0);
        let results: Vec<Mutex<Option<Exchange>>> = cases.iter().map(|_| Mutex::new(None)).collect();
        std::thread::scope(|scope| {
            for _ in 0..WORKERS {
                scope.spawn(|| loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    let Some(case) = cases.get(i) else { break };
                    *results[i].lock().unwrap() = Some(run_case(self.gw.addr, case, &self.model.tokens));
                });
            }
        });
        let exchanges: Vec<Exchange> =
            results.into_iter().map(|m| m.into_inner().unwrap().unwrap()).collect();
        // Access lines are written after the answer: wait for every answered request's.
        let answered: Vec<&str> = cases
            .iter()
            .zip(&exchanges)
            .flat_map(|(c, e)| {
                // pingora's own answers carry no request id and are never logged.
                c.reqs
                    .iter()
                    .zip(&e.responses)
                    .filter(|(_, r)| !r.via_tunnel && r.header("x-request-id").is_some())
                    .map(|(q, _)| q.id.as_str())
            })
            .collect();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let logs = self.access_log();
            if answered.iter().all(|id| logs.contains_key(*id)) || Instant::now() > deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        // Whatever a tunnel still carries reaches the upstream shortly after.
        std::thread::sleep(Duration::from_millis(300));
        exchanges
    }

    /// Access-log lines by request id.
    fn access_log(&self) -> HashMap<String, Vec<Value>> {
        let mut out: HashMap<String, Vec<Value>> = HashMap::new();
        for line in self.gw.log().lines() {
            let Ok(v) = serde_json::from_str::<Value>(line) else { continue };
            if v["target"] != "gatehouse::access" {
                continue;
            }
            let fields = match v.get("fields") {
                Some(f) if f.is_object() => f.clone(),
                _ => v,
            };
            let id = fields["request_id"].as_str().unwrap_or("").to_owned();
            out.entry(id).or_default().push(fields);
        }
        out
    }
}

// ============================================================================
// The oracle (what the spec says the gateway decides)
// ============================================================================

#[derive(Clone, Debug)]
enum Expect {
    Refuse(Vec<Reason>),
    /// One of the gateway's own endpoints (lenient reading): answered or refused.
    NotForwarded(String),
    /// The route's policy refuses the caller: 401 or 403.
    Deny {
        route: &'static str,
        policy: Policy,
    },
    Forward {
        method: String,
        path: String,
        target: String,
        route: &'static str,
        policy: Policy,
        /// Refusals the spec also allows.
        or_refuse: Vec<Reason>,
    },
}

fn show_reasons(reasons: &[Reason]) -> String {
    let list: Vec<String> = reasons
        .iter()
        .map(|r| {
            format!(
                "{} {}{} ({})",
                r.status,
                r.code,
                if r.plain_ok { " or pingora's own" } else { "" },
                r.why
            )
        })
        .collect();
    list.join("; ")
}

impl std::fmt::Display for Expect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Expect::Refuse(reasons) => write!(f, "refuse: {}", show_reasons(reasons)),
            Expect::NotForwarded(path) => {
                write!(f, "answered by the gateway or refused ({path} is a gateway endpoint)")
            }
            Expect::Deny { route, policy } => write!(f, "refuse 401/403 (route {route}, policy {policy:?})"),
            Expect::Forward { method, target, route, policy, or_refuse, .. } => {
                write!(f, "forward {method} {target} (route {route}, policy {policy:?})")?;
                if !or_refuse.is_empty() {
                    write!(f, ", or refuse: {}", show_reasons(or_refuse))?;
                }
                Ok(())
            }
        }
    }
}

/// Whether a header value is one visible-ASCII media type (spaces and tabs allowed).
fn visible_ascii(value: &str) -> bool {
    value.bytes().all(|b| b == b' ' || b == b'\t' || b.is_ascii_graphic())
}

impl Model {
    fn expect(&self, r: &Req) -> Expect {
        let mut reasons = Vec::new();
        let hosts = r.sent("host").len();
        if hosts == 0 {
            reasons.push(reason(400, "invalid_header", false, format!("no Host ({})", r.version)));
        } else if hosts > 1 {
            reasons.push(reason(400, "invalid_header", true, format!("{hosts} Host headers")));
        }
        let cls = r.sent("content-length");
        let tes = r.sent("transfer-encoding");
        if !tes.is_empty() {
            let codings: Vec<String> =
                tes.iter().flat_map(|v| v.split(',')).map(|c| c.trim().to_ascii_lowercase()).collect();
            if codings != ["chunked"] || tes.len() > 1 || r.version != "HTTP/1.1" {
                reasons.push(reason(400, ANY_CODE, true, format!("Transfer-Encoding {tes:?}")));
            }
            // Beside Content-Length, pingora drops the Content-Length (and closes after the answer).
        } else if !cls.is_empty() {
            let values: Vec<&str> = cls.iter().flat_map(|v| v.split(',')).map(str::trim).collect();
            if values.iter().any(|v| v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit())) {
                reasons.push(reason(400, "invalid_request", true, format!("Content-Length {cls:?}")));
            } else if values.iter().collect::<HashSet<_>>().len() > 1 {
                reasons.push(reason(
                    400,
                    "invalid_request",
                    true,
                    format!("differing Content-Length {cls:?}"),
                ));
            }
        }
        let types = r.sent("content-type");
        if types.len() > 1 {
            reasons.push(reason(
                400,
                "invalid_header",
                false,
                format!("{} Content-Type headers", types.len()),
            ));
        } else if let Some(odd) = types.first().filter(|t| !visible_ascii(t)) {
            reasons.push(reason(400, "invalid_header", false, format!("Content-Type {odd:?}")));
        }
        if self.underscore_reject {
            if let Some((name, _)) = r.headers.iter().find(|(n, _)| n.contains('_')) {
                reasons.push(reason(400, "invalid_header", false, format!("header name {name}")));
            }
        }
        if r.method == "CONNECT" {
            reasons.push(reason(405, "method_not_allowed", true, "CONNECT"));
        } else if r.method.is_empty() || !r.method.bytes().all(|b| b.is_ascii_uppercase()) {
            reasons.push(reason(400, "invalid_method", false, format!("method {:?}", r.method)));
        }
        let canonical = canonical_target(&r.target);
        if let Err(why) = &canonical {
            reasons.push(why.clone());
        }
        if !reasons.is_empty() {
            return Expect::Refuse(reasons);
        }
        let (path, query) = canonical.unwrap();
        if endpoint_like(&path) {
            return Expect::NotForwarded(path);
        }
        let (route, policy) = model_route(&r.method, &path);
        let caller = self.tokens.get(r.token).map(|i| Caller { admin: i.admin, fresh: i.fresh });
        if !allows(policy, caller) {
            return Expect::Deny { route, policy };
        }
        // A form body where an override would change the judgement: read whole
        // (up to 64 KiB) and checked for `_method` before anything goes upstream.
        let mut or_refuse = Vec::new();
        let form = types.first().and_then(|t| form_kind(t, false));
        if let Some(kind) = form.filter(|_| !judged_alike(&path)) {
            let length =
                cls.first().and_then(|v| v.split(',').next()).and_then(|v| v.trim().parse::<usize>().ok());
            let refusal = if !tes.is_empty() {
                Some(reason(411, "length_required", false, "a chunked form body where an override matters"))
            } else if length.is_some_and(|l| l > FORM_LIMIT) {
                Some(reason(
                    413,
                    "body_too_large",
                    false,
                    "a form body over 64 KiB where an override matters",
                ))
            } else if form_has_method_field(&kind, &r.payload) {
                Some(reason(400, "method_override_refused", false, "a `_method` form field"))
            } else {
                if length.is_none() {
                    // No body at all: nothing to override with, but the
                    // gateway reads a missing length as an unknown one.
                    or_refuse.push(reason(411, "length_required", false, "a form without Content-Length"));
                }
                None
            };
            if let Some(refusal) = refusal {
                return Expect::Refuse(vec![refusal]);
            }
        }
        Expect::Forward {
            method: r.method.clone(),
            target: join_target(&path, query.as_deref()),
            path,
            route,
            policy,
            or_refuse,
        }
    }
}

/// Who the gateway must say the client is (`X-Forwarded-For`): the peer,
/// unless it is a trusted proxy; then the chain it sent, read right to left,
/// up to the first address that is not a trusted proxy (an entry that is no
/// address ends what can be believed). Returns `<client>, <trusted hops...>,
/// <peer>` as addresses.
fn forwarded_chain(sent: &[&str], trusted_peer: bool) -> Vec<IpAddr> {
    let peer: IpAddr = PEER_IP.parse().unwrap();
    let trusted = |ip: &IpAddr| *ip == peer;
    let mut chain = vec![peer];
    if !trusted_peer {
        return chain;
    }
    let entries: Vec<&str> =
        sent.iter().flat_map(|v| v.split(',')).map(str::trim).filter(|e| !e.is_empty()).collect();
    for entry in entries.iter().rev() {
        let ip = entry.parse::<IpAddr>().ok().or_else(|| entry.parse::<SocketAddr>().ok().map(|a| a.ip()));
        let Some(ip) = ip.map(|ip| match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        }) else {
            break;
        };
        chain.insert(0, ip);
        if !trusted(&ip) {
            break;
        }
    }
    chain
}

// ============================================================================
// Decisions and checks
// ============================================================================

#[derive(Clone, Debug)]
enum Decision<'a> {
    Forwarded(&'a Value),
    Builtin(&'a Value),
    Refused {
        status: u16,
        code: Option<String>,
        log: Option<&'a Value>,
    },
    /// Logged with another outcome (upstream_error, client_error, ...).
    Other(&'a Value),
    /// The gateway answered below 400 but wrote no access line.
    Unlogged(u16),
    Unanswered,
    NotSent,
}

impl std::fmt::Display for Decision<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Decision::Forwarded(log) | Decision::Builtin(log) | Decision::Other(log) => {
                write!(f, "logged {}", brief_log(log))
            }
            Decision::Refused { status, code, log: Some(log) } => {
                write!(
                    f,
                    "refused {status} {} — logged {}",
                    code.as_deref().unwrap_or("(no code)"),
                    brief_log(log)
                )
            }
            Decision::Refused { status, code, log: None } => write!(
                f,
                "refused {status} {} with no access-log line (pingora's own answer)",
                code.as_deref().unwrap_or("(no JSON error)")
            ),
            Decision::Unlogged(status) => write!(f, "answered {status} but no access-log line"),
            Decision::Unanswered => write!(f, "no answer from the gateway"),
            Decision::NotSent => write!(f, "not sent (the connection had ended)"),
        }
    }
}

fn brief_log(log: &Value) -> String {
    let mut brief = serde_json::Map::new();
    for key in ["outcome", "status", "error", "method", "path", "route", "policy", "user_id"] {
        brief.insert(key.into(), log.get(key).cloned().unwrap_or(Value::Null));
    }
    Value::Object(brief).to_string()
}

fn log_str<'a>(log: &'a Value, key: &str) -> &'a str {
    log.get(key).and_then(Value::as_str).unwrap_or("")
}

fn decide<'a>(logs: &'a [Value], resp: Option<&Resp>, sent: bool) -> Decision<'a> {
    if let Some(log) = logs.last() {
        let status = log["status"].as_u64().unwrap_or(0) as u16;
        let code = Some(log_str(log, "error")).filter(|c| !c.is_empty()).map(str::to_owned);
        return match log_str(log, "outcome") {
            "forwarded" => Decision::Forwarded(log),
            "builtin" => Decision::Builtin(log),
            "refused" => Decision::Refused { status, code, log: Some(log) },
            _ => Decision::Other(log),
        };
    }
    match resp {
        Some(r) if !r.via_tunnel && r.status >= 400 => {
            Decision::Refused { status: r.status, code: r.error_code(), log: None }
        }
        Some(r) if !r.via_tunnel => Decision::Unlogged(r.status),
        _ if sent => Decision::Unanswered,
        _ => Decision::NotSent,
    }
}

#[derive(Clone, Debug)]
struct Failure {
    tag: &'static str,
    /// (case, request) the failure is about, if any.
    at: Option<(usize, usize)>,
    detail: String,
}

struct Checker<'a> {
    model: &'a Model,
    cases: &'a [Case],
    exchanges: &'a [Exchange],
    logs: HashMap<String, Vec<Value>>,
    arrivals: Vec<Arrival>,
    leftovers: Vec<(usize, Vec<u8>)>,
    by_id: HashMap<String, Vec<usize>>,
    failures: Vec<Failure>,
}

impl<'a> Checker<'a> {
    fn new(
        model: &'a Model,
        cases: &'a [Case],
        exchanges: &'a [Exchange],
        observed: Observed,
    ) -> Checker<'a> {
        let mut checker = Checker {
            model,
            cases,
            exchanges,
            logs: observed.logs,
            arrivals: observed.arrivals,
            leftovers: observed.leftovers,
            by_id: HashMap::new(),
            failures: Vec::new(),
        };
        checker.check();
        checker
    }

    fn fail(&mut self, tag: &'static str, at: Option<(usize, usize)>, detail: String) {
        self.failures.push(Failure { tag, at, detail });
    }

    fn check(&mut self) {
        let known: HashSet<String> =
            self.cases.iter().flat_map(|c| c.reqs.iter().map(|r| r.id.clone())).collect();
        for (ai, a) in self.arrivals.clone().iter().enumerate() {
            let mut ids = a.values("x-request-id");
            ids.dedup();
            if ids.is_empty() {
                self.fail(
                    "unjudged-arrival",
                    None,
                    format!("arrived without any X-Request-Id: {}", a.show()),
                );
            }
            if ids.len() > 1 {
                self.fail(
                    "request-id",
                    None,
                    format!("arrived with several request ids {ids:?}: {}", a.show()),
                );
            }
            for id in ids {
                if !known.contains(&id) {
                    self.fail(
                        "unjudged-arrival",
                        None,
                        format!("arrived with unknown request id {id:?}: {}", a.show()),
                    );
                }
                self.by_id.entry(id).or_default().push(ai);
            }
        }
        for (leftover_conn, bytes) in self.leftovers.clone() {
            self.fail(
                "garbage-at-upstream",
                None,
                format!("upstream conn {leftover_conn} got bytes that are no request: {}", show(&bytes)),
            );
        }
        for ci in 0..self.cases.len() {
            for ri in 0..self.cases[ci].reqs.len() {
                self.check_request(ci, ri);
            }
        }
    }

    fn check_request(&mut self, ci: usize, ri: usize) {
        let (cases, exchanges) = (self.cases, self.exchanges);
        let case = &cases[ci];
        let ex = &exchanges[ci];
        let r = &case.reqs[ri];
        let at = Some((ci, ri));
        let empty = Vec::new();
        let logs = self.logs.get(&r.id).unwrap_or(&empty).clone();
        let resp = ex.responses.get(ri);
        let decision = decide(&logs, resp, ri < ex.sent);
        let expect = self.model.expect(r);
        let arrivals: Vec<Arrival> = self
            .by_id
            .get(&r.id)
            .map(|v| v.iter().map(|&i| self.arrivals[i].clone()).collect())
            .unwrap_or_default();

        if logs.len() > 1 {
            self.fail("logged-twice", at, format!("{} access-log lines for one request", logs.len()));
        }
        if let (Some(log), Some(resp)) = (logs.last(), resp) {
            if !resp.via_tunnel {
                let logged = log["status"].as_u64().unwrap_or(0);
                if logged != u64::from(resp.status) {
                    self.fail(
                        "answer-vs-log",
                        at,
                        format!("answered {} but the access log says {logged}", resp.status),
                    );
                }
                if resp.header("x-request-id") != Some(r.id.as_str()) {
                    self.fail(
                        "answer-vs-log",
                        at,
                        format!("the answer's X-Request-Id is {:?}", resp.header("x-request-id")),
                    );
                }
            }
        }

        // --- The decision against the spec.
        match &decision {
            Decision::Unanswered | Decision::NotSent => {
                let first_unanswered = ri == ex.responses.len();
                // Whether the gateway had to keep the connection open for this
                // request: pingora drops pipelined requests (it closes once it
                // has read past a request), so only one-at-a-time ones count.
                let previous_keeps_open = ri > 0 && case.mode == Mode::Sequential && {
                    let prev = &case.reqs[ri - 1];
                    let prev_logs = self.logs.get(&prev.id).cloned().unwrap_or_default();
                    let prev_decision = decide(&prev_logs, ex.responses.get(ri - 1), true);
                    must_keep_open(prev, &prev_decision)
                };
                if first_unanswered && ex.end == End::Timeout {
                    self.fail("hang", at, "the gateway neither answered nor closed the connection".into());
                } else if first_unanswered && matches!(ex.end, End::Broken(_)) {
                    self.fail("broken-answer", at, format!("{:?}", ex.end));
                } else if ri == 0
                    && decision.is_unanswered()
                    && !matches!(&expect, Expect::Refuse(rs) if rs.iter().any(|r| r.plain_ok))
                {
                    self.fail(
                        "spec",
                        at,
                        format!("expected to {expect}, but the connection closed without an answer"),
                    );
                } else if first_unanswered
                    && previous_keeps_open
                    && !matches!(&expect, Expect::Refuse(rs) if rs.iter().any(|r| r.plain_ok))
                {
                    self.fail(
                        "closed-early",
                        at,
                        format!(
                            "expected to {expect}, but the gateway closed the connection after the previous request, \
                             whose answer had to keep it open ({decision})"
                        ),
                    );
                }
            }
            Decision::Unlogged(status) => {
                self.fail("answer-vs-log", at, format!("answered {status} with no access-log line"));
            }
            _ => {
                let pipelined_on = case.mode == Mode::Pipelined && ri + 1 < case.reqs.len();
                if let Some(problem) = spec_mismatch(&expect, &decision, self.model, r, pipelined_on) {
                    self.fail("spec", at, problem);
                }
            }
        }

        // --- What reached the upstream.
        match &decision {
            Decision::Forwarded(log) | Decision::Other(log) => {
                let status = log["status"].as_u64().unwrap_or(0);
                let must_arrive =
                    matches!(decision, Decision::Forwarded(_)) && (status == 200 || status == 101);
                if arrivals.len() > 1 || (must_arrive && arrivals.len() != 1) {
                    self.fail(
                        "arrival-count",
                        at,
                        format!("logged forwarded ({status}) but it arrived {} times", arrivals.len()),
                    );
                }
                let log = (*log).clone();
                for a in &arrivals {
                    for (tag, detail) in self.check_arrival(r, &log, a) {
                        self.fail(tag, at, format!("{detail}\n        arrival: {}", a.show()));
                    }
                }
            }
            _ if arrivals.is_empty() => {}
            Decision::Refused { .. } => self.fail(
                "refused-but-arrived",
                at,
                format!(
                    "the gateway refused it ({decision}), yet the upstream got it {} time(s)",
                    arrivals.len()
                ),
            ),
            Decision::Builtin(_) => self.fail(
                "endpoint-but-arrived",
                at,
                "the gateway answered it itself, yet the upstream got it too".into(),
            ),
            _ => self.fail(
                "unjudged-arrival",
                at,
                format!(
                    "the gateway never judged it ({decision}), yet the upstream got it: {}",
                    arrivals.iter().map(Arrival::show).collect::<Vec<_>>().join(" | ")
                ),
            ),
        }
    }

    /// Everything wrong with one arrival of a forwarded request.
    fn check_arrival(&self, r: &Req, log: &Value, a: &Arrival) -> Vec<(&'static str, String)> {
        let mut out: Vec<(&'static str, String)> = Vec::new();
        let logged_method = log_str(log, "method");
        let logged_path = log_str(log, "path");
        let logged_route = log_str(log, "route");

        // Method and target.
        if a.method != logged_method {
            out.push((
                "method-vs-log",
                format!("upstream got method {:?}, the gateway logged {logged_method:?}", a.method),
            ));
        }
        if a.method.is_empty() || !a.method.bytes().all(|b| b.is_ascii_uppercase()) {
            out.push(("method-not-canonical", format!("upstream got method {:?}", a.method)));
        }
        if let Some(problem) = non_canonical(&a.target) {
            out.push(("target-not-canonical", format!("upstream got target {}: {problem}", show(&a.target))));
        }
        if let Ok((path, query)) = canonical_target(&r.target) {
            let want = join_target(&path, query.as_deref());
            if a.target != want.as_bytes() {
                out.push((
                    "target-not-canonical",
                    format!(
                        "upstream got target {}, the canonical form of what was sent is {want}",
                        show(&a.target)
                    ),
                ));
            }
        }
        let (path, query) = lenient_target(&a.target);
        if path != logged_path {
            out.push((
                "path-vs-log",
                format!("the upstream reads path {path:?}, the gateway judged {logged_path:?}"),
            ));
        }
        if query.as_deref().is_some_and(has_method_field) {
            out.push((
                "method-override",
                format!("a `_method` query parameter reached the upstream: {}", show(&a.target)),
            ));
        }

        // Header names.
        let underscored: Vec<&str> =
            a.headers.iter().map(|(n, _)| n.as_str()).filter(|n| n.contains('_')).collect();
        if !underscored.is_empty() {
            out.push((
                "underscore-header",
                format!("header names with `_` reached the upstream: {underscored:?}"),
            ));
        }

        // Identity.
        let identity: Vec<(String, &str)> =
            a.lenient_headers().filter(|(n, _)| n.starts_with("x-auth-")).collect();
        match log.get("user_id").and_then(Value::as_u64) {
            None => {
                if !identity.is_empty() {
                    out.push((
                        "identity-header",
                        format!(
                            "no caller was identified, yet the upstream reads identity headers {identity:?}"
                        ),
                    ));
                }
            }
            Some(uid) => match self.model.tokens.get(r.token) {
                Some(who) if who.user_id == uid => {
                    let expected = [
                        ("x-auth-user-id", uid.to_string()),
                        ("x-auth-username", who.username.clone()),
                        ("x-auth-email", who.email.clone()),
                        ("x-auth-admin", who.admin.to_string()),
                        ("x-auth-fresh", who.fresh.to_string()),
                        ("x-auth-roles", who.roles.clone()),
                    ];
                    for (name, want) in expected {
                        let got = a.values(name);
                        if got != [want.clone()] {
                            out.push((
                                "identity-header",
                                format!("the upstream reads {name} as {got:?}, expected [{want:?}]"),
                            ));
                        }
                    }
                    let token_ids = a.values("x-auth-token-id");
                    if token_ids.len() != 1 {
                        out.push((
                            "identity-header",
                            format!("the upstream reads x-auth-token-id as {token_ids:?}"),
                        ));
                    }
                    let allowed: Vec<String> =
                        IDENTITY_FIELDS.iter().map(|f| format!("x-auth-{f}")).collect();
                    let extra: Vec<&(String, &str)> =
                        identity.iter().filter(|(n, _)| !allowed.contains(n)).collect();
                    if !extra.is_empty() {
                        out.push((
                            "identity-header",
                            format!("identity headers the gateway does not set: {extra:?}"),
                        ));
                    }
                }
                _ => out.push((
                    "identity-header",
                    format!("the gateway logged user {uid}, but the request carried token {:?}", r.token),
                )),
            },
        }

        // Forwarding headers: exactly what the gateway owes, from a trusted
        // proxy what it may keep, and no other client address or URL rewrite.
        let trusted = self.model.trusted_peer;
        let trimmed = |name: &str| -> Vec<String> {
            if trusted {
                r.sent(name).iter().map(|v| v.trim().to_owned()).collect()
            } else {
                Vec::new()
            }
        };
        let chain = forwarded_chain(&r.sent("x-forwarded-for"), trusted);
        let xff: Vec<String> = chain.iter().map(IpAddr::to_string).collect();
        let sent_proto = trimmed("x-forwarded-proto");
        let (proto, want_proto) = match sent_proto.first() {
            Some(p) if p.eq_ignore_ascii_case("https") => ("https", sent_proto.clone()),
            Some(p) if p.eq_ignore_ascii_case("http") => ("http", sent_proto.clone()),
            _ => ("http", vec!["http".to_owned()]),
        };
        let sent_host = trimmed("x-forwarded-host");
        let want_host = if sent_host.is_empty() { vec![HOST.to_owned()] } else { sent_host };
        let want_forwarded = if self.model.forwarded_header {
            let node = match chain[0] {
                IpAddr::V4(v4) => v4.to_string(),
                IpAddr::V6(v6) => format!("\"[{v6}]\""),
            };
            vec![format!("for={node};proto={proto};host=\"{HOST}\"")]
        } else {
            Vec::new()
        };
        let mut checks: Vec<(&str, Vec<String>)> = vec![
            ("x-forwarded-for", vec![xff.join(", ")]),
            ("x-forwarded-proto", want_proto),
            ("x-forwarded-host", want_host),
            ("forwarded", want_forwarded),
        ];
        checks.extend(FORWARDED_URL.iter().map(|name| (*name, trimmed(name))));
        checks.extend(NEVER_FORWARDED.iter().map(|name| (*name, Vec::new())));
        for (name, want) in checks {
            let got = a.values(name);
            if got != want {
                out.push((
                    if NEVER_FORWARDED[5..].contains(&name) { "rewrite-header" } else { "forwarding-header" },
                    format!(
                        "the upstream reads {name} as {got:?}, expected {want:?}{}",
                        if trusted { " (from a trusted peer)" } else { "" }
                    ),
                ));
            }
        }

        // Upgrade and hop-by-hop.
        let client_upgrade = r.sent("upgrade").first().map(|v| v.to_string());
        let upgrade_allowed = logged_route == WEBSOCKET_ROUTE
            && client_upgrade.as_deref().is_some_and(|u| !u.eq_ignore_ascii_case("h2c"));
        let upgrades = a.values("upgrade");
        if upgrades.iter().any(|u| u.to_ascii_lowercase().contains("h2c")) {
            out.push(("upgrade-header", format!("h2c reached the upstream: Upgrade {upgrades:?}")));
        } else if upgrade_allowed {
            // Passed as sent, or dropped (a request that is no clean handshake).
            if !upgrades.is_empty() && upgrades != [client_upgrade.clone().unwrap_or_default()] {
                out.push((
                    "upgrade-header",
                    format!(
                        "websocket route: the upstream reads Upgrade {upgrades:?}, sent {client_upgrade:?}"
                    ),
                ));
            }
        } else if !upgrades.is_empty() {
            out.push((
                "upgrade-header",
                format!("Upgrade {upgrades:?} reached the upstream on route {logged_route}, not a websocket route"),
            ));
        }
        let connection_tokens: Vec<String> = a
            .values("connection")
            .iter()
            .flat_map(|v| v.split(','))
            .map(|t| t.trim().to_ascii_lowercase())
            .filter(|t| !t.is_empty())
            .collect();
        let stray: Vec<&String> = connection_tokens
            .iter()
            .filter(|t| {
                !(t.as_str() == "keep-alive"
                    || t.as_str() == "close"
                    || (t.as_str() == "upgrade" && upgrade_allowed && !upgrades.is_empty()))
            })
            .collect();
        if !stray.is_empty() {
            out.push(("hop-by-hop-header", format!("the upstream reads Connection tokens {stray:?}")));
        }
        let mut hop_names: Vec<String> = ["keep-alive", "proxy-connection", "te", "http2-settings"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        for nominated in r.sent("connection").iter().flat_map(|v| v.split(',')) {
            let nominated = lenient_name(nominated);
            let gateway_owned = nominated.starts_with("x-auth-")
                || nominated.starts_with("x-forwarded-")
                || matches!(nominated.as_str(), "x-request-id" | "keep-alive" | "close" | "upgrade" | "host");
            if !gateway_owned && !nominated.is_empty() {
                hop_names.push(nominated);
            }
        }
        for name in hop_names {
            let got = a.values(&name);
            if !got.is_empty() {
                out.push((
                    "hop-by-hop-header",
                    format!("hop-by-hop header {name} reached the upstream: {got:?}"),
                ));
            }
        }

        // Method overrides, credentials, Host, request id.
        for name in ["x-http-method-override", "x-http-method", "x-method-override"] {
            let got = a.values(name);
            if !got.is_empty() {
                out.push(("override-header", format!("{name} reached the upstream: {got:?}")));
            }
        }
        if !a.values("authorization").is_empty() {
            out.push(("authorization", "the client's Authorization reached the upstream".into()));
        }
        let hosts = a.values("host");
        if hosts != [HOST] {
            out.push(("host-header", format!("the upstream reads Host as {hosts:?}")));
        }
        let ids = a.values("x-request-id");
        if ids != [r.id.clone()] {
            out.push(("request-id", format!("the upstream reads X-Request-Id as {ids:?}")));
        }

        // Framing and body.
        let cl = a.values("content-length");
        let te = a.values("transfer-encoding");
        if cl.len() > 1 || te.len() > 1 || (!cl.is_empty() && !te.is_empty()) {
            out.push((
                "framing",
                format!("ambiguous framing at the upstream: Content-Length {cl:?}, Transfer-Encoding {te:?}"),
            ));
        }
        if te.iter().any(|t| !t.eq_ignore_ascii_case("chunked")) {
            out.push(("framing", format!("Transfer-Encoding {te:?} at the upstream")));
        }
        if !a.complete {
            // Only an exchange the gateway aborted may leave a body unfinished.
            if log_str(log, "outcome") == "forwarded" {
                out.push(("framing", "logged forwarded, but the upstream never got the whole body".into()));
            }
        } else if let [length] = cl.as_slice() {
            if length.parse::<usize>().ok() != Some(a.body.len()) {
                out.push(("framing", format!("Content-Length {length:?} for a {}-byte body", a.body.len())));
            }
        }
        if a.complete && a.body != r.payload {
            out.push((
                "framing",
                format!(
                    "the upstream got a {}-byte body {}, sent a {}-byte payload {}",
                    a.body.len(),
                    show_short(&a.body),
                    r.payload.len(),
                    show_short(&r.payload)
                ),
            ));
        }

        // Content-Type and form bodies: one type, read one way, and no
        // `_method` field where an override changes the judgement.
        let types = a.values("content-type");
        if types.len() > 1 || types.iter().any(|t| !visible_ascii(t)) {
            out.push(("content-type", format!("the upstream reads Content-Type as {types:?}")));
        }
        if !judged_alike(&path) {
            for t in &types {
                if form_kind(t, true).is_some_and(|kind| form_has_method_field(&kind, &a.body)) {
                    out.push((
                        "method-override",
                        format!(
                            "a `_method` form field reached the upstream on {path} (Content-Type {t:?}), \
                             where an override changes the judgement: {}",
                            show_short(&a.body)
                        ),
                    ));
                }
            }
        }

        // Re-judge what the upstream reads with the identity it reads.
        let method = a.method.to_ascii_uppercase();
        if endpoint_like(&path) {
            out.push((
                "rejudge",
                format!("the upstream reads {method} {path}: one of the gateway's own endpoints"),
            ));
        }
        let (route, policy) = model_route(&method, &path);
        if route != logged_route {
            out.push((
                "route-vs-log",
                format!("the upstream reads {method} {path}, which matches route {route}; the gateway matched {logged_route}"),
            ));
        }
        let caller = (!a.values("x-auth-user-id").is_empty()).then(|| Caller {
            admin: a.values("x-auth-admin").iter().any(|v| v.eq_ignore_ascii_case("true")),
            fresh: a.values("x-auth-fresh").iter().any(|v| v.eq_ignore_ascii_case("true")),
        });
        if !allows(policy, caller) {
            out.push((
                "rejudge",
                format!("the upstream reads {method} {path} (route {route}, policy {policy:?}) with identity {caller:?}: not allowed"),
            ));
        }
        out
    }

    /// Renders one case: every request, what was expected, decided and received.
    fn context(&self, ci: usize, mark: usize) -> String {
        let case = &self.cases[ci];
        let ex = &self.exchanges[ci];
        let mut s = format!(
            "    case {} — {:?}, {} request(s), {} sent, {} answer(s), connection end: {:?}, {:?}\n",
            case.label,
            case.mode,
            case.reqs.len(),
            ex.sent,
            ex.responses.len(),
            ex.end,
            ex.elapsed
        );
        let empty = Vec::new();
        for (ri, r) in case.reqs.iter().enumerate() {
            let logs = self.logs.get(&r.id).unwrap_or(&empty);
            let decision = decide(logs, ex.responses.get(ri), ri < ex.sent);
            let _ = writeln!(
                s,
                "    {} [{ri}] {} token={:?} notes={:?}",
                if ri == mark { ">>>" } else { "   " },
                r.id,
                r.token,
                r.notes
            );
            let _ = writeln!(s, "          sent:     {}", show_short(&r.wire(None)));
            let _ = writeln!(s, "          expected: {}", self.model.expect(r));
            let _ = writeln!(s, "          gateway:  {decision}");
            if let Some(resp) = ex.responses.get(ri) {
                let _ = writeln!(s, "          answer:   {}", resp.show());
            }
            let arrivals = self.by_id.get(&r.id).map(Vec::as_slice).unwrap_or(&[]);
            if arrivals.is_empty() {
                let _ = writeln!(s, "          upstream: nothing");
            }
            for &i in arrivals {
                let _ = writeln!(s, "          upstream: {}", self.arrivals[i].show());
            }
        }
        s
    }

    /// How each request of a case was decided, briefly.
    fn outcomes(&self, ci: usize) -> String {
        let (case, ex) = (&self.cases[ci], &self.exchanges[ci]);
        let empty = Vec::new();
        let brief: Vec<String> = case
            .reqs
            .iter()
            .enumerate()
            .map(|(ri, r)| {
                match decide(self.logs.get(&r.id).unwrap_or(&empty), ex.responses.get(ri), ri < ex.sent) {
                    Decision::Forwarded(log) | Decision::Builtin(log) | Decision::Other(log) => {
                        format!("{} {}", log["status"], log_str(log, "outcome"))
                    }
                    Decision::Refused { status, code, .. } => {
                        format!("{status} {}", code.unwrap_or_else(|| "by pingora".into()))
                    }
                    other => other.to_string(),
                }
            })
            .collect();
        brief.join(", ")
    }

    /// How the requests were decided and how the connections ended: the run's coverage.
    fn coverage(&self) -> Coverage {
        let mut c = Coverage { cases: self.cases.len(), ..Coverage::default() };
        let empty = Vec::new();
        for (case, ex) in self.cases.iter().zip(self.exchanges) {
            let end = match &ex.end {
                End::Broken(_) => "broken".to_owned(),
                other => format!("{other:?}").to_lowercase(),
            };
            *c.ends.entry(end).or_default() += 1;
            c.slowest = c.slowest.max(ex.elapsed);
            for (ri, r) in case.reqs.iter().enumerate() {
                c.requests += 1;
                let logs = self.logs.get(&r.id).unwrap_or(&empty);
                let decision = decide(logs, ex.responses.get(ri), ri < ex.sent);
                let kind = match &decision {
                    Decision::Forwarded(log) if log["status"] == 101 => "forwarded, tunnel".to_owned(),
                    Decision::Forwarded(_) => "forwarded".to_owned(),
                    Decision::Builtin(_) => "builtin".to_owned(),
                    Decision::Refused { status, log: Some(_), .. } => format!("refused {status}"),
                    Decision::Refused { status, log: None, .. } => format!("refused {status} by pingora"),
                    Decision::Other(log) => log_str(log, "outcome").to_owned(),
                    Decision::Unlogged(_) => "unlogged".to_owned(),
                    Decision::Unanswered => "unanswered".to_owned(),
                    Decision::NotSent => "not sent".to_owned(),
                };
                *c.decisions.entry(kind).or_default() += 1;
                let answered = !matches!(decision, Decision::Unanswered | Decision::NotSent);
                if case.mode == Mode::Sequential && ri > 0 && answered {
                    c.later_answered += 1;
                }
                if r.version == "HTTP/1.0" && answered {
                    c.http10_answered += 1;
                }
                if let Some(log) = logs.last() {
                    let path = log_str(log, "path");
                    let route = log_str(log, "route");
                    if path.bytes().any(|b| b.is_ascii_uppercase())
                        && route.starts_with('/')
                        && route != "/**"
                    {
                        c.case_variants_judged += 1;
                    }
                    if log_str(log, "error") == "method_override_refused" {
                        if r.body.is_empty() {
                            c.override_query += 1;
                        } else {
                            c.override_body += 1;
                        }
                    }
                }
            }
        }
        c
    }

    /// Panics with a summary by kind and full examples, if anything failed.
    fn finish(&self, what: &str) {
        if self.failures.is_empty() {
            return;
        }
        let examples: usize =
            std::env::var("DIFFERENTIAL_EXAMPLES").ok().and_then(|v| v.parse().ok()).unwrap_or(2);
        let mut by_tag: BTreeMap<&str, Vec<&Failure>> = BTreeMap::new();
        for f in &self.failures {
            by_tag.entry(f.tag).or_default().push(f);
        }
        let mut tags: Vec<(&str, Vec<&Failure>)> = by_tag.into_iter().collect();
        tags.sort_by_key(|(_, fs)| std::cmp::Reverse(fs.len()));
        let mut report = format!("{what}: {} failure(s)\n", self.failures.len());
        for (tag, fs) in &tags {
            let mut cases: Vec<usize> = fs.iter().filter_map(|f| f.at.map(|(c, _)| c)).collect();
            cases.dedup();
            let labels: Vec<&str> = cases.iter().take(12).map(|&c| self.cases[c].label.as_str()).collect();
            let _ = writeln!(report, "  {tag}: {} (cases: {})", fs.len(), labels.join(", "));
        }
        for (tag, fs) in &tags {
            let _ = writeln!(report, "\n=== {tag} ===");
            for f in fs.iter().take(examples) {
                let _ = writeln!(report, "  - {}", f.detail);
                if let Some((ci, ri)) = f.at {
                    report.push_str(&self.context(ci, ri));
                }
            }
        }
        panic!("{report}");
    }
}

impl Decision<'_> {
    fn is_unanswered(&self) -> bool {
        matches!(self, Decision::Unanswered)
    }
}

/// Whether the gateway must keep a connection open after this request: an
/// HTTP/1.1 request that did not ask to close, framed one way only, and
/// forwarded, answered by a built-in (but for 413, whose body is left unread)
/// or refused by its route's policy without a body. Refusals of requests
/// without a canonical form, of form bodies, upstream errors and tunnels may
/// close it.
fn must_keep_open(r: &Req, decision: &Decision<'_>) -> bool {
    let framed_twice = !r.sent("transfer-encoding").is_empty() && !r.sent("content-length").is_empty();
    if r.version != "HTTP/1.1" || r.asks_close() || framed_twice || r.last {
        return false;
    }
    match decision {
        Decision::Forwarded(log) => log["status"] == 200,
        Decision::Builtin(log) => log["status"] != 413,
        // pingora closes when it answers before the request's body was read.
        Decision::Refused { status: 401 | 403, log: Some(_), .. } => r.body.is_empty(),
        _ => false,
    }
}

/// What a run covered.
#[derive(Debug, Default)]
struct Coverage {
    cases: usize,
    requests: usize,
    decisions: BTreeMap<String, usize>,
    ends: BTreeMap<String, usize>,
    slowest: Duration,
    /// Requests after the first on one-at-a-time connections that were answered.
    later_answered: usize,
    http10_answered: usize,
    /// Paths in another letter case, judged by a route of their own (not the catch-all).
    case_variants_judged: usize,
    /// `_method` refusals of a request without a body (the query) and with one (the form).
    override_query: usize,
    override_body: usize,
}

impl Coverage {
    fn count(&self, prefix: &str) -> usize {
        self.decisions.iter().filter(|(k, _)| k.starts_with(prefix)).map(|(_, n)| n).sum()
    }

    fn show(&self) -> String {
        format!(
            "decisions {:?}; connections {:?}; later requests answered on kept-alive connections {}; \
             HTTP/1.0 answered {}; letter-case variants judged by their route {}; `_method` refused in \
             the query {}, in a form body {}; slowest case {:?}",
            self.decisions,
            self.ends,
            self.later_answered,
            self.http10_answered,
            self.case_variants_judged,
            self.override_query,
            self.override_body,
            self.slowest
        )
    }

    /// What a run of the random generator must at least have covered, so that
    /// a gateway that refuses, forwards or closes too much can't pass unseen.
    /// Only for runs of 200 cases or more.
    fn shortfalls(&self) -> Vec<String> {
        if self.cases < 200 {
            return Vec::new();
        }
        let (n, c) = (self.requests as f64, self.cases as f64);
        let forwarded = self.count("forwarded") - self.count("forwarded, tunnel");
        let minimums = [
            ("forwarded (200)", forwarded, n * 0.08),
            ("refused", self.count("refused"), n * 0.25),
            ("refused 401/403 by policy", self.count("refused 401") + self.count("refused 403"), n * 0.08),
            ("answered by a built-in", self.count("builtin"), c * 0.02),
            ("forwarded tunnels (101)", self.count("forwarded, tunnel"), c * 0.005),
            ("later requests answered on kept-alive connections", self.later_answered, n * 0.05),
            ("HTTP/1.0 requests answered", self.http10_answered, c * 0.01),
            ("letter-case variants judged by their route", self.case_variants_judged, c * 0.03),
            ("`_method` refused in the query", self.override_query, c * 0.01),
            ("`_method` refused in a form body", self.override_body, c * 0.004),
        ];
        minimums
            .iter()
            .filter(|(_, got, least)| (*got as f64) < *least)
            .map(|(what, got, least)| format!("{what}: {got}, expected at least {}", least.ceil()))
            .collect()
    }
}

/// Whether the gateway's decision is one the spec allows; if not, why.
/// `pipelined_on`: more requests were written behind this one at once.
fn spec_mismatch(
    expect: &Expect,
    decision: &Decision<'_>,
    model: &Model,
    r: &Req,
    pipelined_on: bool,
) -> Option<String> {
    let ok = match (expect, decision) {
        // pingora (without pipelining) gives up on a request whose client sends
        // the next one while it is proxied: closing without an answer is
        // allowed then (HTTP lets a server close; the client retries). Calling
        // it an upstream failure is not.
        (Expect::Forward { .. }, Decision::Other(log))
            if pipelined_on && log_str(log, "outcome") == "client_error" && log["status"] == 0 =>
        {
            true
        }
        (Expect::Refuse(reasons), Decision::Refused { status, code, .. }) => reasons.iter().any(|reason| {
            reason.status == *status
                && match code {
                    Some(code) => reason.code == ANY_CODE || code == reason.code,
                    None => reason.plain_ok,
                }
        }),
        (Expect::NotForwarded(_), Decision::Builtin(_) | Decision::Refused { .. }) => true,
        (Expect::Deny { .. }, Decision::Refused { status, .. }) => *status == 401 || *status == 403,
        (Expect::Forward { or_refuse, .. }, Decision::Refused { status, code, .. })
            if or_refuse.iter().any(|r| r.status == *status && code.as_deref() == Some(r.code)) =>
        {
            true
        }
        (Expect::Forward { method, path, route, policy, .. }, Decision::Forwarded(log)) => {
            let mut problems = Vec::new();
            if log_str(log, "method") != method.as_str() {
                problems.push(format!("logged method {:?}, canonical {method:?}", log_str(log, "method")));
            }
            if log_str(log, "path") != path.as_str() {
                problems.push(format!("logged path {:?}, canonical {path:?}", log_str(log, "path")));
            }
            if log_str(log, "route") != *route {
                problems.push(format!(
                    "matched route {:?}, the spec's route is {route:?}",
                    log_str(log, "route")
                ));
            }
            let user = log.get("user_id").and_then(Value::as_u64);
            let token_user = model.tokens.get(r.token).map(|i| i.user_id);
            let identified = !matches!(policy, Policy::Public);
            if identified && user != token_user {
                problems.push(format!("logged user {user:?}, the token's user is {token_user:?}"));
            }
            if !problems.is_empty() {
                return Some(format!("expected to {expect}, forwarded but {}", problems.join("; ")));
            }
            true
        }
        _ => false,
    };
    (!ok).then(|| format!("expected to {expect}, but {decision}"))
}

fn show(bytes: &[u8]) -> String {
    bytes.escape_ascii().to_string()
}

/// At most 300 bytes shown, and how many more there are.
fn show_short(bytes: &[u8]) -> String {
    const MOST: usize = 300;
    if bytes.len() <= MOST {
        return show(bytes);
    }
    format!("{}... ({} more bytes)", show(&bytes[..MOST]), bytes.len() - MOST)
}

fn env_number(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    let v = v.trim();
    match v.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => v.parse().ok(),
    }
}

// ============================================================================
// Tests
// ============================================================================

#[test]
fn what_the_gateway_judged_is_what_the_upstream_received() {
    let seed = env_number("DIFFERENTIAL_SEED").unwrap_or(DEFAULT_SEED);
    let count = env_number("DIFFERENTIAL_CASES").map_or(DEFAULT_CASES, |n| n as usize);
    eprintln!("differential: seed {seed:#x}, {count} cases (DIFFERENTIAL_SEED={seed:#x} DIFFERENTIAL_CASES={count})");
    let started = Instant::now();
    let world = World::start(Server::default());
    let mut rng = StdRng::seed_from_u64(seed);
    let cases: Vec<Case> = (0..count).map(|i| generate_case(&mut rng, i)).collect();
    let exchanges = world.run(&cases);
    let checker = world.check(&cases, &exchanges);
    let requests: usize = cases.iter().map(|c| c.reqs.len()).sum();
    eprintln!(
        "differential: {count} cases, {requests} requests, {} arrivals at the upstream, {} failure(s), {:?}",
        checker.arrivals.len(),
        checker.failures.len(),
        started.elapsed()
    );
    let coverage = checker.coverage();
    eprintln!("differential: {}", coverage.show());
    let mut checker = checker;
    for shortfall in coverage.shortfalls() {
        checker.fail("coverage", None, format!("the run covered too little: {shortfall}"));
    }
    checker.finish(&format!("differential run (seed {seed:#x}, {count} cases)"));
}

/// One hand-written case.
fn known(label: &str, mode: Mode, reqs: Vec<Req>) -> Case {
    let mut reqs = reqs;
    use std::hash::{Hash, Hasher};
    let slug: String =
        label.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '-' }).take(60).collect();
    // Labels that differ only in punctuation (`?.method`, `?+_method`) get ids of their own.
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    label.hash(&mut hasher);
    let tag = hasher.finish() as u32;
    for (i, r) in reqs.iter_mut().enumerate() {
        r.id = format!("k-{}-{tag:08x}-{i}", slug.trim_matches('-'));
        r.note(label);
    }
    Case { label: label.into(), mode, reqs }
}

/// A urlencoded form body on a request with the user's token (the admin's on
/// `/admin/x`), alone on its connection.
fn form_case(label: &str, method: &str, target: &[u8], body: &str, chunked: bool) -> Case {
    let token = if target.eq_ignore_ascii_case(b"/admin/x") { Tok::Admin } else { Tok::User };
    let mut r = Req::new(method, target)
        .token(token)
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(body.as_bytes(), chunked);
    r.last = chunked;
    known(label, Mode::Pipelined, vec![r])
}

fn smuggle(label: &str, mode: Mode, first: Req) -> Case {
    let forged = Req::new("DELETE", b"/item/x").header("X-Auth-Admin", "true").header("X-Auth-User-Id", "1");
    known(label, mode, vec![first, forged])
}

/// The attacks from the tracker: each is refused, or forwarded in canonical
/// form with only the identity the gateway vouches for.
#[test]
fn known_attacks_are_refused_or_forwarded_canonically() {
    use Mode::{Pipelined, Sequential};
    let world = World::start(Server::default());
    let login_body = json!({"email": "nobody@example.com", "password": "not-a-password"}).to_string();
    let mut login = Req::new("POST", b"/login/").header("Content-Type", "application/json");
    login.headers.push(("Content-Length".into(), login_body.len().to_string()));
    login.body = login_body.clone().into_bytes();
    login.payload = login.body.clone();
    let ws = |target: &[u8]| {
        Req::new("GET", target).header("Upgrade", "websocket").header("Connection", "Upgrade")
    };
    let mut cases = vec![
        known("DELETE item/x", Pipelined, vec![Req::new("DELETE", b"item/x").token(Tok::User)]),
        known("GET admin/secret", Pipelined, vec![Req::new("GET", b"admin/secret")]),
        known("GET ../admin/x", Pipelined, vec![Req::new("GET", b"../admin/x")]),
        known("GET */admin/x", Pipelined, vec![Req::new("GET", b"*/admin/x")]),
        known("GET http://host/admin/x", Pipelined, vec![Req::new("GET", b"http://gatehouse.test/admin/x")]),
        known("delete /item/x", Pipelined, vec![Req::new("delete", b"/item/x").token(Tok::User)]),
        known("Delete /item/x", Pipelined, vec![Req::new("Delete", b"/item/x").token(Tok::User)]),
        known("get /item/x", Pipelined, vec![Req::new("get", b"/item/x")]),
        smuggle("upgrade then forged DELETE, pipelined", Pipelined, ws(b"/")),
        smuggle("upgrade then forged DELETE, after the answer", Sequential, ws(b"/")),
        smuggle(
            "bare Upgrade then forged DELETE, pipelined",
            Pipelined,
            Req::new("GET", b"/public/x").header("Upgrade", "websocket"),
        ),
        smuggle(
            "bare Upgrade then forged DELETE, after the answer",
            Sequential,
            Req::new("GET", b"/public/x").header("Upgrade", "websocket"),
        ),
        smuggle(
            "h2c upgrade then forged DELETE",
            Sequential,
            Req::new("GET", b"/")
                .header("Upgrade", "h2c")
                .header("Connection", "Upgrade, HTTP2-Settings")
                .header("HTTP2-Settings", "AAMAAABkAARAAAAAAAIAAAAA"),
        ),
        known(
            "X_Auth_User_Id: 1 (public)",
            Pipelined,
            vec![Req::new("GET", b"/public/x").header("X_Auth_User_Id", "1")],
        ),
        known(
            "X_Auth_User_Id: 1 (user token)",
            Pipelined,
            vec![Req::new("GET", b"/item/x").token(Tok::User).header("X_Auth_User_Id", "1")],
        ),
        known(
            "x_auth_admin: true (public)",
            Pipelined,
            vec![Req::new("GET", b"/public/x").header("x_auth_admin", "true")],
        ),
        known(
            "x_auth_admin: true (user deletes)",
            Pipelined,
            vec![Req::new("DELETE", b"/item/x").token(Tok::User).header("x_auth_admin", "true")],
        ),
        known(
            "x_auth_admin: true (user on an open GET)",
            Pipelined,
            vec![Req::new("GET", b"/item/x").token(Tok::User).header("x_auth_admin", "true")],
        ),
        known(
            "X-Auth_User-Id: 1",
            Pipelined,
            vec![Req::new("GET", b"/public/x").header("X-Auth_User-Id", "1")],
        ),
        known(
            "Connection: upgrade, x-auth-admin (admin on websocket)",
            Pipelined,
            vec![Req::new("GET", b"/ws/chat")
                .token(Tok::Admin)
                .header("Connection", "upgrade, x-auth-admin")
                .header("Upgrade", "websocket")],
        ),
        known(
            "X-Forwarded-For: 1.2.3.4",
            Pipelined,
            vec![Req::new("GET", b"/public/x").header("X-Forwarded-For", "1.2.3.4")],
        ),
        known("POST /login/", Pipelined, vec![login]),
        known(
            "Content-Length: 5, 5",
            Pipelined,
            vec![Req::new("POST", b"/public/x").framing(Framing::ClComma)],
        ),
        known(
            "Content-Length and Transfer-Encoding",
            Pipelined,
            vec![Req::new("POST", b"/public/x").framing(Framing::ClAndTe)],
        ),
        // Route and built-in paths in another letter case.
        known("GET /ADMIN/x (no token)", Pipelined, vec![Req::new("GET", b"/ADMIN/x")]),
        known(
            "GET /aDmIn/secret (user)",
            Pipelined,
            vec![Req::new("GET", b"/aDmIn/secret").token(Tok::User)],
        ),
        known(
            "GET /Admin/secret (admin)",
            Pipelined,
            vec![Req::new("GET", b"/Admin/secret").token(Tok::Admin)],
        ),
        known("DELETE /Item/x (user)", Pipelined, vec![Req::new("DELETE", b"/Item/x").token(Tok::User)]),
        known("DELETE /ITEM/x (admin)", Pipelined, vec![Req::new("DELETE", b"/ITEM/x").token(Tok::Admin)]),
        known(
            "DELETE /PRODUCT/x (user, not fresh)",
            Pipelined,
            vec![Req::new("DELETE", b"/PRODUCT/x").token(Tok::UserStale)],
        ),
        known(
            "GET /Debug/Echo/Deny/x",
            Pipelined,
            vec![Req::new("GET", b"/Debug/Echo/Deny/x").token(Tok::Admin)],
        ),
        known("POST /LOGIN", Pipelined, vec![Req::new("POST", b"/LOGIN")]),
        known("POST /Login/ (after /public/..)", Pipelined, vec![Req::new("POST", b"/public/../Login/")]),
        known("GET /.Well-Known/JWKS.json", Pipelined, vec![Req::new("GET", b"/.Well-Known/JWKS.json")]),
        known(
            "GET /WS/Chat websocket (user)",
            Pipelined,
            vec![ws(b"/WS/Chat").token(Tok::User).header("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")],
        ),
        known(
            "kept alive: /public/x, /ADMIN/x, /Items, /Item/x",
            Sequential,
            vec![
                Req::new("GET", b"/public/x"),
                Req::new("GET", b"/ADMIN/x"),
                Req::new("GET", b"/Items"),
                Req::new("GET", b"/Item/x").token(Tok::User),
            ],
        ),
        // HTTP/1.0, Host.
        known("HTTP/1.0 with Host", Pipelined, vec![Req::new("GET", b"/public/x").http10(true)]),
        known("HTTP/1.0 without Host", Pipelined, vec![Req::new("GET", b"/public/x").http10(false)]),
        known(
            "HTTP/1.0 without Host (admin path)",
            Pipelined,
            vec![Req::new("GET", b"/ADMIN/x").token(Tok::Admin).http10(false)],
        ),
        known(
            "HTTP/1.1 without Host",
            Pipelined,
            vec![{
                let mut r = Req::new("GET", b"/public/x");
                r.headers.clear();
                r
            }],
        ),
        // Client addresses and URL rewrites.
        known(
            "X-Original-URL and friends",
            Pipelined,
            vec![Req::new("GET", b"/public/x")
                .header("X-Original-URL", "/admin/secret")
                .header("X-Original-URI", "/admin/secret")
                .header("X-Rewrite-URL", "/admin/secret")],
        ),
        known(
            "True-Client-IP and friends",
            Pipelined,
            vec![Req::new("GET", b"/item/x")
                .token(Tok::User)
                .header("True-Client-IP", "1.2.3.4")
                .header("X-Client-IP", "1.2.3.4")
                .header("X-Cluster-Client-IP", "1.2.3.4")
                .header("CF-Connecting-IP", "1.2.3.4")
                .header("X-Real-IP", "1.2.3.4")
                .header("X-Forwarded-Prefix", "/admin")
                .header("X-Forwarded-Port", "443")
                .header("X-Forwarded-Server", "evil.test")],
        ),
        // Content-Type.
        known(
            "two Content-Types",
            Pipelined,
            vec![Req::new("POST", b"/public/x")
                .header("Content-Type", "text/plain")
                .header("Content-Type", "application/x-www-form-urlencoded")
                .body(b"_method=DELETE", false)],
        ),
        known(
            "Content-Type with U+00A0",
            Pipelined,
            vec![Req::new("GET", b"/item/x")
                .token(Tok::User)
                .header("Content-Type", "application/x-www-form-urlencoded\u{a0}")
                .body(b"_method=DELETE", false)],
        ),
        // Form bodies where an override matters (/item/x) and where it doesn't.
        form_case("form _method=DELETE on GET /item/x (user)", "GET", b"/item/x", "_method=DELETE", false),
        form_case(
            "form a=1;_method=DELETE on GET /Item/x (user)",
            "GET",
            b"/Item/x",
            "a=1;_method=DELETE",
            false,
        ),
        form_case("form .method on GET /items", "GET", b"/items", ".method=DELETE", false),
        form_case("form [method on GET /item/x", "GET", b"/item/x", "a=1&[method=DELETE", false),
        form_case("form %20_method on GET /item/x", "GET", b"/item/x", "%20_method=DELETE", false),
        form_case("form _method[x] on GET /item/x", "GET", b"/item/x", "_method[x]=DELETE", false),
        form_case(
            "form _method[<36 letters>] on GET /item/x (a key past 32 bytes)",
            "GET",
            b"/item/x",
            "_method[aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa]=DELETE",
            false,
        ),
        form_case("form without _method on GET /item/x", "GET", b"/item/x", "a=1&my_method=2", false),
        form_case(
            "form _method=DELETE on POST /public/x (alike)",
            "POST",
            b"/public/x",
            "_method=DELETE",
            false,
        ),
        form_case(
            "form _method=GET on POST /ADMIN/x (admin, alike)",
            "POST",
            b"/ADMIN/x",
            "_method=GET",
            false,
        ),
        form_case("chunked form on GET /item/x", "GET", b"/item/x", "a=1", true),
        form_case("chunked form on POST /public/x (alike)", "POST", b"/public/x", "_method=DELETE", true),
        known(
            "multipart name=\"_method\" on GET /item/x",
            Pipelined,
            vec![Req::new("GET", b"/item/x")
                .token(Tok::User)
                .header("Content-Type", "multipart/form-data; boundary=xyz")
                .body(&multipart_body(MULTIPART_PARTS[2]), false)],
        ),
        known(
            "multipart with `_method` in an upload's content on GET /item/x",
            Pipelined,
            vec![Req::new("GET", b"/item/x")
                .token(Tok::User)
                .header("Content-Type", "multipart/form-data; boundary=xyz")
                .body(&multipart_body(MULTIPART_PARTS[1]), false)],
        ),
        known(
            "a form Content-Type without a body on GET /item/x",
            Pipelined,
            vec![Req::new("GET", b"/item/x")
                .token(Tok::User)
                .header("Content-Type", "application/x-www-form-urlencoded")],
        ),
        known(
            "64 KiB form on GET /item/x",
            Pipelined,
            vec![Req::new("GET", b"/item/x")
                .token(Tok::User)
                .header("Content-Type", "application/x-www-form-urlencoded")
                .body(&padded_form(FORM_LIMIT, false), false)],
        ),
        known(
            "64 KiB form ending in _method on GET /item/x",
            Pipelined,
            vec![Req::new("GET", b"/item/x")
                .token(Tok::User)
                .header("Content-Type", "application/x-www-form-urlencoded")
                .body(&padded_form(FORM_LIMIT, true), false)],
        ),
        known(
            "64 KiB + 1 form on GET /item/x",
            Sequential,
            vec![Req::new("GET", b"/item/x")
                .token(Tok::User)
                .header("Content-Type", "application/x-www-form-urlencoded")
                .body(&padded_form(FORM_LIMIT + 1, false), false)
                .unread()],
        ),
        known(
            "pipelined: a large request right behind a forwarded one",
            Pipelined,
            vec![
                Req::new("GET", b"/item/x").token(Tok::User),
                Req::new("POST", b"/public/x")
                    .header("Content-Type", "application/octet-stream")
                    .body(&padded_form(70_000, false), false)
                    .unread(),
            ],
        ),
        known(
            "70 KB form on POST /public/x (alike)",
            Pipelined,
            vec![Req::new("POST", b"/public/x")
                .header("Content-Type", "application/x-www-form-urlencoded")
                .body(&padded_form(70_000, true), false)
                .unread()],
        ),
    ];
    // `_method` in the query, every spelling.
    cases.extend(
        [
            "?a=1;_method=DELETE",
            "?.method=DELETE",
            "?+_method=DELETE",
            "?%20_method=DELETE",
            "?[method=DELETE",
            "?_method[]=DELETE",
            "?_Method=DELETE",
            "?a[_method]=DELETE",
        ]
        .map(|query| {
            let target = format!("/item/x{query}");
            known(query, Pipelined, vec![Req::new("GET", target.as_bytes()).token(Tok::User)])
        }),
    );
    let exchanges = world.run(&cases);
    let checker = world.check(&cases, &exchanges);
    for (ci, case) in cases.iter().enumerate() {
        let bad = checker.failures.iter().filter(|f| f.at.is_some_and(|(c, _)| c == ci)).count();
        eprintln!("{:>4}  {}  [{}]", if bad == 0 { "ok" } else { "FAIL" }, case.label, checker.outcomes(ci));
    }
    checker.finish("known attacks");
}

/// Behind a trusted proxy the upstream gets exactly `<client>, <trusted
/// hops...>, <peer>` (never what an attacker wrote left of the client), the
/// proxy's `X-Forwarded-Proto` / `-Host` / `-Prefix` (...), and a `Forwarded`
/// header for the client the gateway decided on; client-address and URL-rewrite
/// headers go even from a trusted proxy. Then random cases run behind it too.
#[test]
fn a_trusted_peer_chain_is_appended_to() {
    let world = World::start(Server { trusted_peer: true, forwarded_header: true, ..Server::default() });
    let xff = |label: &str, lines: &[&str]| {
        let mut r = Req::new("GET", b"/public/x");
        for line in lines {
            r = r.header("X-Forwarded-For", line);
        }
        known(label, Mode::Pipelined, vec![r])
    };
    let mut cases = vec![
        xff("no X-Forwarded-For", &[]),
        xff("one X-Forwarded-For", &["1.2.3.4"]),
        xff("a chain over two lines", &["10.0.0.1, 1.2.3.4", "5.6.7.8"]),
        xff("a trusted hop inside the chain", &["1.2.3.4, 127.0.0.1"]),
        xff("attacker entries left of the client", &["6.6.6.6, 7.7.7.7, 1.2.3.4"]),
        xff("attacker entries left of a trusted hop", &["6.6.6.6, 1.2.3.4", "127.0.0.1"]),
        xff("garbage right of the client", &["1.2.3.4, unknown"]),
        xff("garbage left of a trusted hop", &["unknown, 127.0.0.1"]),
        xff("an address with a port", &["1.2.3.4:8080"]),
        xff("IPv6 with a port", &["[2001:db8::1]:443"]),
        xff("IPv4-mapped IPv6", &["::ffff:1.2.3.4"]),
        known(
            "the proxy's scheme and host",
            Mode::Pipelined,
            vec![Req::new("GET", b"/public/x")
                .header("X-Forwarded-For", "1.2.3.4")
                .header("X-Forwarded-Proto", "https")
                .header("X-Forwarded-Host", "public.example")
                .header("X-Forwarded-Port", "443")
                .header("X-Forwarded-Prefix", "/app")
                .header("X-Forwarded-Server", "edge-1")],
        ),
        known(
            "a scheme that is neither http nor https",
            Mode::Pipelined,
            vec![Req::new("GET", b"/public/x").header("X-Forwarded-Proto", "ftp")],
        ),
        known(
            "two schemes, HTTPS first",
            Mode::Pipelined,
            vec![Req::new("GET", b"/public/x")
                .header("X-Forwarded-Proto", "HTTPS")
                .header("X-Forwarded-Proto", "http")],
        ),
        known(
            "client addresses and rewrites from a trusted proxy",
            Mode::Pipelined,
            vec![Req::new("GET", b"/public/x")
                .header("X-Forwarded-For", "1.2.3.4")
                .header("Forwarded", "for=6.6.6.6;proto=https")
                .header("X-Real-IP", "6.6.6.6")
                .header("True-Client-IP", "6.6.6.6")
                .header("CF-Connecting-IP", "6.6.6.6")
                .header("X-Original-URL", "/admin/secret")
                .header("X-Rewrite-URL", "/admin/secret")],
        ),
        known(
            "an identified caller",
            Mode::Pipelined,
            vec![Req::new("GET", b"/item/x").token(Tok::User).header("X-Forwarded-For", "1.2.3.4")],
        ),
        known(
            "kept alive behind a proxy",
            Mode::Sequential,
            vec![
                Req::new("GET", b"/public/x").header("X-Forwarded-For", "1.2.3.4"),
                Req::new("GET", b"/Item/x").token(Tok::Admin).header("X-Forwarded-For", "5.6.7.8, 127.0.0.1"),
            ],
        ),
    ];
    let known_cases = cases.len();
    let seed = env_number("DIFFERENTIAL_SEED").unwrap_or(DEFAULT_SEED) ^ 0x7275_7374;
    let mut rng = StdRng::seed_from_u64(seed);
    cases.extend((0..100).map(|i| {
        let mut case = generate_case(&mut rng, i);
        case.label = format!("random behind a proxy #{i}");
        for r in &mut case.reqs {
            r.id = format!("t-{}", r.id);
        }
        case
    }));
    let exchanges = world.run(&cases);
    let checker = world.check(&cases, &exchanges);
    for (ci, case) in cases.iter().enumerate().take(known_cases) {
        let bad = checker.failures.iter().filter(|f| f.at.is_some_and(|(c, _)| c == ci)).count();
        eprintln!("{:>4}  {}  [{}]", if bad == 0 { "ok" } else { "FAIL" }, case.label, checker.outcomes(ci));
    }
    eprintln!("behind a proxy (seed {seed:#x}): {}", checker.coverage().show());
    checker.finish(&format!("trusted peer (random cases from seed {seed:#x})"));
}

/// `underscore_headers = "reject"` refuses what "drop" would silently drop.
#[test]
fn underscore_headers_can_be_refused() {
    let world = World::start(Server { underscore_reject: true, ..Server::default() });
    let cases = vec![
        known(
            "X_Auth_User_Id",
            Mode::Pipelined,
            vec![Req::new("GET", b"/public/x").header("X_Auth_User_Id", "1")],
        ),
        known(
            "Some_Header",
            Mode::Pipelined,
            vec![Req::new("GET", b"/item/x").token(Tok::User).header("Some_Header", "v")],
        ),
        known("no underscore", Mode::Pipelined, vec![Req::new("GET", b"/public/x").header("X-Custom", "ok")]),
    ];
    let exchanges = world.run(&cases);
    world.check(&cases, &exchanges).finish("underscore headers rejected");
}

// ============================================================================
// The checks themselves: what an unfixed gateway did must fail them
// ============================================================================

fn fake_model(trusted_peer: bool) -> Model {
    let who = |token: &str, user_id: u64, username: &str, email: &str, admin: bool, fresh: bool| Identity {
        token: token.into(),
        user_id,
        username: username.into(),
        email: email.into(),
        admin,
        fresh,
        roles: if admin { "admin".into() } else { String::new() },
    };
    Model {
        tokens: Tokens {
            user: who("user-token", 2, "differ", "differ@example.com", false, true),
            user_stale: who("stale-token", 2, "differ", "differ@example.com", false, false),
            admin: who("admin-token", 1, "admin", crate::common::ADMIN_EMAIL, true, true),
        },
        trusted_peer,
        underscore_reject: false,
        forwarded_header: false,
    }
}

/// An access-log line.
#[allow(clippy::too_many_arguments)]
fn access(
    id: &str,
    outcome: &str,
    status: u16,
    method: &str,
    path: &str,
    route: &str,
    policy: &str,
    user_id: Option<u64>,
) -> Value {
    json!({"target": "gatehouse::access", "request_id": id, "outcome": outcome, "status": status,
           "method": method, "path": path, "route": route, "policy": policy, "user_id": user_id, "error": ""})
}

fn arrived(conn: usize, in_tunnel: bool, raw: &[u8]) -> Arrival {
    match parse_request(raw) {
        Parsed::Complete(mut a, used) => {
            assert_eq!(used, raw.len(), "one request: {}", show(raw));
            a.conn = conn;
            a.in_tunnel = in_tunnel;
            a
        }
        _ => panic!("not a request: {}", show(raw)),
    }
}

fn answer(status: u16, id: Option<&str>, via_tunnel: bool) -> Resp {
    let mut headers = Vec::new();
    if let Some(id) = id {
        headers.push(("X-Request-Id".to_owned(), id.to_owned()));
    }
    Resp { status, headers, body: Vec::new(), via_tunnel }
}

/// A request head the way the fixed gateway forwards it.
fn forwarded_head(method: &str, target: &str, id: &str, who: Option<&Identity>, extra: &str) -> Vec<u8> {
    let mut head = format!("{method} {target} HTTP/1.1\r\nhost: {HOST}\r\nx-request-id: {id}\r\n");
    if let Some(w) = who {
        head += &format!(
            "x-auth-user-id: {}\r\nx-auth-username: {}\r\nx-auth-email: {}\r\nx-auth-admin: {}\r\nx-auth-fresh: {}\r\nx-auth-token-id: t-1\r\nx-auth-roles: {}\r\n",
            w.user_id, w.username, w.email, w.admin, w.fresh, w.roles
        );
    }
    head += &format!(
        "x-forwarded-for: {PEER_IP}\r\nx-forwarded-proto: http\r\nx-forwarded-host: {HOST}\r\n{extra}\r\n"
    );
    head.into_bytes()
}

struct Scenario {
    case: Case,
    responses: Vec<Resp>,
    end: End,
    logs: Vec<Value>,
    arrivals: Vec<Arrival>,
    leftovers: Vec<(usize, Vec<u8>)>,
    /// The gateway's peer is a trusted proxy.
    trusted: bool,
    /// Failure kinds the checks must report (none: the checks must pass).
    want: &'static [&'static str],
}

/// Feeds the checks what the gateway did before the request-integrity work
/// (from its `proxy.rs`: methods and headers forwarded as received, except
/// `x-auth-*`, method overrides and Authorization; an extension method such
/// as `delete` matched against the routes, so it fell through to the public
/// catch-all; no X-Forwarded-*; Upgrade passed, so the upstream's 101 opened a
/// tunnel) and what the fixed gateway does. The first must fail with the
/// named kinds, the second must pass: the differential run can fail if the
/// class of bug comes back.
#[test]
fn the_checks_catch_what_an_unfixed_gateway_did() {
    use Mode::{Pipelined, Sequential};
    let model = fake_model(false);
    let trusted_model = fake_model(true);
    let user = &model.tokens.user;
    let admin = &model.tokens.admin;
    let id = |case: &Case, i: usize| case.reqs[i].id.clone();
    let mut scenarios = Vec::new();
    let mut add = |case: Case,
                   responses: Vec<Resp>,
                   logs: Vec<Value>,
                   arrivals: Vec<Arrival>,
                   want: &'static [&'static str]| {
        scenarios.push(Scenario {
            case,
            responses,
            end: End::Done,
            logs,
            arrivals,
            leftovers: vec![],
            trusted: false,
            want,
        });
    };

    // A lower-case method, matched by nothing but the public catch-all.
    let c =
        known("unfixed: delete /item/x", Pipelined, vec![Req::new("delete", b"/item/x").token(Tok::User)]);
    let i0 = id(&c, 0);
    add(
        c,
        vec![answer(200, Some(&i0), false)],
        vec![access(&i0, "forwarded", 200, "delete", "/item/x", "/**", "public", None)],
        vec![arrived(
            1,
            false,
            format!("delete /item/x HTTP/1.1\r\nhost: {HOST}\r\nx-request-id: {i0}\r\n\r\n").as_bytes(),
        )],
        &["spec", "method-not-canonical", "route-vs-log", "rejudge", "forwarding-header"],
    );

    // Upgrade passed on a public route; the forged request behind it went through the tunnel.
    let c = smuggle(
        "unfixed: upgrade smuggling",
        Pipelined,
        Req::new("GET", b"/").header("Upgrade", "websocket").header("Connection", "Upgrade"),
    );
    let (i0, i1) = (id(&c, 0), id(&c, 1));
    add(
        c,
        vec![answer(101, Some(&i0), false), answer(200, None, true)],
        vec![access(&i0, "forwarded", 101, "GET", "/", "/**", "public", None)],
        vec![
            arrived(
                1,
                false,
                format!("GET / HTTP/1.1\r\nhost: {HOST}\r\nx-request-id: {i0}\r\nupgrade: websocket\r\nconnection: Upgrade\r\n\r\n")
                    .as_bytes(),
            ),
            arrived(
                1,
                true,
                format!("DELETE /item/x HTTP/1.1\r\nHost: {HOST}\r\nX-Request-Id: {i1}\r\nX-Auth-Admin: true\r\nX-Auth-User-Id: 1\r\n\r\n")
                    .as_bytes(),
            ),
        ],
        &["upgrade-header", "hop-by-hop-header", "unjudged-arrival"],
    );

    // Identity headers spelled with `_` passed beside the gateway's own.
    let c = known(
        "unfixed: underscore identity",
        Pipelined,
        vec![Req::new("GET", b"/item/x")
            .token(Tok::User)
            .header("X_Auth_User_Id", "1")
            .header("x_auth_admin", "true")],
    );
    let i0 = id(&c, 0);
    add(
        c,
        vec![answer(200, Some(&i0), false)],
        vec![access(&i0, "forwarded", 200, "GET", "/item/x", "/item/{name}", "any", Some(2))],
        vec![arrived(
            1,
            false,
            &forwarded_head("GET", "/item/x", &i0, Some(user), "x_auth_user_id: 1\r\nx_auth_admin: true\r\n"),
        )],
        &["underscore-header", "identity-header"],
    );

    // The client's X-Forwarded-For passed, none of the gateway's.
    let c = known(
        "unfixed: X-Forwarded-For",
        Pipelined,
        vec![Req::new("GET", b"/public/x").header("X-Forwarded-For", "1.2.3.4")],
    );
    let i0 = id(&c, 0);
    add(
        c,
        vec![answer(200, Some(&i0), false)],
        vec![access(&i0, "forwarded", 200, "GET", "/public/x", "/**", "public", None)],
        vec![arrived(
            1,
            false,
            format!("GET /public/x HTTP/1.1\r\nhost: {HOST}\r\nx-request-id: {i0}\r\nx-forwarded-for: 1.2.3.4\r\n\r\n").as_bytes(),
        )],
        &["forwarding-header"],
    );

    // A built-in path with a trailing slash went to the catch-all.
    let c = known("unfixed: POST /login/", Pipelined, vec![Req::new("POST", b"/login/")]);
    let i0 = id(&c, 0);
    add(
        c,
        vec![answer(200, Some(&i0), false)],
        vec![access(&i0, "forwarded", 200, "POST", "/login/", "/**", "public", None)],
        vec![arrived(1, false, &forwarded_head("POST", "/login/", &i0, None, ""))],
        &["spec", "rejudge"],
    );

    // `_method` in the query passed.
    let c = known(
        "unfixed: _method",
        Pipelined,
        vec![Req::new("GET", b"/item/x?_method=DELETE").token(Tok::User)],
    );
    let i0 = id(&c, 0);
    add(
        c,
        vec![answer(200, Some(&i0), false)],
        vec![access(&i0, "forwarded", 200, "GET", "/item/x", "/item/{name}", "any", Some(2))],
        vec![arrived(1, false, &forwarded_head("GET", "/item/x?_method=DELETE", &i0, Some(user), ""))],
        &["spec", "method-override"],
    );

    // Raw UTF-8 in the target passed as is.
    let c = known("unfixed: raw UTF-8", Pipelined, vec![Req::new("GET", b"/caf\xc3\xa9")]);
    let i0 = id(&c, 0);
    let mut head = forwarded_head("GET", "/caf", &i0, None, "");
    head.splice(8..8, b"\xc3\xa9".iter().copied());
    add(
        c,
        vec![answer(200, Some(&i0), false)],
        vec![access(&i0, "forwarded", 200, "GET", "/café", "/**", "public", None)],
        vec![arrived(1, false, &head)],
        &["spec", "target-not-canonical", "path-vs-log"],
    );

    // Refused, yet it reached the upstream; and a forwarded request that arrived twice.
    let c = known(
        "unfixed: refused and duplicated",
        Sequential,
        vec![Req::new("GET", b"/admin/x"), Req::new("GET", b"/public/x")],
    );
    let (i0, i1) = (id(&c, 0), id(&c, 1));
    let mut refused = access(&i0, "refused", 401, "GET", "/admin/x", "/admin/**", "admin", None);
    refused["error"] = json!("missing_token");
    add(
        c,
        vec![answer(401, Some(&i0), false), answer(200, Some(&i1), false)],
        vec![refused, access(&i1, "forwarded", 200, "GET", "/public/x", "/**", "public", None)],
        vec![
            arrived(1, false, &forwarded_head("GET", "/admin/x", &i0, None, "")),
            arrived(1, false, &forwarded_head("GET", "/public/x", &i1, None, "")),
            arrived(2, false, &forwarded_head("GET", "/public/x", &i1, None, "")),
        ],
        &["refused-but-arrived", "arrival-count"],
    );

    // `Content-Length: 5, 5` passed as is.
    let c = known(
        "unfixed: Content-Length 5, 5",
        Pipelined,
        vec![Req::new("POST", b"/public/x").framing(Framing::ClComma)],
    );
    let i0 = id(&c, 0);
    let mut raw = forwarded_head("POST", "/public/x", &i0, None, "content-length: 5, 5\r\n");
    raw.extend_from_slice(b"hello");
    add(
        c,
        vec![answer(200, Some(&i0), false)],
        vec![access(&i0, "forwarded", 200, "POST", "/public/x", "/**", "public", None)],
        vec![arrived(1, false, &raw)],
        &["framing"],
    );

    // Controls: the fixed gateway's behaviour passes.
    let c = known(
        "fixed: GET /item/x",
        Pipelined,
        vec![Req::new("GET", b"/item/x").token(Tok::User).header("X_Auth_User_Id", "1")],
    );
    let i0 = id(&c, 0);
    add(
        c,
        vec![answer(200, Some(&i0), false)],
        vec![access(&i0, "forwarded", 200, "GET", "/item/x", "/item/{name}", "any", Some(2))],
        vec![arrived(1, false, &forwarded_head("GET", "/item/x", &i0, Some(user), ""))],
        &[],
    );
    let c = known("fixed: delete /item/x", Pipelined, vec![Req::new("delete", b"/item/x").token(Tok::User)]);
    let i0 = id(&c, 0);
    let mut refused = access(&i0, "refused", 400, "delete", "/item/x", "(none)", "none", None);
    refused["error"] = json!("invalid_method");
    add(c, vec![answer(400, Some(&i0), false)], vec![refused], vec![], &[]);
    let c =
        smuggle("fixed: upgrade smuggling", Sequential, Req::new("GET", b"/").header("Upgrade", "websocket"));
    let (i0, i1) = (id(&c, 0), id(&c, 1));
    let mut refused = access(&i1, "refused", 401, "DELETE", "/item/x", "/item/{name}", "admin", None);
    refused["error"] = json!("missing_token");
    add(
        c,
        vec![answer(200, Some(&i0), false), answer(401, Some(&i1), false)],
        vec![access(&i0, "forwarded", 200, "GET", "/", "/**", "public", None), refused],
        vec![arrived(1, false, &forwarded_head("GET", "/", &i0, None, ""))],
        &[],
    );

    // Case-sensitive routes: `/ADMIN/x` fell through to the public catch-all.
    let c = known("unfixed: GET /ADMIN/x", Pipelined, vec![Req::new("GET", b"/ADMIN/x")]);
    let i0 = id(&c, 0);
    add(
        c,
        vec![answer(200, Some(&i0), false)],
        vec![access(&i0, "forwarded", 200, "GET", "/ADMIN/x", "/**", "public", None)],
        vec![arrived(1, false, &forwarded_head("GET", "/ADMIN/x", &i0, None, ""))],
        &["spec", "route-vs-log", "rejudge"],
    );
    // ... and `DELETE /Item/x` went through as public.
    let c =
        known("unfixed: DELETE /Item/x", Pipelined, vec![Req::new("DELETE", b"/Item/x").token(Tok::User)]);
    let i0 = id(&c, 0);
    add(
        c,
        vec![answer(200, Some(&i0), false)],
        vec![access(&i0, "forwarded", 200, "DELETE", "/Item/x", "/**", "public", None)],
        vec![arrived(1, false, &forwarded_head("DELETE", "/Item/x", &i0, None, ""))],
        &["spec", "route-vs-log", "rejudge"],
    );
    // Case-sensitive built-ins: `/LOGIN` (with a password) forwarded.
    let c = known("unfixed: POST /LOGIN", Pipelined, vec![Req::new("POST", b"/LOGIN")]);
    let i0 = id(&c, 0);
    add(
        c,
        vec![answer(200, Some(&i0), false)],
        vec![access(&i0, "forwarded", 200, "POST", "/LOGIN", "/**", "public", None)],
        vec![arrived(1, false, &forwarded_head("POST", "/LOGIN", &i0, None, ""))],
        &["spec", "rejudge"],
    );
    // Control: `/ADMIN/x` judged by `/admin/**`, forwarded as sent.
    let c =
        known("fixed: GET /ADMIN/x (admin)", Pipelined, vec![Req::new("GET", b"/ADMIN/x").token(Tok::Admin)]);
    let i0 = id(&c, 0);
    add(
        c,
        vec![answer(200, Some(&i0), false)],
        vec![access(&i0, "forwarded", 200, "GET", "/ADMIN/x", "/admin/**", "admin", Some(1))],
        vec![arrived(1, false, &forwarded_head("GET", "/ADMIN/x", &i0, Some(admin), ""))],
        &[],
    );

    // `_method` after a `;`, and PHP's spellings, passed.
    for target in ["/item/x?a=1;_method=DELETE", "/item/x?.method=DELETE", "/item/x?[method=DELETE"] {
        let c = known(
            &format!("unfixed: {target}"),
            Pipelined,
            vec![Req::new("GET", target.as_bytes()).token(Tok::User)],
        );
        let i0 = id(&c, 0);
        add(
            c,
            vec![answer(200, Some(&i0), false)],
            vec![access(&i0, "forwarded", 200, "GET", "/item/x", "/item/{name}", "any", Some(2))],
            vec![arrived(1, false, &forwarded_head("GET", target, &i0, Some(user), ""))],
            &["spec", "method-override"],
        );
    }
    // Control: not `_method` for any framework.
    let c = known(
        "fixed: ?a[_method]=x",
        Pipelined,
        vec![Req::new("GET", b"/item/x?a[_method]=x").token(Tok::User)],
    );
    let i0 = id(&c, 0);
    add(
        c,
        vec![answer(200, Some(&i0), false)],
        vec![access(&i0, "forwarded", 200, "GET", "/item/x", "/item/{name}", "any", Some(2))],
        vec![arrived(1, false, &forwarded_head("GET", "/item/x?a[_method]=x", &i0, Some(user), ""))],
        &[],
    );

    // A form body's `_method` passed where methods are judged differently.
    let form = |target: &str, tok: Tok, body: &str| {
        Req::new("GET", target.as_bytes())
            .token(tok)
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body(body.as_bytes(), false)
    };
    let form_head = |target: &str, id: &str, who: Option<&Identity>, body: &str| {
        let extra =
            format!("content-type: application/x-www-form-urlencoded\r\ncontent-length: {}\r\n", body.len());
        [forwarded_head("GET", target, id, who, &extra), body.as_bytes().to_vec()].concat()
    };
    let c = known(
        "unfixed: form _method on /item/x",
        Pipelined,
        vec![form("/item/x", Tok::User, "a=1;.method=DELETE")],
    );
    let i0 = id(&c, 0);
    add(
        c,
        vec![answer(200, Some(&i0), false)],
        vec![access(&i0, "forwarded", 200, "GET", "/item/x", "/item/{name}", "any", Some(2))],
        vec![arrived(1, false, &form_head("/item/x", &i0, Some(user), "a=1;.method=DELETE"))],
        &["spec", "method-override"],
    );
    // Controls: refused; and forwarded where every method is judged alike.
    let c = known(
        "fixed: form _method on /item/x",
        Pipelined,
        vec![form("/item/x", Tok::User, "_method=DELETE")],
    );
    let i0 = id(&c, 0);
    let mut refused = access(&i0, "refused", 400, "GET", "/item/x", "/item/{name}", "any", None);
    refused["error"] = json!("method_override_refused");
    add(c, vec![answer(400, Some(&i0), false)], vec![refused], vec![], &[]);
    let c = known(
        "fixed: form _method on /public/x",
        Pipelined,
        vec![form("/public/x", Tok::None, "_method=DELETE")],
    );
    let i0 = id(&c, 0);
    add(
        c,
        vec![answer(200, Some(&i0), false)],
        vec![access(&i0, "forwarded", 200, "GET", "/public/x", "/**", "public", None)],
        vec![arrived(1, false, &form_head("/public/x", &i0, None, "_method=DELETE"))],
        &[],
    );

    // Two Content-Types passed (which one does the backend parse?).
    let c = known(
        "unfixed: two Content-Types",
        Pipelined,
        vec![Req::new("GET", b"/public/x")
            .header("Content-Type", "text/plain")
            .header("Content-Type", "application/json")],
    );
    let i0 = id(&c, 0);
    add(
        c,
        vec![answer(200, Some(&i0), false)],
        vec![access(&i0, "forwarded", 200, "GET", "/public/x", "/**", "public", None)],
        vec![arrived(
            1,
            false,
            &forwarded_head(
                "GET",
                "/public/x",
                &i0,
                None,
                "content-type: text/plain\r\ncontent-type: application/json\r\n",
            ),
        )],
        &["spec", "content-type"],
    );

    // HTTP/1.0 without Host forwarded.
    let c =
        known("unfixed: HTTP/1.0 without Host", Pipelined, vec![Req::new("GET", b"/public/x").http10(false)]);
    let i0 = id(&c, 0);
    add(
        c,
        vec![answer(200, Some(&i0), false)],
        vec![access(&i0, "forwarded", 200, "GET", "/public/x", "/**", "public", None)],
        vec![arrived(1, false, &forwarded_head("GET", "/public/x", &i0, None, ""))],
        &["spec"],
    );

    // URL rewrites and client addresses passed.
    let c = known(
        "unfixed: X-Original-URL",
        Pipelined,
        vec![Req::new("GET", b"/public/x")
            .header("X-Original-URL", "/admin/secret")
            .header("True-Client-IP", "1.2.3.4")],
    );
    let i0 = id(&c, 0);
    add(
        c,
        vec![answer(200, Some(&i0), false)],
        vec![access(&i0, "forwarded", 200, "GET", "/public/x", "/**", "public", None)],
        vec![arrived(
            1,
            false,
            &forwarded_head(
                "GET",
                "/public/x",
                &i0,
                None,
                "x-original-url: /admin/secret\r\ntrue-client-ip: 1.2.3.4\r\n",
            ),
        )],
        &["rewrite-header", "forwarding-header"],
    );

    // Garbage at the upstream (bytes that never formed a request) is reported too.
    let c = known("unfixed: garbage", Pipelined, vec![Req::new("GET", b"/public/x")]);
    let i0 = id(&c, 0);
    scenarios.push(Scenario {
        case: c,
        responses: vec![answer(200, Some(&i0), false)],
        end: End::Done,
        logs: vec![access(&i0, "forwarded", 200, "GET", "/public/x", "/**", "public", None)],
        arrivals: vec![arrived(1, false, &forwarded_head("GET", "/public/x", &i0, None, ""))],
        leftovers: vec![(1, b"llo\r\n0\r\n\r\n".to_vec())],
        trusted: false,
        want: &["garbage-at-upstream"],
    });

    // Behind a trusted proxy, the attacker's entries left of the client passed on.
    let c = known(
        "unfixed: a trusted peer's whole chain",
        Pipelined,
        vec![Req::new("GET", b"/public/x").header("X-Forwarded-For", "6.6.6.6, 1.2.3.4")],
    );
    let i0 = id(&c, 0);
    let head = |xff: &str| {
        format!(
            "GET /public/x HTTP/1.1\r\nhost: {HOST}\r\nx-request-id: {i0}\r\nx-forwarded-for: {xff}\r\n\
             x-forwarded-proto: http\r\nx-forwarded-host: {HOST}\r\n\r\n"
        )
        .into_bytes()
    };
    let log = access(&i0, "forwarded", 200, "GET", "/public/x", "/**", "public", None);
    for (label_xff, want) in [
        ("6.6.6.6, 1.2.3.4, 127.0.0.1", &["forwarding-header"][..]),
        ("127.0.0.1", &["forwarding-header"][..]),
        ("1.2.3.4, 127.0.0.1", &[][..]),
    ] {
        let mut case = c.clone();
        case.label = format!("{} (upstream reads {label_xff})", c.label);
        scenarios.push(Scenario {
            case,
            responses: vec![answer(200, Some(&i0), false)],
            end: End::Done,
            logs: vec![log.clone()],
            arrivals: vec![arrived(1, false, &head(label_xff))],
            leftovers: vec![],
            trusted: true,
            want,
        });
    }

    // One request per connection: the second of a kept-alive pair never answered.
    let c = known(
        "unfixed: closes after one request",
        Sequential,
        vec![Req::new("GET", b"/public/x"), Req::new("GET", b"/Items")],
    );
    let (i0, i1) = (id(&c, 0), id(&c, 1));
    let first = access(&i0, "forwarded", 200, "GET", "/public/x", "/**", "public", None);
    let first_arrival = arrived(1, false, &forwarded_head("GET", "/public/x", &i0, None, ""));
    scenarios.push(Scenario {
        case: c.clone(),
        responses: vec![answer(200, Some(&i0), false)],
        end: End::Closed,
        logs: vec![first.clone()],
        arrivals: vec![first_arrival.clone()],
        leftovers: vec![],
        trusted: false,
        want: &["closed-early"],
    });
    // Control: the same, answered.
    let mut control = c.clone();
    control.label = "fixed: kept alive".into();
    scenarios.push(Scenario {
        case: control,
        responses: vec![answer(200, Some(&i0), false), answer(200, Some(&i1), false)],
        end: End::Done,
        logs: vec![first.clone(), access(&i1, "forwarded", 200, "GET", "/Items", "/items", "optional", None)],
        arrivals: vec![
            first_arrival.clone(),
            arrived(1, false, &forwarded_head("GET", "/Items", &i1, None, "")),
        ],
        leftovers: vec![],
        trusted: false,
        want: &[],
    });
    // Control: pipelined, pingora drops what follows the first request and closes.
    let mut control = c.clone();
    control.label = "fixed: pipelined, closed after the first".into();
    control.mode = Pipelined;
    scenarios.push(Scenario {
        case: control,
        responses: vec![answer(200, Some(&i0), false)],
        end: End::Closed,
        logs: vec![first],
        arrivals: vec![first_arrival],
        leftovers: vec![],
        trusted: false,
        want: &[],
    });
    // A request the upstream answered, called an upstream failure because the
    // client pipelined the next one while it was proxied.
    let c = known(
        "unfixed: 502 for a pipelined request the upstream answered",
        Pipelined,
        vec![Req::new("GET", b"/public/x"), Req::new("GET", b"/items")],
    );
    let i0 = id(&c, 0);
    let mut failed = access(&i0, "upstream_error", 502, "GET", "/public/x", "/**", "public", None);
    failed["error"] = json!("upstream_unavailable");
    let upstream_got = arrived(1, false, &forwarded_head("GET", "/public/x", &i0, None, ""));
    scenarios.push(Scenario {
        case: c.clone(),
        responses: vec![answer(502, Some(&i0), false)],
        end: End::Closed,
        logs: vec![failed],
        arrivals: vec![upstream_got.clone()],
        leftovers: vec![],
        trusted: false,
        want: &["spec"],
    });
    // Control: given up on, the connection closed without an answer.
    let mut control = c.clone();
    control.label = "fixed: a pipelined request given up on".into();
    let given_up = access(&i0, "client_error", 0, "GET", "/public/x", "/**", "public", None);
    scenarios.push(Scenario {
        case: control,
        responses: vec![],
        end: End::Closed,
        logs: vec![given_up.clone()],
        arrivals: vec![upstream_got],
        leftovers: vec![],
        trusted: false,
        want: &[],
    });
    // A body cut short: fine where the gateway gave up, not where it says it forwarded.
    let c = known(
        "fixed: a body cut short by an exchange given up on",
        Pipelined,
        vec![Req::new("POST", b"/public/x").body(b"0123456789", false), Req::new("GET", b"/items")],
    );
    let i0 = id(&c, 0);
    let partial =
        [forwarded_head("POST", "/public/x", &i0, None, "content-length: 10\r\n"), b"0123".to_vec()].concat();
    let mut cut = cut_short(&partial).unwrap();
    cut.conn = 1;
    let given_up = access(&i0, "client_error", 0, "POST", "/public/x", "/**", "public", None);
    scenarios.push(Scenario {
        case: c.clone(),
        responses: vec![],
        end: End::Closed,
        logs: vec![given_up],
        arrivals: vec![cut.clone()],
        leftovers: vec![],
        trusted: false,
        want: &[],
    });
    let mut unfixed = c.clone();
    unfixed.label = "unfixed: a body cut short, logged forwarded".into();
    scenarios.push(Scenario {
        case: unfixed,
        responses: vec![answer(200, Some(&i0), false)],
        end: End::Closed,
        logs: vec![access(&i0, "forwarded", 200, "POST", "/public/x", "/**", "public", None)],
        arrivals: vec![cut],
        leftovers: vec![],
        trusted: false,
        want: &["framing"],
    });

    // A refusal with an unread body may close: not early.
    let c = known(
        "fixed: closes after a refused body",
        Sequential,
        vec![
            Req::new("DELETE", b"/item/x").token(Tok::User).framing(Framing::Cl),
            Req::new("GET", b"/public/x"),
        ],
    );
    let i0 = id(&c, 0);
    let mut refused = access(&i0, "refused", 403, "DELETE", "/item/x", "/item/{name}", "admin", None);
    refused["error"] = json!("admin_required");
    scenarios.push(Scenario {
        case: c,
        responses: vec![answer(403, Some(&i0), false)],
        end: End::Closed,
        logs: vec![refused],
        arrivals: vec![],
        leftovers: vec![],
        trusted: false,
        want: &[],
    });

    let mut problems = Vec::new();
    for s in scenarios {
        let exchange =
            Exchange { sent: s.case.reqs.len(), responses: s.responses, end: s.end, elapsed: Duration::ZERO };
        let mut logs: HashMap<String, Vec<Value>> = HashMap::new();
        for log in s.logs {
            logs.entry(log_str(&log, "request_id").to_owned()).or_default().push(log);
        }
        let observed = Observed { logs, arrivals: s.arrivals, leftovers: s.leftovers };
        let (cases, exchanges) = (std::slice::from_ref(&s.case), std::slice::from_ref(&exchange));
        let model = if s.trusted { &trusted_model } else { &model };
        let checker = Checker::new(model, cases, exchanges, observed);
        let found: HashSet<&str> = checker.failures.iter().map(|f| f.tag).collect();
        let missing: Vec<&&str> = s.want.iter().filter(|t| !found.contains(**t)).collect();
        if !missing.is_empty() || (s.want.is_empty() && !found.is_empty()) {
            let details: Vec<String> =
                checker.failures.iter().map(|f| format!("{}: {}", f.tag, f.detail)).collect();
            problems.push(format!(
                "{}: expected {:?}, missing {missing:?}; reported:\n    {}",
                s.case.label,
                s.want,
                details.join("\n    ")
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
