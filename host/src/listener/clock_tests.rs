//! The connection clock's timeouts on paused tokio time, across the
//! phases that do not ring it.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::task::JoinHandle;

use super::*;

const HEAD: Duration = Duration::from_secs(30);
const IDLE: Duration = Duration::from_secs(60);
const CLOCK: Clock = Clock {
    header: HEAD,
    idle: IDLE,
    hibernate: None,
    tried: None,
};
const HIBERNATING: Clock = Clock {
    hibernate: Some(HIBERNATE_AFTER),
    ..CLOCK
};

fn activity(clock: &Clock) -> Arc<Activity> {
    Activity::new(clock.floor())
}

/// The clock on its own task: what it fired for, and when.
fn run(activity: &Arc<Activity>, clock: Clock) -> JoinHandle<(Option<Expiry>, Instant)> {
    let activity = activity.clone();
    tokio::spawn(async move { (activity.expired(clock).await, Instant::now()) })
}

fn request(activity: &Arc<Activity>) {
    drop(activity.begin(0).answered(crate::proxy::full("")));
}

fn rings(activity: &Activity) -> u64 {
    activity.bell.rings.load(Ordering::Relaxed)
}

#[tokio::test(start_paused = true)]
async fn a_new_connection_owes_its_head_within_the_header_timeout() {
    let activity = activity(&CLOCK);
    let started = Instant::now();
    assert_eq!(activity.expired(CLOCK).await, Some(Expiry::Header));
    assert_eq!(started.elapsed(), HEAD);
}

#[tokio::test(start_paused = true)]
async fn an_idle_spell_hibernates_once_then_times_out() {
    let activity = activity(&HIBERNATING);
    request(&activity);
    let since = activity.idle_since().expect("idle");
    assert_eq!(activity.expired(HIBERNATING).await, Some(Expiry::Hibernate));
    assert_eq!(since.elapsed(), HIBERNATE_AFTER);
    let tried = Clock {
        tried: Some(since),
        ..HIBERNATING
    };
    assert_eq!(activity.expired(tried).await, Some(Expiry::Idle));
    assert_eq!(since.elapsed(), IDLE);
    activity.ask_to_hibernate(true);
    assert!(activity.hibernation_asked());
    drop(activity.begin(0));
    assert!(!activity.hibernation_asked(), "a request withdraws the ask");
}

#[tokio::test(start_paused = true)]
async fn idle_between_requests_then_a_head_owed_from_the_first_byte() {
    let activity = activity(&CLOCK);
    let request = activity.begin(0);
    let clock = run(&activity, CLOCK);
    // Busy for longer than both timeouts: no clock runs.
    tokio::time::sleep(IDLE * 2).await;
    assert!(!clock.is_finished());
    let idle_from = Instant::now();
    drop(request.answered(crate::proxy::full("")));
    assert_eq!(clock.await.unwrap(), (Some(Expiry::Idle), idle_from + IDLE));
    // A byte after idling starts the head clock, from that byte.
    let activity = self::activity(&CLOCK);
    request_and_idle(&activity, IDLE / 2).await;
    activity.received();
    let owed_from = Instant::now();
    assert_eq!(activity.expired(CLOCK).await, Some(Expiry::Header));
    assert_eq!(owed_from.elapsed(), HEAD);
}

async fn request_and_idle(activity: &Arc<Activity>, idle: Duration) {
    request(activity);
    tokio::time::sleep(idle).await;
}

#[tokio::test(start_paused = true)]
async fn a_head_owed_after_a_long_busy_spell_is_timed_from_its_byte() {
    let activity = activity(&HIBERNATING);
    let clock = run(&activity, HIBERNATING);
    let long = activity.begin(0);
    // Long enough for the clock to look at doubling intervals.
    tokio::time::sleep(IDLE * 10).await;
    assert!(!clock.is_finished(), "a busy connection has no deadline");
    drop(long.answered(crate::proxy::full("")));
    // The next head starts arriving at once, and stalls.
    tokio::time::sleep(Duration::from_millis(1)).await;
    activity.received();
    let owed_from = Instant::now();
    assert_eq!(
        clock.await.unwrap(),
        (Some(Expiry::Header), owed_from + HEAD)
    );
}

#[tokio::test(start_paused = true)]
async fn an_idle_spell_right_after_a_long_request_hibernates_on_time() {
    let activity = activity(&HIBERNATING);
    let clock = run(&activity, HIBERNATING);
    let long = activity.begin(0);
    tokio::time::sleep(IDLE * 30).await;
    assert!(!clock.is_finished(), "a busy connection never hibernates");
    let idle_from = Instant::now();
    drop(long.answered(crate::proxy::full("")));
    assert_eq!(
        clock.await.unwrap(),
        (Some(Expiry::Hibernate), idle_from + HIBERNATE_AFTER)
    );
    assert!(
        rings(&activity) >= 1,
        "the clock slept past the new deadline"
    );
    // And, hibernation tried, the idle timeout from the same start.
    let tried = Clock {
        tried: activity.idle_since(),
        ..HIBERNATING
    };
    assert_eq!(
        run(&activity, tried).await.unwrap(),
        (Some(Expiry::Idle), idle_from + IDLE)
    );
}

#[tokio::test(start_paused = true)]
async fn requests_keep_a_connection_awake_without_ringing_its_clock() {
    let activity = activity(&HIBERNATING);
    let clock = run(&activity, HIBERNATING);
    // 1,000 requests a few ms apart, each a byte, a head and an answer:
    // idle gaps just under the hibernation time.
    let gap = HIBERNATE_AFTER - Duration::from_millis(1);
    for _ in 0..1000 {
        activity.received();
        let request = activity.begin(0);
        tokio::time::sleep(Duration::from_millis(2)).await;
        drop(request.answered(crate::proxy::full("")));
        tokio::time::sleep(gap).await;
        assert!(!clock.is_finished(), "hibernated before 50 ms idle");
    }
    assert_eq!(rings(&activity), 0, "phase changes rang the clock");
    let idle_from = activity.idle_since().unwrap();
    assert_eq!(
        clock.await.unwrap(),
        (Some(Expiry::Hibernate), idle_from + HIBERNATE_AFTER)
    );
}

#[tokio::test(start_paused = true)]
async fn a_late_byte_moves_idle_to_head() {
    // The idle timeout would fire a second after the byte: the head
    // timeout, from the byte, does instead.
    let activity = activity(&CLOCK);
    let clock = run(&activity, CLOCK);
    request_and_idle(&activity, IDLE - Duration::from_secs(1)).await;
    activity.received();
    let owed_from = Instant::now();
    assert_eq!(
        clock.await.unwrap(),
        (Some(Expiry::Header), owed_from + HEAD)
    );
    // A byte whose head deadline comes before the idle one the clock
    // sleeps to rings it.
    let long_idle = Clock {
        idle: HEAD * 10,
        ..CLOCK
    };
    let activity = self::activity(&long_idle);
    let clock = run(&activity, long_idle);
    request_and_idle(&activity, HEAD).await;
    activity.received();
    let owed_from = Instant::now();
    assert_eq!(
        clock.await.unwrap(),
        (Some(Expiry::Header), owed_from + HEAD)
    );
    assert!(rings(&activity) >= 1);
}

#[tokio::test(start_paused = true)]
async fn a_flood_ends_the_wait_at_once() {
    let activity = activity(&CLOCK);
    let clock = run(&activity, CLOCK);
    let open = activity.begin(0);
    for _ in 0..500 {
        drop(activity.begin(0));
    }
    assert!(activity.flooding());
    let (expired, at) = tokio::time::timeout(HEAD, clock).await.unwrap().unwrap();
    assert_eq!(expired, None);
    assert!(at.elapsed() < HEAD, "the flood rang the clock");
    drop(open);
}

#[tokio::test(start_paused = true)]
async fn a_bell_rung_before_the_wait_ends_it() {
    let bell = Bell::default();
    bell.ring();
    bell.rung().await;
    let bell = Arc::new(Bell::default());
    let waiting = {
        let bell = bell.clone();
        tokio::spawn(async move { bell.rung().await })
    };
    tokio::task::yield_now().await;
    assert!(!waiting.is_finished());
    bell.ring();
    tokio::time::timeout(HEAD, waiting).await.unwrap().unwrap();
}
