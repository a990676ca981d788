//! Test plugin: a valid component that exports a world other than weir's
//! `balancer`. The host must refuse to load it as a balancing policy.

#[allow(unsafe_code)]
mod bindings {
    wit_bindgen::generate!({
        inline: "
            package test:other@0.1.0;

            interface greeter {
                greet: func(name: string) -> string;
            }

            world other {
                export greeter;
            }
        ",
        world: "other",
    });
}

use bindings::exports::test::other::greeter::Guest;

struct Greeter;

impl Guest for Greeter {
    fn greet(name: String) -> String {
        format!("hello, {name}")
    }
}

#[cfg(target_arch = "wasm32")]
#[allow(unsafe_code)]
mod export {
    use super::{Greeter, bindings};
    bindings::export!(Greeter with_types_in bindings);
}
