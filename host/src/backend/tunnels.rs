//! The tunnels (upgraded connections, such as WebSockets) open to one
//! backend: how many are open, how the finished ones ended, and the bytes
//! they carried each way. Kept beside the backend's request counters and
//! shared like them across backend sets and reloads.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// Why a tunnel ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TunnelEnd {
    /// The client closed its side (or both sides finished, the client first).
    ClientClosed,
    /// The backend closed its side first.
    BackendClosed,
    /// No byte went either way for the upstream's `tunnel_idle_timeout_ms`.
    Idle,
    /// The backend was drained through the admin API; the tunnel's grace
    /// ran out.
    Drained,
    /// The backend left the upstream (config reload or the admin API); the
    /// tunnel's grace ran out.
    Removed,
    /// weir is shutting down; the tunnel's grace ran out.
    Shutdown,
    /// A read or write failed on either side (a reset, a broken pipe).
    Error,
}

impl TunnelEnd {
    /// Every reason, in the order of the counters.
    pub const ALL: [TunnelEnd; 7] = [
        TunnelEnd::ClientClosed,
        TunnelEnd::BackendClosed,
        TunnelEnd::Idle,
        TunnelEnd::Drained,
        TunnelEnd::Removed,
        TunnelEnd::Shutdown,
        TunnelEnd::Error,
    ];

    /// The `reason` label and the access log's `ended` value.
    pub fn as_str(self) -> &'static str {
        match self {
            TunnelEnd::ClientClosed => "client_closed",
            TunnelEnd::BackendClosed => "backend_closed",
            TunnelEnd::Idle => "idle",
            TunnelEnd::Drained => "drained",
            TunnelEnd::Removed => "removed",
            TunnelEnd::Shutdown => "shutdown",
            TunnelEnd::Error => "error",
        }
    }
}

/// Tunnel counters of one backend.
#[derive(Debug, Default)]
pub struct TunnelStats {
    open: AtomicU32,
    ended: [AtomicU64; TunnelEnd::ALL.len()],
    to_backend: AtomicU64,
    to_client: AtomicU64,
    /// `101` answers weir refused (502): to a request that did not ask to
    /// upgrade, or naming another protocol.
    bad_switches: AtomicU64,
}

impl TunnelStats {
    /// A tunnel opened.
    pub fn opened(&self) {
        self.open.fetch_add(1, Ordering::Relaxed);
    }

    /// A tunnel ended for `why`.
    pub fn closed(&self, why: TunnelEnd) {
        self.open.fetch_sub(1, Ordering::Relaxed);
        self.ended[why as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts bytes carried: `to_backend` from the client, `to_client`
    /// from the backend.
    pub fn carried(&self, to_backend: u64, to_client: u64) {
        self.to_backend.fetch_add(to_backend, Ordering::Relaxed);
        self.to_client.fetch_add(to_client, Ordering::Relaxed);
    }

    /// Counts a `101` weir refused.
    pub fn bad_switch(&self) {
        self.bad_switches.fetch_add(1, Ordering::Relaxed);
    }

    /// Tunnels open now.
    pub fn open(&self) -> u32 {
        self.open.load(Ordering::Relaxed)
    }

    /// Tunnels that ended for `why`.
    pub fn ended(&self, why: TunnelEnd) -> u64 {
        self.ended[why as usize].load(Ordering::Relaxed)
    }

    /// Bytes carried so far: (to the backend, to the client).
    pub fn bytes(&self) -> (u64, u64) {
        (
            self.to_backend.load(Ordering::Relaxed),
            self.to_client.load(Ordering::Relaxed),
        )
    }

    /// `101` answers refused.
    pub fn bad_switches(&self) -> u64 {
        self.bad_switches.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_tunnels_and_their_ends_are_counted() {
        let stats = TunnelStats::default();
        stats.opened();
        stats.opened();
        stats.closed(TunnelEnd::Idle);
        stats.carried(3, 5);
        stats.carried(1, 0);
        assert_eq!(stats.open(), 1);
        assert_eq!(stats.ended(TunnelEnd::Idle), 1);
        assert_eq!(stats.ended(TunnelEnd::Drained), 0);
        assert_eq!(stats.bytes(), (4, 5));
        for (i, why) in TunnelEnd::ALL.iter().enumerate() {
            assert_eq!(*why as usize, i, "{}", why.as_str());
        }
    }
}
