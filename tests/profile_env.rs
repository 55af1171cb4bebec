//! `WGPU_BATCHNORM_PROFILE` as `Context::new` reads it: `cpu` and `gpu` force a profile, any
//! other value is a typed error, unset leaves the adapter's. Its own test binary, since it sets
//! the process's environment.

#![cfg(not(target_arch = "wasm32"))]

use wgpu_batchnorm::profile::ProfileKind;
use wgpu_batchnorm::{Context, ContextOptions, Error};

#[test]
fn the_environment_variable_forces_a_profile_or_is_an_error() {
    for (value, kind) in [("cpu", ProfileKind::Cpu), ("GPU", ProfileKind::Gpu)] {
        std::env::set_var(ProfileKind::ENV, value);
        let ctx = Context::new().unwrap();
        assert_eq!(ctx.profile().kind, kind, "{value}");
        assert!(ctx.adapter().to_string().contains("profile"));
    }
    std::env::set_var(ProfileKind::ENV, "tpu");
    let err = Context::new().unwrap_err();
    assert!(
        matches!(&err, Error::InvalidArgument(m) if m.contains("tpu")),
        "{err}"
    );
    // `from_env` cannot fail: it ignores the value, and the adapter decides.
    assert_eq!(ContextOptions::from_env().profile, None);
    std::env::remove_var(ProfileKind::ENV);
    let ctx = Context::new().unwrap();
    let expected = ProfileKind::of_adapter(ctx.adapter().device_type, &ctx.adapter().name);
    assert_eq!(ctx.profile().kind, expected);
}
