//! Kernel uevent datagrams (`ACTION@DEVPATH\0KEY=VALUE\0...`), as the device plugins' health
//! reads them from the `NETLINK_KOBJECT_UEVENT` socket.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sriov_uevent::Uevent;

fuzz_target!(|data: &[u8]| {
    let Ok(ev) = Uevent::parse(data) else {
        return;
    };
    assert!(ev.devpath.starts_with('/'));
    assert!(!ev.action.as_str().is_empty());
    assert_eq!(ev.subsystem.as_ref(), ev.vars.get("SUBSYSTEM"));
    assert_eq!(ev.driver.as_ref(), ev.vars.get("DRIVER"));
    // What was read, written back the kernel's way, reads the same.
    let mut again = format!("{}@{}\0", ev.action, ev.devpath).into_bytes();
    for (k, v) in &ev.vars {
        again.extend_from_slice(format!("{k}={v}\0").as_bytes());
    }
    assert_eq!(Uevent::parse(&again).ok().as_ref(), Some(&ev));
    let _ = (ev.name(), ev.pci_slot(), ev.interface());
});
