//! The REST API driven with curl, as a partner's script would: one curl per request, and a
//! long-running `curl -N` for the Server-Sent Events stream.

use std::{
    io::{BufRead as _, BufReader, Write as _},
    net::SocketAddr,
    process::{Child, Command, Stdio},
    sync::mpsc::{self, Receiver},
    time::{Duration, Instant},
};

use serde_json::Value;

use super::process::tool;

const CURL_HINT: &str = "install curl (apt-get install curl)";
/// Upper bound of one request; a healthy one takes milliseconds.
const REQUEST_TIMEOUT_SECS: &str = "30";

#[derive(Debug, Clone)]
pub(crate) struct RestClient {
    base: String,
}

/// One HTTP answer.
#[derive(Debug)]
pub(crate) struct Reply {
    pub(crate) status: u16,
    headers: Vec<(String, String)>,
    pub(crate) body: String,
}

impl Reply {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub(crate) fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {} {}", self.status, self.body))
    }

    /// Asserts a 2xx `status` and returns the JSON body.
    pub(crate) fn ok(&self, status: u16) -> Value {
        assert_eq!(self.status, status, "{}", self.body);
        self.json()
    }

    /// Asserts an RFC 9457 problem with `status`, naming `field` under `errors` when given, and
    /// returns it.
    pub(crate) fn problem(&self, status: u16, field: Option<&str>) -> Value {
        assert_eq!(self.status, status, "{}", self.body);
        assert_eq!(
            self.header("content-type"),
            Some("application/problem+json"),
            "{self:?}"
        );
        let problem = self.json();
        assert_eq!(problem["status"], status, "{problem}");
        assert!(
            problem["type"]
                .as_str()
                .is_some_and(|t| t.starts_with("https://")),
            "{problem}"
        );
        assert!(problem["title"].is_string(), "{problem}");
        assert!(problem["instance"].is_string(), "{problem}");
        assert!(problem["traceId"].is_string(), "{problem}");
        if let Some(field) = field {
            assert!(
                problem["errors"][field][0].is_string(),
                "expected a message for {field}: {problem}"
            );
        }
        problem
    }
}

impl RestClient {
    pub(crate) fn new(addr: SocketAddr) -> Self {
        Self {
            base: format!("http://{addr}"),
        }
    }

    pub(crate) fn get(&self, path: &str, token: Option<&str>) -> Reply {
        self.send("GET", path, token, &[], None)
    }

    pub(crate) fn post_json(&self, path: &str, token: Option<&str>, body: &Value) -> Reply {
        self.send(
            "POST",
            path,
            token,
            &[("content-type", "application/json")],
            Some(body.to_string().as_bytes()),
        )
    }

    pub(crate) fn delete(&self, path: &str, token: Option<&str>) -> Reply {
        self.send("DELETE", path, token, &[], None)
    }

    /// Any request: `headers` as given, `body` sent as is.
    pub(crate) fn send(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> Reply {
        let mut command = curl(&format!("{}{path}", self.base), token, headers);
        command.args(["-i", "-X", method, "--max-time", REQUEST_TIMEOUT_SECS]);
        if body.is_some() {
            command.args(["--data-binary", "@-"]);
        }
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("running curl: {e}"));
        let mut stdin = child.stdin.take().expect("piped stdin");
        if let Some(body) = body {
            // The server may answer (413) before reading all of it.
            drop(stdin.write_all(body));
        }
        drop(stdin);
        let output = child.wait_with_output().expect("curl runs");
        assert!(
            output.status.success(),
            "curl {method} {path} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        parse(&String::from_utf8_lossy(&output.stdout))
            .unwrap_or_else(|| panic!("malformed answer to {method} {path}"))
    }

    /// Opens `GET path` as an event stream.
    pub(crate) fn events(&self, path: &str, token: &str, headers: &[(&str, &str)]) -> EventStream {
        let mut command = curl(&format!("{}{path}", self.base), Some(token), headers);
        command.args(["-i", "-N"]);
        EventStream::spawn(command)
    }
}

fn curl(url: &str, token: Option<&str>, headers: &[(&str, &str)]) -> Command {
    let mut command = Command::new(tool("curl", CURL_HINT));
    // No `Expect: 100-continue`: a large body is sent at once, as most clients do.
    command.args(["-sS", "-H", "Expect:"]);
    if let Some(token) = token {
        command.args(["-H", &format!("Authorization: Bearer {token}")]);
    }
    for (name, value) in headers {
        command.args(["-H", &format!("{name}: {value}")]);
    }
    command.arg(url);
    command
}

/// `curl -i` output: status line, headers, blank line, body (after any `100 Continue`).
fn parse(raw: &str) -> Option<Reply> {
    let mut rest = raw;
    loop {
        let (head, body) = rest.split_once("\r\n\r\n")?;
        let mut lines = head.lines();
        let status: u16 = lines.next()?.split_whitespace().nth(1)?.parse().ok()?;
        if status == 100 {
            rest = body;
            continue;
        }
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
            .collect();
        return Some(Reply {
            status,
            headers,
            body: body.to_owned(),
        });
    }
}

/// What the stream has sent: its response head, then events and comments.
#[derive(Debug)]
enum Item {
    Head {
        status: u16,
        content_type: String,
    },
    Event {
        event: String,
        id: String,
        data: String,
    },
    Comment,
}

/// A running `curl -N` on an event stream, killed on drop.
#[derive(Debug)]
pub(crate) struct EventStream {
    child: Child,
    items: Receiver<Item>,
    head: Option<(u16, String)>,
    received: usize,
    /// `(event, id, data)` of every event so far.
    events: Vec<(String, String, Value)>,
}

impl EventStream {
    fn spawn(mut command: Command) -> Self {
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("running curl: {e}"));
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, items) = mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines().map_while(Result::ok);
            let Some(status_line) = lines.next() else {
                return;
            };
            let status = status_line
                .split_whitespace()
                .nth(1)
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            let mut content_type = String::new();
            for line in lines.by_ref() {
                if line.is_empty() {
                    break;
                }
                if let Some((name, value)) = line.split_once(':')
                    && name.eq_ignore_ascii_case("content-type")
                {
                    content_type = value.trim().to_owned();
                }
            }
            if tx
                .send(Item::Head {
                    status,
                    content_type,
                })
                .is_err()
            {
                return;
            }
            let (mut event, mut id, mut data) = (String::new(), String::new(), String::new());
            for line in lines {
                let item = if line.is_empty() {
                    if data.is_empty() && event.is_empty() {
                        continue;
                    }
                    Item::Event {
                        event: std::mem::take(&mut event),
                        id: std::mem::take(&mut id),
                        data: std::mem::take(&mut data),
                    }
                } else if line.starts_with(':') {
                    Item::Comment
                } else {
                    match line.split_once(':') {
                        Some(("event", v)) => event = v.trim().to_owned(),
                        Some(("id", v)) => id = v.trim().to_owned(),
                        Some(("data", v)) => data.push_str(v.trim_start()),
                        _ => {}
                    }
                    continue;
                };
                if tx.send(item).is_err() {
                    return;
                }
            }
        });
        Self {
            child,
            items,
            head: None,
            received: 0,
            events: Vec::new(),
        }
    }

    /// The status and content type of the answer.
    pub(crate) fn head(&mut self, within: Duration) -> (u16, String) {
        let until = Instant::now() + within;
        while self.head.is_none() {
            self.receive(until, "the response head");
        }
        self.head.clone().unwrap_or_default()
    }

    /// Waits for the first event or comment: the stream is then subscribed upstream.
    pub(crate) fn wait_until_open(&mut self, within: Duration) {
        let until = Instant::now() + within;
        let (status, content_type) = self.head(within);
        assert_eq!(status, 200, "the event stream was refused");
        assert!(
            content_type.starts_with("text/event-stream"),
            "{content_type}"
        );
        while self.received == 0 {
            self.receive(until, "the first event or comment");
        }
    }

    /// Reads until a status event for `cid` with `status` arrived (or already had); returns its
    /// data.
    pub(crate) fn wait_for(&mut self, cid: &str, status: &str, within: Duration) -> Value {
        let until = Instant::now() + within;
        loop {
            if let Some((_, _, data)) = self
                .events
                .iter()
                .find(|(_, _, d)| d["correlationId"] == cid && d["status"] == status)
            {
                return data.clone();
            }
            self.receive(until, &format!("{status} for {cid}"));
        }
    }

    /// Reads until `count` more comments (heartbeats) arrived: time has passed on the stream.
    pub(crate) fn wait_for_comments(&mut self, count: usize, within: Duration) {
        let until = Instant::now() + within;
        let target = self.received + count;
        while self.received < target {
            self.receive(until, "heartbeats");
        }
    }

    /// The statuses received for `cid`, in order.
    pub(crate) fn statuses_of(&self, cid: &str) -> Vec<String> {
        self.events
            .iter()
            .filter(|(_, _, d)| d["correlationId"] == cid)
            .map(|(_, _, d)| d["status"].as_str().unwrap_or_default().to_owned())
            .collect()
    }

    /// The ids of the events received so far.
    pub(crate) fn ids(&self) -> Vec<String> {
        self.events.iter().map(|(_, id, _)| id.clone()).collect()
    }

    /// Every status event received so far.
    pub(crate) fn status_events(&self) -> Vec<Value> {
        self.events
            .iter()
            .filter(|(event, _, _)| event == "status")
            .map(|(_, _, d)| d.clone())
            .collect()
    }

    fn receive(&mut self, until: Instant, awaited: &str) {
        let item = self
            .items
            .recv_timeout(until.saturating_duration_since(Instant::now()))
            .unwrap_or_else(|_| {
                panic!(
                    "no {awaited} on the event stream in time; received {:?}",
                    self.events
                )
            });
        match item {
            Item::Head {
                status,
                content_type,
            } => self.head = Some((status, content_type)),
            Item::Event { event, id, data } => {
                let data = serde_json::from_str(&data).unwrap_or(Value::String(data));
                self.events.push((event, id, data));
                self.received += 1;
            }
            Item::Comment => self.received += 1,
        }
    }
}

impl Drop for EventStream {
    fn drop(&mut self) {
        drop(self.child.kill());
        drop(self.child.wait());
    }
}
