//! Every body decoder on any bytes: a value or an error, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
use pgsluice_protocol::{backend, frontend};

fuzz_target!(|data: &[u8]| {
    let _ = backend::parse_auth(data);
    let _ = backend::parse_parameter_status(data);
    let _ = backend::parse_backend_key_data(data);
    let _ = backend::parse_error_fields(data);
    let _ = backend::parse_notification(data);
    let _ = frontend::parse_password(data);
    let _ = frontend::parse_sasl_initial_response(data);
    let _ = frontend::parse_query(data);
    let _ = frontend::parse_parse(data);
    let _ = frontend::parse_target(data);
    if let Ok(Some((_, _, used))) = frontend::bind_names(data) {
        assert!(used <= data.len());
    }
});
