//! The config loader: TOML text and `CASCADE_*` overrides, parsed and validated.
#![no_main]

use cascade_config::CascadeConfig;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (file, env) = text.split_once("\n%%\n").unwrap_or((text, ""));
    let overrides: Vec<(String, String)> = env
        .lines()
        .filter_map(|line| line.split_once('='))
        .map(|(k, v)| (format!("CASCADE_{k}"), v.to_owned()))
        .collect();
    let _ = CascadeConfig::parse_with_env("fuzz.toml", file, overrides);
});
