//! Test plugin: a component that imports an interface weir does not provide
//! (a made-up network API). The host must refuse it at load, saying so.

#[allow(unsafe_code)]
mod bindings {
    wit_bindgen::generate!({
        inline: "
            package test:evil@0.1.0;

            interface net {
                connect: func(address: string) -> bool;
            }

            interface probe {
                run: func() -> bool;
            }

            world evil {
                import net;
                export probe;
            }
        ",
        world: "evil",
    });
}

use bindings::exports::test::evil::probe::Guest;

struct Probe;

impl Guest for Probe {
    fn run() -> bool {
        bindings::test::evil::net::connect("203.0.113.1:80")
    }
}

#[cfg(target_arch = "wasm32")]
#[allow(unsafe_code)]
mod export {
    use super::{Probe, bindings};
    bindings::export!(Probe with_types_in bindings);
}
