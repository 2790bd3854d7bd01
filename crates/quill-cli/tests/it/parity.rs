//! Backend parity through `quill parity`: the same initial weights (loaded, not
//! re-drawn) and batches on each compiled-in backend give the CPU reference's losses:
//! the initial loss within 1e-4, 20 AdamW steps within 1e-3.

use std::process::Command;

use crate::common;

/// `quill parity --device DEVICE --json [EXTRA…]`, which must succeed.
fn parity(device: &str, extra: &[&str]) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_quill"))
        .args(["parity", "--json", "--device", device])
        .arg("--data")
        .arg(common::tiny_shakespeare())
        .args(extra)
        .output()
        .expect("quill runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "parity on {device} failed: {stderr}");
    let json: serde_json::Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {stderr}"));
    let losses = json["losses"].as_array().unwrap();
    assert_eq!(losses.len(), 21, "{json}");
    assert_eq!(json["within_tolerance"], true, "{json}");
    // The steps trained: the last loss is below the first (ln 65 ≈ 4.17 at the start).
    let first = losses[0].as_f64().unwrap();
    let last = losses[20].as_f64().unwrap();
    assert!((first - 65f64.ln()).abs() < 0.1, "{json}");
    assert!(last < first - 0.2, "{json}");
    json
}

#[cfg(all(feature = "flex", feature = "ndarray"))]
#[test]
fn ndarray_matches_the_flex_reference() {
    let json = parity("ndarray", &[]);
    assert!(json["initial_diff"].as_f64().unwrap() <= 1e-4, "{json}");
    assert!(json["max_step_diff"].as_f64().unwrap() <= 1e-3, "{json}");
    assert!(
        json["backend"].as_str().unwrap().contains("ndarray"),
        "{json}"
    );
}

/// WGPU for real, on the software Vulkan adapter (Mesa's lavapipe in CI). A machine
/// without it fails here, with quill's message saying what to install.
#[cfg(feature = "wgpu")]
#[test]
fn wgpu_on_the_software_adapter_matches_the_cpu_reference() {
    let json = parity("wgpu:cpu", &[]);
    assert!(json["backend"].as_str().unwrap().contains("wgpu"), "{json}");
    assert!(json["initial_diff"].as_f64().unwrap() <= 1e-4, "{json}");
    assert!(json["max_step_diff"].as_f64().unwrap() <= 1e-3, "{json}");
}

/// Half precision trains: f16 on the software adapter stays within 0.05 of the f32 CPU
/// losses over 20 AdamW steps (f16 parameters, f32 optimizer moments).
#[cfg(feature = "wgpu")]
#[test]
fn wgpu_f16_trains_within_0_05_of_the_f32_cpu_losses() {
    let extra = [
        "--dtype",
        "f16",
        "--initial-tolerance",
        "0.05",
        "--step-tolerance",
        "0.05",
    ];
    let json = parity("wgpu:cpu", &extra);
    assert_eq!(json["dtype"], "f16", "{json}");
}
