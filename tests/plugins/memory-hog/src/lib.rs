//! Test plugin: `select` allocates without bound, 1 MiB at a time, writing to
//! every page, until the allocator fails and the instance traps. The host must
//! cap the instance's memory and contain the trap.

use weir_sdk::{BackendId, Backends, Balancer, Request};

const CHUNK: usize = 1 << 20;
const PAGE: usize = 4096;

struct MemoryHog {
    hoard: Vec<Vec<u8>>,
}

impl Balancer for MemoryHog {
    fn init(_config: &str) -> Result<Self, String> {
        Ok(Self { hoard: Vec::new() })
    }

    fn select(&mut self, _request: &Request<'_>, _backends: &Backends) -> Option<BackendId> {
        loop {
            let mut chunk = vec![0u8; CHUNK];
            for page in chunk.chunks_mut(PAGE) {
                page[0] = 1;
            }
            // Kept (and black-boxed) so the optimiser cannot drop the growth.
            self.hoard.push(std::hint::black_box(chunk));
        }
    }
}

weir_sdk::export_balancer!(MemoryHog);
