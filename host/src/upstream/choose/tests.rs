//! Choosing with a fake policy and no Wasm: what the upstream does with
//! each kind of answer.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::AtomicUsize;
use std::time::Duration;

use http::{HeaderName, HeaderValue};

use super::*;
use crate::backend::BackendSpec;
use crate::policy::Policy;
use crate::upstream::testing::{backend, upstream, upstream_with};

/// What the fake policy answers to one call.
#[derive(Clone)]
enum Script {
    /// The backend of this name in the set it is given.
    Name(&'static str),
    /// This backend, whatever the set.
    Exactly(Arc<Backend>),
    Declined,
    Fail,
    Quarantined,
    Panic,
}

/// Answers from a script (the last answer repeats), adds a response header
/// to every call, and counts calls and set updates.
struct Fake {
    script: Mutex<VecDeque<Script>>,
    on_failure: OnFailure,
    calls: AtomicUsize,
    updates: AtomicUsize,
}

fn fake(on_failure: OnFailure, script: &[Script]) -> Fake {
    Fake {
        script: Mutex::new(script.iter().cloned().collect()),
        on_failure,
        calls: AtomicUsize::new(0),
        updates: AtomicUsize::new(0),
    }
}

impl Policy for Fake {
    fn select(
        &self,
        set: &Arc<BackendSet>,
        request: &mut RequestView,
        _: &dyn Fn(&Backend) -> bool,
    ) -> Selection {
        self.calls.fetch_add(1, Ordering::Relaxed);
        request.response_headers.push((
            HeaderName::from_static("x-fake"),
            HeaderValue::from_static("1"),
        ));
        let step = {
            let mut script = self.script.lock().unwrap();
            if script.len() > 1 {
                script.pop_front().unwrap()
            } else {
                script[0].clone()
            }
        };
        let answer = match step {
            Script::Name(name) => Ok(Pick::Backend(
                set.iter().find(|b| b.name == name).unwrap().clone(),
            )),
            Script::Exactly(backend) => Ok(Pick::Backend(backend)),
            Script::Declined => Ok(Pick::Declined),
            Script::Fail => Err(PolicyError::failed("trapped: unreachable")),
            Script::Quarantined => Err(PolicyError::quarantined("quarantined for 1s more")),
            Script::Panic => panic!("boom"),
        };
        Selection {
            answer,
            took: Some(Duration::from_micros(3)),
        }
    }

    fn chosen_by(&self) -> ChosenBy {
        ChosenBy::Plugin
    }

    fn on_failure(&self) -> OnFailure {
        self.on_failure
    }

    fn update(&self, _: &Arc<BackendSet>) {
        self.updates.fetch_add(1, Ordering::Relaxed);
    }
}

fn view() -> RequestView {
    RequestView {
        method: http::Method::GET,
        uri: http::Uri::from_static("/"),
        headers: http::HeaderMap::new(),
        client: "127.0.0.1:1".parse().unwrap(),
        tls: None,
        response_headers: Vec::new(),
    }
}

fn fake_of(upstream: &Upstream) -> &Fake {
    (upstream.policy() as &dyn std::any::Any)
        .downcast_ref()
        .unwrap()
}

fn calls(upstream: &Upstream) -> usize {
    fake_of(upstream).calls.load(Ordering::Relaxed)
}

/// The chosen backend's name and who chose it; panics on any other choice.
fn chosen(choice: Choice) -> (String, ChosenBy) {
    match choice {
        Choice::Backend(backend, by) => (backend.name.clone(), by),
        Choice::Unavailable(why) => panic!("unavailable: {why}"),
        Choice::PluginFailed(error) => panic!("failed: {error}"),
    }
}

fn unavailable(choice: Choice) -> &'static str {
    match choice {
        Choice::Unavailable(why) => why,
        _ => panic!("a backend was chosen, or the policy failed"),
    }
}

fn failed(choice: Choice) -> PolicyError {
    match choice {
        Choice::PluginFailed(error) => error,
        _ => panic!("the policy did not fail"),
    }
}

#[test]
fn the_policys_answer_is_taken_with_its_headers() {
    let web = upstream_with(3, "", fake(OnFailure::Fallback, &[Script::Name("b2")]));
    let mut request = view();
    assert_eq!(
        chosen(web.choose(&mut request, &[])),
        ("b2".into(), ChosenBy::Plugin)
    );
    assert_eq!(calls(&web), 1);
    assert_eq!(request.response_headers.len(), 1);
    assert_eq!(web.stats().plugin_calls.count(), 1);
}

#[test]
fn tried_backends_are_skipped_and_the_policy_asked_again() {
    let script = [Script::Name("b1"), Script::Name("b2")];
    let web = upstream_with(3, "", fake(OnFailure::Fallback, &script));
    let b1 = backend(&web, "b1").id;
    let choice = web.choose(&mut view(), &[b1]);
    assert_eq!(chosen(choice), ("b2".into(), ChosenBy::Plugin));
    assert_eq!(calls(&web), 2);
}

#[test]
fn after_asks_answers_that_cannot_be_taken_weir_reroutes_and_drops_the_headers() {
    let web = upstream_with(3, "", fake(OnFailure::Fallback, &[Script::Name("b1")]));
    let b1 = backend(&web, "b1").id;
    let mut request = view();
    let (name, by) = chosen(web.choose(&mut request, &[b1]));
    assert_ne!(name, "b1");
    assert_eq!(by, ChosenBy::Reroute);
    assert_eq!(calls(&web), ASKS);
    assert_eq!(web.stats().plugin_calls.count(), ASKS as u64);
    assert!(request.response_headers.is_empty());
}

#[test]
fn full_backends_are_skipped() {
    let script = [Script::Name("b1"), Script::Name("b2")];
    let web = upstream_with(
        2,
        "max_in_flight_per_backend = 1",
        fake(OnFailure::Fallback, &script),
    );
    let _busy = backend(&web, "b1").stats.start();
    assert_eq!(
        chosen(web.choose(&mut view(), &[])),
        ("b2".into(), ChosenBy::Plugin)
    );
    assert_eq!(calls(&web), 2);
}

#[test]
fn every_backend_full_is_saturation() {
    let web = upstream_with(
        2,
        "max_in_flight_per_backend = 1",
        fake(OnFailure::Fallback, &[Script::Name("b1")]),
    );
    let _busy = [backend(&web, "b1"), backend(&web, "b2")].map(|b| b.stats.start());
    assert_eq!(
        unavailable(web.choose(&mut view(), &[])),
        "every backend is at its max_in_flight"
    );
    assert_eq!(web.stats().saturated.load(Ordering::Relaxed), 1);
}

#[test]
fn every_healthy_backend_tried_is_unavailable() {
    let web = upstream_with(2, "", fake(OnFailure::Fallback, &[Script::Name("b1")]));
    let tried: Vec<_> = web.backends().iter().map(|b| b.id).collect();
    let mut request = view();
    assert_eq!(
        unavailable(web.choose(&mut request, &tried)),
        "every healthy backend was tried"
    );
    assert!(request.response_headers.is_empty());
    assert_eq!(web.stats().saturated.load(Ordering::Relaxed), 0);
}

#[test]
fn a_declined_request_is_unavailable() {
    let web = upstream_with(2, "", fake(OnFailure::Fallback, &[Script::Declined]));
    assert_eq!(
        unavailable(web.choose(&mut view(), &[])),
        "the balancer plugin chose no backend"
    );
    assert_eq!(calls(&web), 1);
    assert_eq!(web.stats().no_backend.load(Ordering::Relaxed), 1);
}

#[test]
fn no_healthy_backend_asks_no_policy() {
    let web = upstream_with(1, "", fake(OnFailure::Fallback, &[Script::Name("b1")]));
    web.set_draining("b1", true).unwrap();
    assert_eq!(
        unavailable(web.choose(&mut view(), &[])),
        "no healthy backend"
    );
    assert_eq!(calls(&web), 0);
}

#[test]
fn a_failed_call_falls_back_or_fails_as_on_failure_says() {
    let web = upstream_with(2, "", fake(OnFailure::Fallback, &[Script::Fail]));
    let mut request = view();
    let (_, by) = chosen(web.choose(&mut request, &[]));
    assert_eq!(by, ChosenBy::Fallback);
    assert_eq!(calls(&web), 1);
    assert!(request.response_headers.is_empty());
    assert_eq!(web.stats().plugin_failures.load(Ordering::Relaxed), 1);

    let web = upstream_with(2, "", fake(OnFailure::Fail, &[Script::Fail]));
    let error = failed(web.choose(&mut view(), &[]));
    assert_eq!(error.to_string(), "trapped: unreachable");
    assert!(!error.is_quarantined());
    assert_eq!(web.stats().plugin_failures.load(Ordering::Relaxed), 1);

    let web = upstream_with(2, "", fake(OnFailure::Fail, &[Script::Quarantined]));
    assert!(failed(web.choose(&mut view(), &[])).is_quarantined());
}

#[test]
fn an_answer_from_an_older_set_or_none_is_a_failed_call() {
    let web = upstream_with(2, "", fake(OnFailure::Fail, &[Script::Declined]));
    let old = backend(&web, "b1");
    web.set_weight("b1", 5).unwrap();
    *fake_of(&web).script.lock().unwrap() = [Script::Exactly(old)].into();
    let error = failed(web.choose(&mut view(), &[]));
    assert!(
        error
            .to_string()
            .contains("not in the upstream's current backend set")
    );

    let spec = BackendSpec {
        name: "stranger".into(),
        addr: "127.0.0.1:1".parse().unwrap(),
        weight: 1,
        metadata: vec![],
        max_in_flight: None,
    };
    let stranger = Arc::new(Backend::new(77, spec, Arc::default(), Arc::default()));
    *fake_of(&web).script.lock().unwrap() = [Script::Exactly(stranger)].into();
    assert!(
        failed(web.choose(&mut view(), &[]))
            .to_string()
            .contains("stranger")
    );
}

#[test]
fn an_answer_naming_a_drained_backend_is_a_failed_call() {
    let web = upstream_with(2, "", fake(OnFailure::Fallback, &[Script::Name("b1")]));
    web.set_draining("b1", true).unwrap();
    assert_eq!(
        chosen(web.choose(&mut view(), &[])),
        ("b2".into(), ChosenBy::Fallback)
    );
    assert_eq!(web.stats().plugin_failures.load(Ordering::Relaxed), 1);
}

#[test]
fn a_panicking_policy_costs_one_decision() {
    let web = upstream_with(2, "", fake(OnFailure::Fallback, &[Script::Panic]));
    let (_, by) = chosen(web.choose(&mut view(), &[]));
    assert_eq!(by, ChosenBy::Fallback);
    let web = upstream_with(2, "", fake(OnFailure::Fail, &[Script::Panic]));
    assert_eq!(
        failed(web.choose(&mut view(), &[])).to_string(),
        "panicked: boom"
    );
    // Still serving.
    assert!(matches!(
        web.choose(&mut view(), &[]),
        Choice::PluginFailed(_)
    ));
}

#[test]
fn the_policy_is_told_of_each_new_set() {
    let web = upstream_with(2, "", fake(OnFailure::Fallback, &[Script::Name("b1")]));
    let before = fake_of(&web).updates.load(Ordering::Relaxed);
    assert!(before >= 1);
    web.set_weight("b1", 3).unwrap();
    web.set_draining("b2", true).unwrap();
    assert_eq!(fake_of(&web).updates.load(Ordering::Relaxed), before + 2);
}

#[test]
fn without_a_plugin_weir_round_robins_once_per_request() {
    let web = upstream(3, "");
    assert!(web.balancer().is_none());
    let b1 = backend(&web, "b1").id;
    let picks: Vec<_> = (0..4)
        .map(|_| chosen(web.choose(&mut view(), &[b1])))
        .collect();
    assert!(
        picks
            .iter()
            .all(|(name, by)| name != "b1" && *by == ChosenBy::RoundRobin)
    );
    assert_eq!(web.stats().plugin_calls.count(), 0);
    let tried: Vec<_> = web.backends().iter().map(|b| b.id).collect();
    assert_eq!(
        unavailable(web.choose(&mut view(), &tried)),
        "every healthy backend was tried"
    );
}
