//! The init binary is statically linked: no program interpreter, no shared libraries.

mod common;

use berth_image_build::init_binary::check_static;

#[test]
fn init_is_static() {
    let init = common::init_binary();
    check_static(&init).unwrap_or_else(|e| panic!("{e:#}"));
}

#[test]
fn a_dynamic_binary_is_refused() {
    // The berth CLI itself is an ordinary dynamically linked build.
    let err = check_static(&common::berth()).unwrap_err();
    assert!(format!("{err:#}").contains("dynamically linked"), "{err:#}");
    let err = check_static(std::path::Path::new("/bin/sh")).unwrap_err();
    assert!(format!("{err:#}").contains("dynamically linked"), "{err:#}");
}
