//! Driving one hyper connection under the connection's clock: until it
//! ends, its clock or flood check closes it, or shutdown asks it to
//! finish; an idle spell long enough asks it to hibernate.

use std::pin::Pin;

use tokio::sync::watch;

use super::clock::{Clock, Expiry};
use super::close::refusal_of;
use super::serving::{Ended, Serving};
use super::{CLOSE_GRACE, Refusal, Watch};

/// Runs `connection` until it ends (its result), or its clock closes it:
/// none when it was dropped mid-head. `clock.tried` records the idle
/// spell hibernation was asked in.
pub(super) async fn drive<C: Serving + ?Sized>(
    mut connection: Pin<&mut C>,
    watch: &Watch,
    shutdown: &mut watch::Receiver<bool>,
    clock: &mut Clock,
) -> Option<Ended> {
    loop {
        let expired = tokio::select! {
            result = connection.as_mut() => return Some(result),
            expired = watch.activity.expired(*clock) => expired,
            _ = shutdown.changed() => {
                connection.as_mut().graceful_shutdown();
                return Some(connection.await);
            }
        };
        let refusal = match expired {
            Some(Expiry::Hibernate) => {
                // The stream ends hyper's connection at its next read, if
                // it is still between requests then.
                clock.tried = watch.activity.idle_since();
                watch.activity.ask_to_hibernate(true);
                continue;
            }
            Some(Expiry::Header) => Refusal::HeaderTimeout,
            Some(Expiry::Idle) => Refusal::IdleTimeout,
            None => Refusal::H2Flood,
        };
        watch.count(refusal);
        tracing::debug!(client = %watch.client, "closing the connection: {}", refusal.why());
        if refusal == Refusal::HeaderTimeout {
            // Mid-head: nothing to finish, nothing to answer.
            return None;
        }
        // A GOAWAY (HTTP/2), or a close of the idle HTTP/1.1 connection.
        connection.as_mut().graceful_shutdown();
        return tokio::time::timeout(CLOSE_GRACE, connection.as_mut())
            .await
            .ok();
    }
}

/// Counts and logs how a connection ended, if with an error.
pub(super) fn ended(ended: Option<Ended>, watch: &Watch) {
    if let Some(Err(error)) = ended {
        if let Some(refusal) = refusal_of(&*error) {
            watch.count(refusal);
        }
        tracing::debug!(client = %watch.client, error = %error, "client connection ended with an error");
    }
}
