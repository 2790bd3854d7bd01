//! `quill devices`: the backends compiled in and the devices each can see.

use anyhow::Result;

use crate::backend::probe::inventory;
use crate::cli::DevicesArgs;

pub fn run(args: DevicesArgs) -> Result<()> {
    let inv = inventory();
    if args.json {
        println!("{}", serde_json::to_string(&inv)?);
        return Ok(());
    }
    println!("compiled in: {}", inv.compiled.join(", "));
    for (backend, devices) in &inv.devices {
        for d in devices {
            println!(
                "{backend:8} --device {:10} {} (dtypes: {})",
                d.device,
                d.name,
                d.dtypes.join(", ")
            );
        }
    }
    for (backend, note) in &inv.notes {
        println!("{backend:8} {note}");
    }
    let missing: Vec<&str> = ["flex", "ndarray", "wgpu", "cuda"]
        .into_iter()
        .filter(|b| !inv.compiled.contains(b))
        .collect();
    if !missing.is_empty() {
        println!(
            "not compiled in: {} (install a quill that has them: `cargo install --path crates/quill-cli --features {}` from a checkout)",
            missing.join(", "),
            missing.join(",")
        );
    }
    Ok(())
}
