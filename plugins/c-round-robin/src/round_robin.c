// Round robin in C: each request goes to the next eligible backend in turn.
// The same policy as plugins/round-robin (Rust), against bindings that
// `wit-bindgen c` generates from weir's WIT (`wit/`, world `balancer`) into
// `balancer.h` and `balancer.c`.
//
// Ownership, as wit-bindgen's C bindings define it: arguments handed to an
// export belong to the export, which frees them, and a borrowed resource
// handle (the request `select` gets) must be dropped before returning, or
// the call traps; a string returned (the error of `init`) must come from
// malloc, and the bindings free it once the host has copied it.

#include <stdlib.h>
#include <string.h>

#include "balancer.h"

// Ids of the backends new requests may go to, in the order weir sent them.
static weir_plugin_types_backend_id_t *eligible;
static size_t eligible_len;
// The index in `eligible` of the next pick.
static size_t next;

static void log_line(weir_plugin_log_level_t level, const char *message) {
    balancer_string_t text;
    balancer_string_set(&text, message);
    weir_plugin_log_log(level, &text);
}

// Whether `text` is an empty JSON object: `{` and `}` with only JSON
// whitespace around and between them.
static bool is_empty_object(const balancer_string_t *text) {
    const char *want = "{}";
    for (size_t i = 0; i < text->len; i++) {
        char c = (char)text->ptr[i];
        if (c == ' ' || c == '\t' || c == '\n' || c == '\r') {
            continue;
        }
        if (*want == '\0' || c != *want) {
            return false;
        }
        want++;
    }
    return *want == '\0';
}

// Takes no settings: anything but an empty table is refused.
bool exports_weir_plugin_policy_init(balancer_string_t *config, balancer_string_t *err) {
    bool ok = is_empty_object(config);
    balancer_string_free(config);
    if (!ok) {
        balancer_string_dup(err, "c-round-robin takes no settings");
        return false;
    }
    log_line(WEIR_PLUGIN_LOG_LEVEL_DEBUG, "c-round-robin ready");
    return true;
}

// Healthy and weight above 0, as the Rust SDK's `Backend::is_eligible`.
static bool is_eligible(const weir_plugin_types_backend_t *backend) {
    return backend->health == WEIR_PLUGIN_TYPES_HEALTH_HEALTHY && backend->weight > 0;
}

// Keeps the rotation's position: a changed set re-shapes it, no reset.
void exports_weir_plugin_policy_set_backends(exports_weir_plugin_policy_list_backend_t *backends) {
    weir_plugin_types_backend_id_t *ids = NULL;
    if (backends->len > 0) {
        ids = malloc(backends->len * sizeof *ids);
        if (ids == NULL) {
            abort(); // Traps: weir contains it and discards this instance.
        }
    }
    size_t len = 0;
    for (size_t i = 0; i < backends->len; i++) {
        if (is_eligible(&backends->ptr[i])) {
            ids[len++] = backends->ptr[i].id;
        }
    }
    exports_weir_plugin_policy_list_backend_free(backends);
    free(eligible);
    eligible = ids;
    eligible_len = len;
}

// The next eligible backend; false (none) when there is none.
bool exports_weir_plugin_policy_select(exports_weir_plugin_policy_borrow_request_t request,
                                       exports_weir_plugin_policy_backend_id_t *ret) {
    // Round robin never reads the request: give it back at once.
    weir_plugin_types_request_drop_borrow(request);
    if (next >= eligible_len) {
        // Wrapped around, or the set shrank under us.
        next = 0;
    }
    if (eligible_len == 0) {
        return false;
    }
    *ret = eligible[next++];
    return true;
}
