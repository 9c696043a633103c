//! Namespace URLs (`inodeURL`), NSM socket URLs (`NSM_CONNECT_TO`,
//! `NSM_LISTEN_ON`, registry answers), PCI addresses and sysfs values.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(url) = sriov_netlink::NetnsUrl::parse(text) {
        // What we print is what we parse.
        let again = sriov_netlink::NetnsUrl::parse(&url.to_string()).ok();
        assert_eq!(again.as_ref(), Some(&url));
    }
    if let Ok(url) = sriov_nsm::NsmUrl::parse(text) {
        let _ = url.to_target();
        let _ = url.unix_path();
    }
    sriov_pci::fuzzing::sysfs_value(text);
});
