//! WebSocket peers for the tests, in Python `websockets` (the test
//! virtualenv): an echo server that names itself, and a client process
//! that holds many sockets open and is driven line by line over stdin.

use std::io::{BufRead, BufReader, Lines, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use super::python::{PyChild, python};

/// The server: echoes every message; `who` answers its name, `close:CODE`
/// closes with that code; a plain HTTP request (no upgrade) is answered
/// `200` with its name, so plain requests and sockets can be compared.
const SERVER: &str = r#"
import asyncio, sys
from http import HTTPStatus
from websockets.asyncio.server import serve

name = sys.argv[1]

def plain(connection, request):
    if request.headers.get("Upgrade") is None:
        return connection.respond(HTTPStatus.OK, name)

async def handler(ws):
    try:
        async for msg in ws:
            if msg == "who":
                await ws.send(name)
            elif isinstance(msg, str) and msg.startswith("close:"):
                await ws.close(int(msg[6:]), "bye")
                return
            else:
                await ws.send(msg)
    except Exception:
        pass

async def main():
    async with serve(handler, "127.0.0.1", 0, max_size=None, ping_interval=None,
                     process_request=plain) as server:
        print(server.sockets[0].getsockname()[1], flush=True)
        await asyncio.Future()

asyncio.run(main())
"#;

/// The client: opens `N` sockets at once to `URL` (with the JSON object of
/// extra headers), asks each `who`, prints the JSON list of names; then
/// serves commands, one JSON line of results each:
/// `echo SIZE` (each socket sends SIZE random bytes, `ok` when they come
/// back), `send TEXT` (each socket sends TEXT), `closed NAME` (waits for the
/// sockets on backend NAME to close: `closed:CODE`, or `open` after 60 s).
const CLIENT: &str = r#"
import asyncio, json, os, sys
from websockets.asyncio.client import connect

url, n, headers = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3])

async def main():
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    async def one():
        ws = await connect(url, additional_headers=headers, max_size=None,
                           open_timeout=60, ping_interval=None, close_timeout=5)
        await ws.send("who")
        return ws, await asyncio.wait_for(ws.recv(), 60)
    socks = await asyncio.gather(*[one() for _ in range(n)])
    print(json.dumps([name for _, name in socks]), flush=True)
    async def echo(ws, size):
        msg = os.urandom(size)
        try:
            await ws.send(msg)
            got = await asyncio.wait_for(ws.recv(), 60)
            return "ok" if got == msg else "wrong"
        except Exception:
            return "closed:%s" % ws.close_code
    async def closed(ws):
        try:
            await asyncio.wait_for(ws.wait_closed(), 60)
        except asyncio.TimeoutError:
            return "open"
        return "closed:%s" % ws.close_code
    while True:
        line = (await reader.readline()).decode().strip()
        if not line or line == "quit":
            break
        cmd, _, arg = line.partition(" ")
        if cmd == "echo":
            out = await asyncio.gather(*[echo(ws, int(arg)) for ws, _ in socks])
        elif cmd == "send":
            for ws, _ in socks:
                try:
                    await ws.send(arg)
                except Exception:
                    pass
            out = []
        elif cmd == "closed":
            out = await asyncio.gather(*[closed(ws) for ws, name in socks if name == arg])
        print(json.dumps(out), flush=True)
    for ws, _ in socks:
        await ws.close()

asyncio.run(main())
"#;

/// A WebSocket echo backend named `name`; killed when dropped.
pub struct WsBackend {
    /// The script.
    pub child: PyChild,
    /// Its port.
    pub port: u16,
}

impl WsBackend {
    /// Starts one.
    pub fn start(name: &str) -> WsBackend {
        let mut child = PyChild::spawn(SERVER, &[name]);
        let port = child.port();
        WsBackend { child, port }
    }

    /// Its address.
    pub fn addr(&self) -> std::net::SocketAddr {
        ([127, 0, 0, 1], self.port).into()
    }

    /// Kills it (its sockets close).
    pub fn kill(&mut self) {
        let _ = self.child.child.kill();
        let _ = self.child.child.wait();
    }
}

/// A client process holding WebSockets open; killed when dropped.
pub struct WsClients {
    child: Child,
    stdin: ChildStdin,
    stdout: Lines<BufReader<ChildStdout>>,
    /// The backend each socket landed on (its `who` answer), in order.
    pub names: Vec<String>,
}

impl WsClients {
    /// Opens `n` sockets to `url` with `headers`; blocks until all are open
    /// and have said who answers them.
    pub fn open(url: &str, n: usize, headers: &[(&str, &str)]) -> WsClients {
        let headers: serde_json::Map<String, serde_json::Value> = headers
            .iter()
            .map(|(k, v)| (k.to_string(), serde_json::Value::from(*v)))
            .collect();
        let mut child = Command::new(python())
            .arg("-u")
            .arg("-c")
            .arg(CLIENT)
            .args([
                url,
                &n.to_string(),
                &serde_json::Value::from(headers).to_string(),
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python for the WebSocket client");
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut clients = WsClients {
            child,
            stdin,
            stdout,
            names: Vec::new(),
        };
        clients.names = clients.answer();
        clients
    }

    fn answer(&mut self) -> Vec<String> {
        match self.stdout.next() {
            Some(Ok(line)) => serde_json::from_str(&line)
                .unwrap_or_else(|e| panic!("the client printed {line:?}: {e}")),
            other => panic!("the WebSocket client ended: {other:?}"),
        }
    }

    /// Sends `command`, returns its results.
    pub fn command(&mut self, command: &str) -> Vec<String> {
        writeln!(self.stdin, "{command}").unwrap();
        self.stdin.flush().unwrap();
        self.answer()
    }

    /// Each socket echoes `size` random bytes: `ok`, or `closed:CODE`.
    pub fn echo(&mut self, size: usize) -> Vec<String> {
        self.command(&format!("echo {size}"))
    }

    /// Waits for the sockets on backend `name` to close.
    pub fn closed(&mut self, name: &str) -> Vec<String> {
        self.command(&format!("closed {name}"))
    }

    /// How many sockets landed on each backend.
    pub fn spread(&self) -> std::collections::BTreeMap<String, usize> {
        let mut spread = std::collections::BTreeMap::new();
        for name in &self.names {
            *spread.entry(name.clone()).or_default() += 1;
        }
        spread
    }

    /// Closes every socket and waits for the process.
    pub fn quit(mut self) {
        let _ = writeln!(self.stdin, "quit");
        let _ = self.stdin.flush();
        let _ = self.child.wait();
    }
}

impl Drop for WsClients {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
