//! The wire of `graft lsp`: `Content-Length` framed JSON-RPC 2.0 messages.
//!
//! Everything a client sends is read with a bound and classified before the server
//! sees it, so no input can make the server allocate without limit, panic or stop:
//! a header line is at most [`MAX_HEADER_LINE`] bytes, a message at most
//! [`MAX_MESSAGE_BYTES`] (a larger one is answered with an error and its body is
//! skipped as it streams by, never buffered). A frame that is not UTF-8, not JSON or
//! not a JSON-RPC message becomes an [`Incoming::Invalid`] that the server answers
//! with the protocol's error code (`ParseError`, `InvalidRequest`) and an id of
//! `null`, as JSON-RPC 2.0 asks when the id cannot be known.

use lsp_server::{ErrorCode, Message, Notification, Request, RequestId};
use serde_json::{Map, Value};
use std::io::{self, BufRead, Read, Write};

/// The largest message graft lsp reads (64 MiB: sixty-four times the largest spec).
pub const MAX_MESSAGE_BYTES: u64 = 64 << 20;
/// The longest header line (`Content-Length: …`, `Content-Type: …`).
pub const MAX_HEADER_LINE: usize = 8 << 10;

/// One message from the client, classified.
#[derive(Debug)]
pub enum Incoming {
    Request(Request),
    Notification(Notification),
    /// A response to a request of the server's (graft lsp sends none): ignored.
    Response,
    /// Not a message the server can act on: answer with this error, `id` null unless
    /// the request's id could be read.
    Invalid {
        id: Option<RequestId>,
        code: ErrorCode,
        message: String,
    },
}

impl Incoming {
    fn invalid(code: ErrorCode, message: String) -> Incoming {
        Incoming::Invalid { id: None, code, message }
    }
}

/// Reads framed messages from a byte stream.
pub struct Reader<R> {
    input: R,
    /// Bytes of an oversized message still to skip before the next header.
    skip: u64,
}

enum Line {
    Text(Vec<u8>),
    TooLong,
}

impl<R: BufRead> Reader<R> {
    pub fn new(input: R) -> Reader<R> {
        Reader { input, skip: 0 }
    }

    /// The next message, or `None` when the stream ends.
    pub fn next_message(&mut self) -> io::Result<Option<Incoming>> {
        if self.skip > 0 {
            let want = std::mem::take(&mut self.skip);
            if io::copy(&mut (&mut self.input).take(want), &mut io::sink())? < want {
                return Ok(None);
            }
        }
        let mut length: Option<Result<u64, String>> = None;
        let mut bad_header = None;
        let mut headers = 0usize;
        loop {
            let line = match self.line()? {
                None => return Ok(None),
                Some(Line::TooLong) => {
                    bad_header.get_or_insert(format!("a header line longer than {MAX_HEADER_LINE} bytes"));
                    headers += 1;
                    continue;
                }
                Some(Line::Text(l)) => l,
            };
            let line = line.strip_suffix(b"\n").unwrap_or(&line);
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if line.is_empty() {
                if headers == 0 {
                    continue; // a stray blank line between messages
                }
                break;
            }
            headers += 1;
            let text = String::from_utf8_lossy(line);
            match text.split_once(':') {
                Some((name, value)) if name.trim().eq_ignore_ascii_case("content-length") => {
                    let value = value.trim();
                    length = Some(match value.parse::<u64>() {
                        Ok(n) => Ok(n),
                        // Digits beyond u64: a length no message can have.
                        Err(_) if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) => Ok(u64::MAX),
                        Err(_) => Err(format!("Content-Length `{value}` is not a byte count")),
                    });
                }
                Some(_) => {}
                None => {
                    bad_header.get_or_insert(format!("malformed header line `{}`", clip(&text)));
                }
            }
        }
        let len = match length {
            None => {
                let why = bad_header.unwrap_or_else(|| "no Content-Length header".to_string());
                return Ok(Some(Incoming::invalid(ErrorCode::ParseError, format!("message without a length: {why}"))));
            }
            Some(Err(why)) => return Ok(Some(Incoming::invalid(ErrorCode::ParseError, why))),
            Some(Ok(n)) => n,
        };
        if len > MAX_MESSAGE_BYTES {
            self.skip = len;
            return Ok(Some(Incoming::invalid(
                ErrorCode::InvalidRequest,
                format!(
                    "a message of {len} bytes is over graft lsp's limit of {MAX_MESSAGE_BYTES} bytes (64 MiB); it is skipped"
                ),
            )));
        }
        let mut body = Vec::new();
        (&mut self.input).take(len).read_to_end(&mut body)?;
        if (body.len() as u64) < len {
            return Ok(None);
        }
        Ok(Some(classify(&body)))
    }

    /// One header line (with its line break), at most [`MAX_HEADER_LINE`] bytes kept.
    fn line(&mut self) -> io::Result<Option<Line>> {
        let mut line = Vec::new();
        let n = (&mut self.input).take(MAX_HEADER_LINE as u64).read_until(b'\n', &mut line)?;
        if n == 0 {
            return Ok(None);
        }
        if line.ends_with(b"\n") {
            return Ok(Some(Line::Text(line)));
        }
        if line.len() < MAX_HEADER_LINE {
            return Ok(None); // the stream ended inside a header
        }
        // Skip the rest of the line, a buffer at a time.
        loop {
            let buf = self.input.fill_buf()?;
            if buf.is_empty() {
                return Ok(None);
            }
            match buf.iter().position(|&b| b == b'\n') {
                Some(i) => {
                    self.input.consume(i + 1);
                    return Ok(Some(Line::TooLong));
                }
                None => {
                    let n = buf.len();
                    self.input.consume(n);
                }
            }
        }
    }
}

fn clip(s: &str) -> String {
    match s.char_indices().nth(60) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

/// What a message body is: a request, a notification, a response, or an error to
/// answer.
pub fn classify(body: &[u8]) -> Incoming {
    let text = match std::str::from_utf8(body) {
        Ok(t) => t,
        Err(e) => {
            return Incoming::invalid(
                ErrorCode::ParseError,
                format!("the message is not UTF-8 (invalid byte at offset {})", e.valid_up_to()),
            )
        }
    };
    let value: Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(e) => return Incoming::invalid(ErrorCode::ParseError, format!("the message is not JSON: {e}")),
    };
    let Value::Object(mut obj) = value else {
        let found = match value {
            Value::Array(_) => "an array (batches are not part of LSP)",
            Value::String(_) => "a string",
            Value::Number(_) => "a number",
            Value::Bool(_) => "a boolean",
            _ => "null",
        };
        return Incoming::invalid(
            ErrorCode::InvalidRequest,
            format!("a message is a JSON object with a `method` (or a response's `id`), found {found}"),
        );
    };
    let id = match obj.remove("id") {
        None => None,
        Some(v) => match request_id(&v) {
            Some(id) => Some(id),
            None if obj.contains_key("method") => {
                return Incoming::invalid(
                    ErrorCode::InvalidRequest,
                    format!("request id {} is not an integer (32-bit) or a string", clip(&v.to_string())),
                )
            }
            None => return Incoming::Response,
        },
    };
    let params = obj.remove("params").unwrap_or(Value::Null);
    match obj.remove("method") {
        Some(Value::String(method)) => match id {
            Some(id) => Incoming::Request(Request { id, method, params }),
            None => Incoming::Notification(Notification { method, params }),
        },
        Some(other) => Incoming::Invalid {
            id,
            code: ErrorCode::InvalidRequest,
            message: format!("`method` must be a string, found {}", clip(&other.to_string())),
        },
        None if id.is_some() && (obj.contains_key("result") || obj.contains_key("error")) => Incoming::Response,
        None => Incoming::Invalid {
            id,
            code: ErrorCode::InvalidRequest,
            message: "a message without a `method` that is not a response".to_string(),
        },
    }
}

/// A JSON-RPC id as LSP allows it: an integer in 32 bits or a string.
fn request_id(v: &Value) -> Option<RequestId> {
    match v {
        Value::Number(n) => n.as_i64().and_then(|i| i32::try_from(i).ok()).map(RequestId::from),
        Value::String(s) => Some(RequestId::from(s.clone())),
        _ => None,
    }
}

/// Write one message with its header and flush.
pub fn write(out: &mut dyn Write, msg: &Message) -> io::Result<()> {
    let mut v = serde_json::to_value(msg).map_err(io::Error::other)?;
    if let Value::Object(o) = &mut v {
        o.insert("jsonrpc".into(), "2.0".into());
    }
    write_value(out, &v)
}

/// An error answer to a message whose id is unknown (`id: null`) or known.
pub fn write_error(out: &mut dyn Write, id: Option<&RequestId>, code: ErrorCode, message: &str) -> io::Result<()> {
    let mut o = Map::new();
    o.insert("jsonrpc".into(), "2.0".into());
    o.insert("id".into(), id.map_or(Value::Null, |i| serde_json::to_value(i).unwrap_or(Value::Null)));
    o.insert("error".into(), serde_json::json!({ "code": code as i32, "message": message }));
    write_value(out, &Value::Object(o))
}

fn write_value(out: &mut dyn Write, v: &Value) -> io::Result<()> {
    let text = v.to_string();
    write!(out, "Content-Length: {}\r\n\r\n", text.len())?;
    out.write_all(text.as_bytes())?;
    out.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(input: &[u8]) -> Vec<Incoming> {
        let mut r = Reader::new(input);
        let mut out = Vec::new();
        while let Some(m) = r.next_message().unwrap() {
            out.push(m);
        }
        out
    }

    fn frame(body: &str) -> Vec<u8> {
        format!("Content-Length: {}\r\n\r\n{body}", body.len()).into_bytes()
    }

    fn code(m: &Incoming) -> i32 {
        match m {
            Incoming::Invalid { code, .. } => *code as i32,
            other => panic!("not an error: {other:?}"),
        }
    }

    #[test]
    fn huge_lengths_are_refused_without_allocating() {
        let mut input = b"Content-Length: 18446744073709551615\r\n\r\n".to_vec();
        input.extend(b"{}");
        let got = frames(&input);
        assert_eq!(got.len(), 1);
        let Incoming::Invalid { message, .. } = &got[0] else { panic!() };
        assert!(message.contains("18446744073709551615 bytes") && message.contains("limit of 67108864"), "{message}");
        // Beyond u64, and a length just over the limit with the body present: the
        // next message is read.
        let mut input = b"Content-Length: 99999999999999999999999\r\n\r\n".to_vec();
        assert_eq!(frames(&input).len(), 1);
        input = format!("Content-Length: {}\r\n\r\n", MAX_MESSAGE_BYTES + 1).into_bytes();
        input.resize(input.len() + MAX_MESSAGE_BYTES as usize + 1, b' ');
        input.extend(frame(r#"{"jsonrpc":"2.0","id":7,"method":"x"}"#));
        let got = frames(&input);
        assert_eq!(got.len(), 2);
        assert!(matches!(&got[1], Incoming::Request(r) if r.id == RequestId::from(7)), "{:?}", got[1]);
    }

    #[test]
    fn bad_frames_are_errors_and_the_stream_goes_on() {
        let mut input = Vec::new();
        input.extend(frame("{not json"));
        input.extend(b"Content-Length: 3\r\n\r\n\xff\xfe\xfd");
        input.extend(frame("[1, 2]"));
        input.extend(frame(r#"{"jsonrpc":"2.0","id":1.5,"method":"textDocument/hover"}"#));
        input.extend(frame(r#"{"jsonrpc":"2.0","id":4294967296,"method":"x"}"#));
        input.extend(frame(r#"{"jsonrpc":"2.0","method":7}"#));
        input.extend(b"Content-Length: twelve\r\n\r\n");
        input.extend(b"X-Junk\r\nContent-Length: 2\r\n\r\n{}");
        input.extend(vec![b'a'; MAX_HEADER_LINE * 3]);
        input.extend(b"\r\n\r\n");
        input.extend(frame(r#"{"jsonrpc":"2.0","id":"a","result":null}"#));
        input.extend(frame(r#"{"jsonrpc":"2.0","method":"exit"}"#));
        let got = frames(&input);
        let codes: Vec<i32> = got[..9].iter().map(code).collect();
        assert_eq!(codes, [-32700, -32700, -32600, -32600, -32600, -32600, -32700, -32600, -32700]);
        assert!(matches!(got[9], Incoming::Response));
        assert!(matches!(&got[10], Incoming::Notification(n) if n.method == "exit"));
        assert_eq!(got.len(), 11);
    }

    #[test]
    fn a_stream_cut_inside_a_message_ends_it() {
        assert!(frames(b"Content-Length: 10\r\n\r\n{}").is_empty());
        assert!(frames(b"Content-Len").is_empty());
    }
}
