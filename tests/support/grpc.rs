//! gRPC peers for the tests: a test service (`weir.test.Echo`) whose stubs
//! are generated once per test process with `grpc_tools.protoc` into a
//! temp dir, a grpcio server of it (optionally TLS, optionally with the
//! standard health service) and a grpcio client that runs one named
//! scenario and prints JSON lines.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use serde_json::Value;

use super::TempDir;
use super::python::{PyChild, python};

/// The test service. Every answer names the backend that served it
/// (`backend`) and echoes the `x-key` metadata (`metadata`).
pub const PROTO: &str = r#"
syntax = "proto3";
package weir.test;

service Echo {
  // The request back, with `backend` and `metadata` filled in.
  rpc Unary (Msg) returns (Msg);
  // `count` answers, each carrying `payload`.
  rpc ServerStream (Msg) returns (stream Msg);
  // One answer: `count` messages and their payload bytes in all.
  rpc ClientStream (stream Msg) returns (Msg);
  // Each message back as it comes.
  rpc Bidi (stream Msg) returns (stream Msg);
  // Fails with status `count` and message `text`.
  rpc Fail (Msg) returns (Msg);
  // Answers after `count` milliseconds.
  rpc Sleep (Msg) returns (Msg);
  // Sets the health service's status of service `text` to `count`
  // (1 SERVING, 2 NOT_SERVING).
  rpc SetHealth (Msg) returns (Msg);
}

message Msg {
  string text = 1;
  bytes payload = 2;
  int32 count = 3;
  string backend = 4;
  string metadata = 5;
  int64 total = 6;
}
"#;

/// The server: `--name N --port 0 [--cert F --key F] [--health]
/// [--not-serving]`; prints its port, then serves until killed.
pub const SERVER: &str = r#"
import argparse, sys, time
from concurrent import futures
import grpc
import weir_test_pb2 as pb, weir_test_pb2_grpc as rpc

p = argparse.ArgumentParser()
p.add_argument("--name", required=True)
p.add_argument("--port", type=int, default=0)
p.add_argument("--cert"); p.add_argument("--key")
p.add_argument("--health", action="store_true")
p.add_argument("--not-serving", action="store_true")
a = p.parse_args()
CODES = {c.value[0]: c for c in grpc.StatusCode}

def key(context):
    return dict(context.invocation_metadata()).get("x-key", "")

class Echo(rpc.EchoServicer):
    def __init__(self, health):
        self.health = health
    def Unary(self, m, context):
        return pb.Msg(text=m.text, payload=m.payload, count=m.count, backend=a.name, metadata=key(context))
    def ServerStream(self, m, context):
        for i in range(m.count):
            yield pb.Msg(text=str(i), payload=m.payload, count=i, backend=a.name, metadata=key(context))
    def ClientStream(self, it, context):
        n = total = 0
        for m in it:
            n += 1; total += len(m.payload)
        return pb.Msg(count=n, total=total, backend=a.name, metadata=key(context))
    def Bidi(self, it, context):
        for m in it:
            yield pb.Msg(text=m.text, payload=m.payload, count=m.count, backend=a.name, metadata=key(context))
    def Fail(self, m, context):
        context.abort(CODES[m.count], m.text)
    def Sleep(self, m, context):
        time.sleep(m.count / 1000.0)
        return pb.Msg(backend=a.name)
    def SetHealth(self, m, context):
        from grpc_health.v1 import health_pb2
        self.health.set(m.text, m.count)
        return pb.Msg(backend=a.name)

opts = [("grpc.max_receive_message_length", 64 << 20), ("grpc.max_send_message_length", 64 << 20)]
server = grpc.server(futures.ThreadPoolExecutor(max_workers=64), options=opts)
health = None
if a.health:
    from grpc_health.v1 import health, health_pb2, health_pb2_grpc
    health = health.HealthServicer()
    status = health_pb2.HealthCheckResponse.NOT_SERVING if a.not_serving else health_pb2.HealthCheckResponse.SERVING
    health.set("", status)
    health.set("weir.test.Echo", status)
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
rpc.add_EchoServicer_to_server(Echo(health), server)
if a.cert:
    creds = grpc.ssl_server_credentials([(open(a.key, "rb").read(), open(a.cert, "rb").read())])
    port = server.add_secure_port("127.0.0.1:%d" % a.port, creds)
else:
    port = server.add_insecure_port("127.0.0.1:%d" % a.port)
server.start()
print(port, flush=True)
server.wait_for_termination()
"#;

/// The client: `--target HOST:PORT --scenario S [--ca F --authority NAME]
/// [--count N] [--size BYTES] [--key K] [--timeout SECONDS] [--text T]
/// [--code C]`. Prints one JSON line per call (unary, fail, sleep,
/// set_health) or one summary line (streams); a failed call's line has
/// `ok: false`, `code` (the status name) and `details`.
pub const CLIENT: &str = r#"
import argparse, json, sys
import grpc
import weir_test_pb2 as pb, weir_test_pb2_grpc as rpc

p = argparse.ArgumentParser()
p.add_argument("--target", required=True)
p.add_argument("--scenario", required=True)
p.add_argument("--ca"); p.add_argument("--authority")
p.add_argument("--count", type=int, default=1)
p.add_argument("--size", type=int, default=0)
p.add_argument("--key", default="")
p.add_argument("--timeout", type=float, default=30.0)
p.add_argument("--text", default="hello")
p.add_argument("--code", type=int, default=0)
a = p.parse_args()

opts = [("grpc.max_receive_message_length", 64 << 20), ("grpc.max_send_message_length", 64 << 20),
        ("grpc.enable_retries", 0)]
if a.ca:
    if a.authority:
        opts.append(("grpc.ssl_target_name_override", a.authority))
    channel = grpc.secure_channel(a.target, grpc.ssl_channel_credentials(open(a.ca, "rb").read()), options=opts)
else:
    channel = grpc.insecure_channel(a.target, options=opts)
stub = rpc.EchoStub(channel)
md = [("x-key", a.key)] if a.key else []
payload = b"w" * a.size

def out(**kw):
    print(json.dumps(kw), flush=True)

def failed(e):
    out(ok=False, code=e.code().name, details=e.details())

def msg(m):
    return dict(ok=True, backend=m.backend, metadata=m.metadata, text=m.text, count=m.count,
                size=len(m.payload), total=m.total, intact=(m.payload == payload))

def run():
    s = a.scenario
    if s == "unary":
        for i in range(a.count):
            try:
                out(**msg(stub.Unary(pb.Msg(text=a.text, payload=payload, count=i), metadata=md, timeout=a.timeout)))
            except grpc.RpcError as e:
                failed(e)
    elif s == "server_stream":
        n = size = 0; backends = set()
        for m in stub.ServerStream(pb.Msg(payload=payload, count=a.count), metadata=md, timeout=a.timeout):
            n += 1; size += len(m.payload); backends.add(m.backend)
            assert m.count == n - 1, (m.count, n)
        out(ok=True, received=n, bytes=size, backends=sorted(backends))
    elif s == "client_stream":
        gen = (pb.Msg(payload=payload, count=i) for i in range(a.count))
        out(**msg(stub.ClientStream(gen, metadata=md, timeout=a.timeout)))
    elif s == "bidi":
        gen = (pb.Msg(text=str(i), payload=payload, count=i) for i in range(a.count))
        n = size = 0; backends = set(); in_order = True
        for m in stub.Bidi(gen, metadata=md, timeout=a.timeout):
            in_order &= (m.count == n); n += 1; size += len(m.payload); backends.add(m.backend)
        out(ok=True, received=n, bytes=size, backends=sorted(backends), in_order=in_order)
    elif s == "fail":
        stub.Fail(pb.Msg(text=a.text, count=a.code), metadata=md, timeout=a.timeout)
        out(ok=True)
    elif s == "sleep":
        out(**msg(stub.Sleep(pb.Msg(count=a.count), metadata=md, timeout=a.timeout)))
    elif s == "set_health":
        out(**msg(stub.SetHealth(pb.Msg(text=a.text, count=a.code), timeout=a.timeout)))
    else:
        sys.exit("unknown scenario " + s)

try:
    run()
except grpc.RpcError as e:
    failed(e)
"#;

/// The directory with the proto's generated stubs, made once per test
/// process.
pub fn stubs() -> &'static Path {
    static DIR: OnceLock<TempDir> = OnceLock::new();
    &DIR.get_or_init(|| {
        let dir = TempDir::new("grpc-stubs");
        std::fs::write(dir.0.join("weir_test.proto"), PROTO).unwrap();
        let out = Command::new(python())
            .args([
                "-m",
                "grpc_tools.protoc",
                "-I.",
                "--python_out=.",
                "--grpc_python_out=.",
            ])
            .arg("weir_test.proto")
            .current_dir(&dir.0)
            .output()
            .expect("python runs");
        assert!(
            out.status.success(),
            "protoc failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        dir
    })
    .0
}

/// A running grpcio server of the test service.
pub struct GrpcServer {
    pub name: String,
    pub port: u16,
    child: PyChild,
}

impl GrpcServer {
    /// A plain (h2c) server named `name`; `extra` are more flags
    /// (`--health`, `--not-serving`, `--cert F --key F`).
    pub fn start(name: &str, extra: &[&str]) -> GrpcServer {
        let mut args = vec!["--name", name, "--port", "0"];
        args.extend_from_slice(extra);
        let mut child = PyChild::spawn_in(SERVER, &args, Some(stubs()));
        let port = child.port();
        GrpcServer {
            name: name.to_string(),
            port,
            child,
        }
    }

    /// Its address.
    pub fn addr(&self) -> std::net::SocketAddr {
        std::net::SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// Stops it, as a crash would.
    pub fn kill(&mut self) {
        let _ = self.child.child.kill();
        let _ = self.child.child.wait();
    }
}

/// Runs the client's `scenario` against `target` with `args`; returns its
/// JSON lines. Blocking: call it from `spawn_blocking` or a plain thread.
pub fn run_client(target: &str, scenario: &str, args: &[&str]) -> Vec<Value> {
    let out = Command::new(python())
        .arg("-c")
        .arg(CLIENT)
        .args(["--target", target, "--scenario", scenario])
        .args(args)
        .current_dir(stubs())
        .env("PYTHONPATH", stubs())
        .output()
        .expect("python runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "client {scenario} failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{line:?}: {e}")))
        .collect()
}

/// [`run_client`] off the async runtime.
pub async fn client(target: &str, scenario: &str, args: &[&str]) -> Vec<Value> {
    let (target, scenario) = (target.to_string(), scenario.to_string());
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run_client(&target, &scenario, &args)
    })
    .await
    .unwrap()
}

/// A path inside the stubs' directory, for files a test writes.
pub fn stub_path(name: &str) -> PathBuf {
    stubs().join(name)
}
