//! The real clients: `grpcurl` (gRPC over HTTP/2, schema from server reflection) and `buf curl`
//! (grpc-web over HTTP/1.1, schema from the repository's `proto/`). Both print proto3 JSON
//! (camelCase names, enums as strings, int64 as strings), so the tests read either the same way.

use std::{
    io::{BufReader, Read as _},
    net::SocketAddr,
    path::PathBuf,
    process::{Child, ChildStderr, Command, Output, Stdio},
    sync::mpsc::{self, Receiver, RecvTimeoutError},
    thread::JoinHandle,
    time::{Duration, Instant},
};

use serde_json::Value;

use super::process::tool;

/// Deadline of one unary call, enforced by the client itself.
const CALL_TIMEOUT_SECS: u64 = 30;

pub(crate) const LIST_PRODUCTS: &str = "contoso.catalog.v1.CatalogService/ListProducts";
pub(crate) const GET_PRODUCT: &str = "contoso.catalog.v1.CatalogService/GetProduct";
pub(crate) const PLACE_ORDER: &str = "contoso.orders.v1.OrderService/PlaceOrder";
pub(crate) const GET_ORDER_STATUS: &str = "contoso.orders.v1.OrderService/GetOrderStatus";
pub(crate) const LIST_ORDERS: &str = "contoso.orders.v1.OrderService/ListOrders";
pub(crate) const GET_ORDER: &str = "contoso.orders.v1.OrderService/GetOrder";
pub(crate) const DELETE_ORDER: &str = "contoso.orders.v1.OrderService/DeleteOrder";
pub(crate) const WATCH_ORDER_STATUS: &str = "contoso.notify.v1.OrderStatusService/WatchOrderStatus";

const TOOLS_HINT: &str = "run `bash scripts/install-test-tools` and put .tools/venv/bin and \
                          tools/node_modules/.bin on PATH (scripts/test does both)";

/// The gRPC status codes the tests tell apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Code {
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unauthenticated,
    Unavailable,
    Other(String),
}

impl Code {
    /// Reads grpcurl's `InvalidArgument` and buf curl's `invalid_argument` alike.
    fn parse(name: &str) -> Self {
        match name.replace('_', "").to_ascii_lowercase().as_str() {
            "invalidargument" => Self::InvalidArgument,
            "notfound" => Self::NotFound,
            "permissiondenied" => Self::PermissionDenied,
            "unauthenticated" => Self::Unauthenticated,
            "unavailable" => Self::Unavailable,
            _ => Self::Other(name.to_owned()),
        }
    }
}

/// A call that ended with a non-OK status (or a client that could not make the call at all).
#[derive(Debug)]
pub(crate) struct RpcError {
    pub(crate) code: Code,
    pub(crate) message: String,
    /// Everything the client printed, for assertion messages.
    pub(crate) output: String,
}

/// One endpoint, reached through one of the two real clients.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Client {
    /// `grpcurl -plaintext` against a gRPC port.
    Grpc(SocketAddr),
    /// `buf curl --protocol grpcweb` against the gateway.
    GrpcWeb(SocketAddr),
}

impl Client {
    /// A unary call; `Ok` holds the response message.
    pub(crate) fn call(
        &self,
        method: &str,
        token: Option<&str>,
        request: Value,
    ) -> Result<Value, RpcError> {
        let mut command = self.command(method, token, &request, Some(CALL_TIMEOUT_SECS));
        let output = command
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("running {command:?}: {e}"));
        if output.status.success() {
            let stdout = String::from_utf8_lossy(&output.stdout);
            // An empty message prints as `{}`; some clients print nothing for it.
            let text = if stdout.trim().is_empty() {
                "{}"
            } else {
                stdout.trim()
            };
            return Ok(serde_json::from_str(text).unwrap_or_else(|e| {
                panic!("{method} printed something other than JSON ({e}): {text}")
            }));
        }
        Err(self.error(&output))
    }

    /// A unary call that must succeed.
    pub(crate) fn ok(&self, method: &str, token: Option<&str>, request: Value) -> Value {
        self.call(method, token, request).unwrap_or_else(|e| {
            panic!(
                "{method} via {self:?} failed: {:?} {}\n{}",
                e.code, e.message, e.output
            )
        })
    }

    /// A unary call that must fail; returns the error.
    pub(crate) fn err(&self, method: &str, token: Option<&str>, request: Value) -> RpcError {
        match self.call(method, token, request) {
            Ok(response) => {
                panic!("{method} via {self:?} succeeded but should have failed: {response}")
            }
            Err(e) => e,
        }
    }

    /// Opens `WatchOrderStatus` for the caller, naming `correlation_ids` for the snapshot.
    pub(crate) fn watch(&self, token: &str, correlation_ids: &[&str]) -> StatusStream {
        let request = serde_json::json!({ "correlationIds": correlation_ids });
        StatusStream::spawn(
            self.command(WATCH_ORDER_STATUS, Some(token), &request, None),
            *self,
        )
    }

    fn command(
        &self,
        method: &str,
        token: Option<&str>,
        request: &Value,
        timeout_secs: Option<u64>,
    ) -> Command {
        let auth = token.map(|t| format!("authorization: Bearer {t}"));
        match self {
            Self::Grpc(addr) => {
                let mut command = Command::new(tool("grpcurl", TOOLS_HINT));
                command.arg("-plaintext");
                if let Some(secs) = timeout_secs {
                    command.args(["-max-time", &secs.to_string()]);
                }
                if let Some(auth) = auth {
                    command.args(["-H", &auth]);
                }
                command.args(["-d", &request.to_string(), &addr.to_string(), method]);
                command
            }
            Self::GrpcWeb(addr) => {
                let mut command = Command::new(tool("buf", TOOLS_HINT));
                command
                    .args(["curl", "--protocol", "grpcweb", "--schema"])
                    .arg(proto_dir());
                // 0 = no limit: a stream lives until the test drops it.
                command.args(["--timeout", &format!("{}s", timeout_secs.unwrap_or(0))]);
                if let Some(auth) = auth {
                    command.args(["-H", &auth]);
                }
                command.args([
                    "-d",
                    &request.to_string(),
                    &format!("http://{addr}/{method}"),
                ]);
                command
            }
        }
    }

    /// grpcurl prints `ERROR:\n  Code: NotFound\n  Message: ...`; buf curl prints
    /// `{"code": "not_found", "message": ...}`. Either way, on stderr.
    fn error(&self, output: &Output) -> RpcError {
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        let all = format!(
            "exit: {}\nstdout: {}\nstderr: {stderr}",
            output.status,
            String::from_utf8_lossy(&output.stdout)
        );
        let (code, message) = match self {
            Self::Grpc(_) => {
                let field = |name: &str| {
                    stderr
                        .lines()
                        .find_map(|l| l.trim().strip_prefix(name).map(|v| v.trim().to_owned()))
                };
                (field("Code:"), field("Message:").unwrap_or_default())
            }
            Self::GrpcWeb(_) => match serde_json::from_str::<Value>(stderr.trim()) {
                Ok(json) => (
                    json["code"].as_str().map(str::to_owned),
                    json["message"].as_str().unwrap_or_default().to_owned(),
                ),
                Err(_) => (None, String::new()),
            },
        };
        let code = code.map_or_else(
            || Code::Other(format!("client failure ({})", output.status)),
            |c| Code::parse(&c),
        );
        RpcError {
            code,
            message,
            output: all,
        }
    }
}

/// The repository's protos, which buf compiles for the grpc-web calls (no reflection over HTTP/1.1).
fn proto_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("proto")
}

/// A `WatchOrderStatus` stream read by a client process: messages are parsed as they arrive on a
/// reader thread and kept in arrival order. The process is killed on drop.
#[derive(Debug)]
pub(crate) struct StatusStream {
    child: Child,
    client: Client,
    messages: Receiver<Value>,
    stderr: Option<JoinHandle<String>>,
    received: usize,
    updates: Vec<Value>,
}

impl StatusStream {
    fn spawn(mut command: Command, client: Client) -> Self {
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("running {command:?}: {e}"));
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = child.stderr.take().expect("piped stderr");
        let (tx, messages) = mpsc::channel();
        std::thread::spawn(move || {
            let values =
                serde_json::Deserializer::from_reader(BufReader::new(stdout)).into_iter::<Value>();
            for value in values.map_while(Result::ok) {
                if tx.send(value).is_err() {
                    break;
                }
            }
        });
        let stderr = Some(std::thread::spawn(move || read_all(stderr)));
        Self {
            child,
            client,
            messages,
            stderr,
            received: 0,
            updates: Vec::new(),
        }
    }

    /// Waits until the server has sent anything at all (a snapshot entry or a heartbeat): the
    /// stream is then subscribed, so nothing placed from now on can be missed.
    pub(crate) fn wait_until_open(&mut self, within: Duration) {
        let until = Instant::now() + within;
        while self.received == 0 {
            self.receive(until, "the first message");
        }
    }

    /// Reads until an update for `cid` with `status` has arrived (or already had), and returns it.
    pub(crate) fn wait_for(&mut self, cid: &str, status: &str, within: Duration) -> Value {
        let until = Instant::now() + within;
        loop {
            if let Some(found) = self
                .updates
                .iter()
                .find(|u| u["correlationId"] == cid && u["status"] == status)
            {
                return found.clone();
            }
            self.receive(until, &format!("{status} for {cid}"));
        }
    }

    /// The statuses received so far for `cid`, in arrival order.
    pub(crate) fn statuses_of(&self, cid: &str) -> Vec<String> {
        self.updates
            .iter()
            .filter(|u| u["correlationId"] == cid)
            .map(|u| u["status"].as_str().unwrap_or_default().to_owned())
            .collect()
    }

    fn receive(&mut self, until: Instant, awaited: &str) {
        let message = match self
            .messages
            .recv_timeout(until.saturating_duration_since(Instant::now()))
        {
            Ok(message) => message,
            Err(RecvTimeoutError::Timeout) => panic!(
                "no {awaited} on the {:?} stream in time; updates so far: {:?}",
                self.client, self.updates
            ),
            Err(RecvTimeoutError::Disconnected) => {
                let status = self.child.wait().map(|s| s.to_string()).unwrap_or_default();
                let stderr = self
                    .stderr
                    .take()
                    .and_then(|h| h.join().ok())
                    .unwrap_or_default();
                panic!(
                    "the {:?} stream ended ({status}) while waiting for {awaited}; updates so far: {:?}\nstderr: {stderr}",
                    self.client, self.updates
                )
            }
        };
        self.received += 1;
        match (message.get("update"), message.get("heartbeat")) {
            (Some(update), _) => self.updates.push(update.clone()),
            (None, Some(_)) => {}
            (None, None) => panic!("unexpected message on the status stream: {message}"),
        }
    }
}

impl Drop for StatusStream {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn read_all(mut stderr: ChildStderr) -> String {
    let mut text = String::new();
    let _ = stderr.read_to_string(&mut text);
    text
}
