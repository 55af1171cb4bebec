//! The browser quickstart: `BatchNorm1d(3)` on a `(4, 3)` input, a training forward then an
//! eval forward, awaited on the page's WebGPU device; the results go into `#result` as text
//! and, for `scripts/test-browser.sh`, as JSON in its `data-json` attribute.
//!
//! Build and serve it with `scripts/test-browser.sh` (which also checks it), or by hand:
//! `cargo build --release --target wasm32-unknown-unknown --example web`, then
//! `wasm-bindgen --target web --out-dir examples/web/pkg
//! target/wasm32-unknown-unknown/release/examples/web.wasm`, and serve `examples/web/` on
//! localhost (WebGPU needs a secure context).

#![cfg(target_arch = "wasm32")]

use wasm_bindgen::prelude::wasm_bindgen;
use wgpu_batchnorm::{BatchNorm1d, Context, Tensor};

/// What the page shows: the outputs of both forwards and the running statistics after them.
struct Run {
    adapter: String,
    train: Vec<f32>,
    eval: Vec<f32>,
    running_mean: Vec<f32>,
    running_var: Vec<f32>,
}

async fn run() -> wgpu_batchnorm::Result<Run> {
    let ctx = Context::new_async().await?;
    let mut bn = BatchNorm1d::new(&ctx, 3)?;
    let data: Vec<f32> = (1..=12).map(|v| v as f32).collect();
    let x = Tensor::from_slice_async(&ctx, &data, &[4, 3]).await?;
    let train = bn.forward_async(&x).await?.to_host_async().await?;
    bn.eval();
    let eval = bn.forward_async(&x).await?.to_host_async().await?;
    Ok(Run {
        adapter: format!(
            "{:?} ({:?})",
            ctx.adapter().backend,
            ctx.adapter().device_type
        ),
        train,
        eval,
        running_mean: bn.running_mean_async().await?.unwrap_or_default(),
        running_var: bn.running_var_async().await?.unwrap_or_default(),
    })
}

fn show(status: &str, text: &str, json: &str) {
    let Some(element) = web_sys::window()
        .and_then(|w| w.document())
        .and_then(|d| d.get_element_by_id("result"))
    else {
        return;
    };
    element.set_text_content(Some(text));
    // Errors here only mean the page lacks its markup; the text above is already set.
    let _ = element.set_attribute("data-json", json);
    let _ = element.set_attribute("data-status", status);
}

fn list(v: &[f32]) -> String {
    let items: Vec<String> = v.iter().map(|x| format!("{x}")).collect();
    format!("[{}]", items.join(", "))
}

#[wasm_bindgen(start)]
pub fn start() {
    wasm_bindgen_futures::spawn_local(async {
        match run().await {
            Ok(r) => {
                let text = format!(
                    "adapter: {}\nx = 1..12 as (4, 3)\n\ntraining forward:\n{}\n\neval forward:\n{}\n\nrunning_mean: {}\nrunning_var:  {}",
                    r.adapter,
                    list(&r.train),
                    list(&r.eval),
                    list(&r.running_mean),
                    list(&r.running_var),
                );
                let json = format!(
                    "{{\"train\": {}, \"eval\": {}, \"running_mean\": {}, \"running_var\": {}}}",
                    list(&r.train),
                    list(&r.eval),
                    list(&r.running_mean),
                    list(&r.running_var),
                );
                show("done", &text, &json);
            }
            Err(e) => show("error", &format!("error: {e}"), "{}"),
        }
    });
}
