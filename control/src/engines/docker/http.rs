//! The little HTTP/1.1 Docker's plugin protocol needs, on a Unix socket: `POST /Method`
//! with a JSON body of `Content-Length` bytes in, a JSON answer out, one request per
//! connection (`Connection: close`, so Docker's client never reuses a connection the
//! plugin is closing). Every request is hostile until parsed: the head is at most
//! [`MAX_HEAD`] bytes, the body [`MAX_BODY`], the whole request must arrive within
//! [`REQUEST_TIME`], and at most [`MAX_CONNECTIONS`] are served at once; anything else
//! gets one JSON `Err` and the connection is closed.

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// The longest request line and headers.
pub const MAX_HEAD: usize = 8 << 10;
/// The longest body (Docker's requests are a few hundred bytes).
pub const MAX_BODY: usize = 1 << 20;
/// How long a whole request may take to arrive, and an answer to be taken.
pub const REQUEST_TIME: Duration = Duration::from_secs(10);
/// Connections served at once; more are refused at once.
pub const MAX_CONNECTIONS: usize = 64;

/// One request: its method, path and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub body: Vec<u8>,
}

/// One answer: the status and the JSON body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
}

impl Response {
    /// `{"Err": msg}` with `status`: how Docker's plugin client reads a failure.
    pub fn err(status: u16, msg: &str) -> Response {
        let body = serde_json::json!({ "Err": msg.replace(['\n', '\r'], " ") });
        Response {
            status,
            body: body.to_string().into_bytes(),
        }
    }
}

/// Why a request was not understood.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("the request line is not `METHOD /PATH HTTP/1.x`")]
    RequestLine,
    #[error("a header line is not `Name: value`")]
    Header,
    #[error("the request head is over {MAX_HEAD} bytes")]
    HeadTooLarge,
    #[error("the body is over {MAX_BODY} bytes")]
    BodyTooLarge,
    #[error("chunked bodies are not accepted: send Content-Length")]
    Chunked,
    #[error("Content-Length {0:?} is not a number")]
    BadLength(String),
    #[error("the request ended before its body did")]
    Truncated,
    #[error("the request did not arrive within {}s: {source}", REQUEST_TIME.as_secs())]
    Io {
        #[from]
        source: std::io::Error,
    },
}

impl HttpError {
    /// The status a client is told.
    pub fn status(&self) -> u16 {
        match self {
            HttpError::HeadTooLarge => 431,
            HttpError::BodyTooLarge => 413,
            HttpError::Chunked => 411,
            HttpError::Io { .. } => 408,
            _ => 400,
        }
    }
}

/// Reads from `s` until `deadline`, each read given the time left.
fn read_some(s: &mut UnixStream, buf: &mut [u8], deadline: Instant) -> Result<usize, HttpError> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(std::io::Error::from(std::io::ErrorKind::TimedOut).into());
    }
    s.set_read_timeout(Some(left))?;
    Ok(s.read(buf)?)
}

/// Reads one request from `s`, all of it within [`REQUEST_TIME`].
pub fn read_request(s: &mut UnixStream) -> Result<Request, HttpError> {
    let deadline = Instant::now() + REQUEST_TIME;
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = find(&buf, b"\r\n\r\n") {
            break i;
        }
        if buf.len() > MAX_HEAD {
            return Err(HttpError::HeadTooLarge);
        }
        let n = read_some(s, &mut chunk, deadline)?;
        if n == 0 {
            return Err(HttpError::Truncated);
        }
        buf.extend_from_slice(chunk.get(..n).unwrap_or_default());
    };
    let (head, rest) = buf.split_at(head_end);
    if head.len() > MAX_HEAD {
        return Err(HttpError::HeadTooLarge);
    }
    let (method, path, length) = parse_head(head)?;
    let mut body = rest.get(4..).unwrap_or_default().to_vec();
    if length > MAX_BODY {
        return Err(HttpError::BodyTooLarge);
    }
    while body.len() < length {
        let n = read_some(s, &mut chunk, deadline)?;
        if n == 0 {
            return Err(HttpError::Truncated);
        }
        body.extend_from_slice(chunk.get(..n).unwrap_or_default());
    }
    body.truncate(length);
    Ok(Request { method, path, body })
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// The method, path and body length of a request head.
fn parse_head(head: &[u8]) -> Result<(String, String, usize), HttpError> {
    let text = std::str::from_utf8(head).map_err(|_| HttpError::RequestLine)?;
    let mut lines = text.split("\r\n");
    let line = lines.next().unwrap_or_default();
    let (method, path) = match line.split(' ').collect::<Vec<_>>().as_slice() {
        [m, p, v] if v.starts_with("HTTP/1.") && p.starts_with('/') => {
            (m.to_string(), p.to_string())
        }
        _ => return Err(HttpError::RequestLine),
    };
    let mut length = 0;
    for h in lines {
        let (name, value) = h.split_once(':').ok_or(HttpError::Header)?;
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            length = value
                .parse()
                .map_err(|_| HttpError::BadLength(value.to_string()))?;
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(HttpError::Chunked);
        }
    }
    Ok((method, path, length))
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        411 => "Length Required",
        413 => "Payload Too Large",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "Internal Server Error",
    }
}

/// Writes `r` as the connection's only answer.
pub fn write_response(s: &mut impl Write, r: &Response) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: application/vnd.docker.plugins.v1+json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        r.status,
        reason(r.status),
        r.body.len()
    );
    s.write_all(head.as_bytes())?;
    s.write_all(&r.body)?;
    s.flush()
}

/// Serves one connection: reads its request, answers it through `handler`.
fn serve_one(mut s: UnixStream, handler: &(dyn Fn(&Request) -> Response + Send + Sync)) {
    let r = match read_request(&mut s) {
        Ok(req) if req.method != "POST" => Response::err(405, "plugin calls are POST requests"),
        Ok(req) => handler(&req),
        Err(e) => Response::err(e.status(), &e.to_string()),
    };
    let _ = s.set_write_timeout(Some(REQUEST_TIME));
    let _ = write_response(&mut s, &r);
}

fn transient(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM | libc::ECONNABORTED)
    )
}

/// Accepts connections on `listener` for ever, each on a thread of its own (at most
/// [`MAX_CONNECTIONS`] at once).
pub fn serve(
    listener: UnixListener,
    handler: Arc<dyn Fn(&Request) -> Response + Send + Sync>,
) -> std::io::Result<()> {
    let live = Arc::new(AtomicUsize::new(0));
    loop {
        let (mut s, _) = match listener.accept() {
            Ok(c) => c,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            // Out of descriptors, or a client gone before it was taken: wait, go on.
            Err(e) if transient(&e) => {
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
            Err(e) => return Err(e),
        };
        if live.fetch_add(1, Ordering::AcqRel) >= MAX_CONNECTIONS {
            live.fetch_sub(1, Ordering::AcqRel);
            let _ = s.set_write_timeout(Some(Duration::from_secs(1)));
            let _ = write_response(&mut s, &Response::err(503, "too many connections: retry"));
            continue;
        }
        let (h, l) = (handler.clone(), live.clone());
        let spawned = std::thread::Builder::new()
            .name("vswitch-docker".into())
            .spawn(move || {
                serve_one(s, h.as_ref());
                l.fetch_sub(1, Ordering::AcqRel);
            });
        if spawned.is_err() {
            live.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exchange(raw: &[u8]) -> Result<Request, HttpError> {
        let (mut a, mut b) = UnixStream::pair().unwrap();
        a.write_all(raw).unwrap();
        a.shutdown(std::net::Shutdown::Write).unwrap();
        read_request(&mut b)
    }

    #[test]
    fn a_plugin_call_is_read_whole() {
        let body = br#"{"NetworkID":"abc"}"#;
        let raw = format!(
            "POST /NetworkDriver.DeleteNetwork HTTP/1.1\r\nHost: \r\nContent-Length: {}\r\nAccept: application/vnd.docker.plugins.v1.2+json\r\n\r\n",
            body.len()
        );
        let mut all = raw.into_bytes();
        all.extend_from_slice(body);
        let r = exchange(&all).unwrap();
        assert_eq!(r.method, "POST");
        assert_eq!(r.path, "/NetworkDriver.DeleteNetwork");
        assert_eq!(r.body, body);
        let r = exchange(b"POST /Plugin.Activate HTTP/1.1\r\nContent-Length: 0\r\n\r\n").unwrap();
        assert!(r.body.is_empty());
    }

    #[test]
    fn hostile_requests_get_one_clear_refusal() {
        let cases: [(&[u8], u16); 6] = [
            (b"GARBAGE\r\n\r\n", 400),
            (
                b"POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
                411,
            ),
            (b"POST /x HTTP/1.1\r\nContent-Length: 99999999\r\n\r\n", 413),
            (b"POST /x HTTP/1.1\r\nContent-Length: ten\r\n\r\n", 400),
            (b"POST /x HTTP/1.1\r\nContent-Length: 10\r\n\r\n{}", 400),
            (b"POST /x HTTP/1.1\r\nno colon here\r\n\r\n", 400),
        ];
        for (raw, status) in cases {
            let e = exchange(raw).unwrap_err();
            assert_eq!(e.status(), status, "{e}");
        }
        let mut huge = b"POST /x HTTP/1.1\r\n".to_vec();
        huge.extend(std::iter::repeat_n(b'a', MAX_HEAD + 10));
        assert_eq!(exchange(&huge).unwrap_err().status(), 431);
    }

    #[test]
    fn answers_close_the_connection_and_errors_are_one_json_line() {
        let mut out = Vec::new();
        write_response(&mut out, &Response::err(500, "network \"x\"\nnot found")).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("HTTP/1.1 500 Internal Server Error\r\n"));
        assert!(text.contains("Connection: close\r\n"));
        let body = text.split("\r\n\r\n").nth(1).unwrap();
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["Err"], "network \"x\" not found");
    }

    #[test]
    fn a_slow_client_is_cut_off() {
        // Nothing arrives: the read gives up (the test uses the real deadline's error path
        // through a socket whose peer stays open but silent).
        let (_a, mut b) = UnixStream::pair().unwrap();
        b.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        let mut buf = [0u8; 8];
        let deadline = Instant::now() + Duration::from_millis(50);
        assert!(read_some(&mut b, &mut buf, deadline).is_err());
        let past = Instant::now();
        assert!(matches!(
            read_some(&mut b, &mut buf, past),
            Err(HttpError::Io { .. })
        ));
    }
}
