use std::io::Write;
use std::sync::{Arc, Mutex};

use wasmtime::{Engine, Instance, Module, Store};

use super::*;
use crate::error::{chain, find};
use crate::plugin::call::Calls;
use crate::plugin::quarantine::QuarantinePolicy;

/// A core module exporting `f`, whose body is `unreachable`.
const UNREACHABLE: &[u8] = &[
    0, b'a', b's', b'm', 1, 0, 0, 0, // header
    1, 4, 1, 0x60, 0, 0, // type section: () -> ()
    3, 2, 1, 0, // function section
    7, 5, 1, 1, b'f', 0, 0, // export "f"
    10, 5, 1, 3, 0, 0x00, 0x0b, // code: unreachable, end
];

/// A real trap from wasmtime, wasm backtrace and all.
fn real_trap() -> wasmtime::Error {
    let engine = Engine::default();
    let module = Module::new(&engine, UNREACHABLE).unwrap();
    let mut store = Store::new(&engine, ());
    let instance = Instance::new(&mut store, &module, &[]).unwrap();
    let f = instance.get_typed_func::<(), ()>(&mut store, "f").unwrap();
    f.call(&mut store, ()).unwrap_err()
}

#[test]
fn a_trap_keeps_its_code_and_shows_without_the_backtrace() {
    let raw = real_trap();
    assert!(raw.downcast_ref::<WasmBacktrace>().is_some(), "{raw:?}");
    let error = CallError::wasm(raw, "select", Duration::from_millis(5));
    let CallError::Trap { function, code, .. } = &error else {
        panic!("{error:?}")
    };
    assert_eq!(
        (*function, *code),
        ("select", Some(Trap::UnreachableCodeReached))
    );
    assert_eq!(error.trap(), Some(Trap::UnreachableCodeReached));
    // source() reaches wasmtime's error, which still holds the trap.
    let wasm = find::<WasmError>(&error).expect("the wasmtime error is a source");
    assert_eq!(wasm.trap(), Some(Trap::UnreachableCodeReached));
    assert!(wasm.wasmtime().downcast_ref::<WasmBacktrace>().is_some());
    let text = chain(&error).to_string();
    assert_eq!(
        text,
        format!("select trapped: {}", Trap::UnreachableCodeReached)
    );
    assert!(!text.contains("backtrace"), "{text}");
}

#[test]
fn an_interrupt_is_a_timeout_and_a_host_failure_has_no_code() {
    let deadline = Duration::from_millis(5);
    let error = CallError::wasm(Trap::Interrupt.into(), "on-request", deadline);
    assert!(matches!(
        error,
        CallError::Timeout { function: "on-request", deadline: d } if d == deadline
    ));
    assert_eq!(error.trap(), Some(Trap::Interrupt));
    assert_eq!(
        chain(&error).to_string(),
        "on-request ran past its deadline of 5ms"
    );

    let io = std::io::Error::other("the disk is on fire");
    let host = wasmtime::Error::new(io).context("a host function failed");
    let error = CallError::wasm(host, "on-response", deadline);
    assert!(
        matches!(error, CallError::Trap { code: None, .. }),
        "{error:?}"
    );
    assert_eq!(
        chain(&error).to_string(),
        "on-response failed: a host function failed: the disk is on fire"
    );
    // Past the first link, the walk reaches the I/O error itself.
    assert_eq!(
        find::<std::io::Error>(&error).unwrap().to_string(),
        "the disk is on fire"
    );
}

#[test]
fn an_init_failure_reaches_its_trap_through_instantiate() {
    let call = CallError::wasm(real_trap(), "init", Duration::from_secs(1));
    let error = CallError::Instantiate(InitError::Call(Box::new(call)));
    assert_eq!(error.trap(), Some(Trap::UnreachableCodeReached));
    assert!(find::<InitError>(&error).is_some());
    assert!(find::<WasmError>(&error).is_some());
    assert_eq!(
        chain(&error).to_string(),
        format!(
            "could not instantiate: init trapped: {}",
            Trap::UnreachableCodeReached
        )
    );
    let refused = PluginError::Init {
        name: "p".into(),
        owner: "upstream web".into(),
        source: InitError::Refused("no such key".into()),
    };
    assert_eq!(
        chain(&refused).to_string(),
        "plugin p for upstream web: init failed: plugin refused its settings: no such key"
    );
    assert!(matches!(
        find::<InitError>(&refused),
        Some(InitError::Refused(_))
    ));
}

#[test]
fn a_bad_answer_keeps_what_http_said() {
    let header = super::super::decision::header("bad name", "v").unwrap_err();
    let error = CallError::Invalid(header);
    assert!(find::<http::header::InvalidHeaderName>(&error).is_some());
    assert!(
        chain(&error)
            .to_string()
            .starts_with("answered nonsense: invalid header name \"bad name\": "),
        "{}",
        chain(&error)
    );
    let value = super::super::decision::header("x", "a\nb").unwrap_err();
    assert!(find::<http::header::InvalidHeaderValue>(&value).is_some());
}

#[test]
fn load_errors_keep_their_io_and_wasmtime_sources() {
    let read = PluginError::Read {
        name: "p".into(),
        path: "/nowhere/p.wasm".into(),
        source: std::io::Error::from(std::io::ErrorKind::NotFound),
    };
    assert_eq!(
        find::<std::io::Error>(&read).unwrap().kind(),
        std::io::ErrorKind::NotFound
    );
    assert!(
        chain(&read)
            .to_string()
            .starts_with("plugin p (/nowhere/p.wasm): cannot read: ")
    );

    let engine = Engine::default();
    let garbage = wasmtime::component::Component::new(&engine, b"\0asm\x01\0\0\0\x05garbage")
        .map(drop)
        .unwrap_err();
    let invalid = PluginError::Invalid {
        name: "x".into(),
        path: "x.wasm".into(),
        reason: "not a valid component".into(),
        source: Some(WasmError::new(garbage).into()),
    };
    assert!(find::<WasmError>(&invalid).is_some());
    let text = chain(&invalid).to_string();
    assert!(
        text.starts_with("plugin x (x.wasm): not a valid component: "),
        "{text}"
    );
    assert!(text.len() > "plugin x (x.wasm): not a valid component: ".len());

    let runtime = PluginError::runtime("loading plugins", std::io::Error::other("gone"));
    assert_eq!(
        chain(&runtime).to_string(),
        "plugin runtime: loading plugins: gone"
    );
    assert!(find::<std::io::Error>(&runtime).is_some());
}

/// Captures what tracing writes, for the log line tests.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn the_log_line_of_a_trap_names_plugin_function_and_trap_code() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    let calls = Calls::new(
        "hasher".into(),
        "upstream web".into(),
        QuarantinePolicy::default(),
    );
    tracing::subscriber::with_default(subscriber, || {
        let result: Result<(), _> = calls.run(|_| {
            Err(CallError::wasm(
                real_trap(),
                "select",
                Duration::from_millis(5),
            ))
        });
        assert!(result.is_err());
    });
    let log = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert_eq!(log.lines().count(), 1, "{log}");
    assert!(log.contains("plugin=\"hasher\""), "{log}");
    assert!(log.contains("owner=\"upstream web\""), "{log}");
    assert!(
        log.contains(&format!(
            "plugin call failed: select trapped: {}",
            Trap::UnreachableCodeReached
        )),
        "{log}"
    );
}
