//! A NetworkService Request off the wire, through every check that runs
//! before the host is touched: decoding, the size limits, mechanism
//! parameters (KERNEL and VFIO) and the IP context plan.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sriov_api::nsm::networkservice::NetworkServiceRequest;
use sriov_api::prost::Message;
use sriov_chain::elements::{ipcontext, limits};
use sriov_chain::params;

fuzz_target!(|data: &[u8]| {
    let Ok(request) = NetworkServiceRequest::decode(data) else {
        return;
    };
    if limits::check_request(&request).is_err() {
        return;
    }
    let conn = request.connection.clone().unwrap_or_default();
    let mechanisms = request
        .mechanism_preferences
        .iter()
        .chain(conn.mechanism.iter());
    for m in mechanisms {
        let kernel = params::kernel(&m.parameters).ok();
        let _ = params::vfio(&m.parameters);
        let _ = ipcontext::plan(&conn, kernel.as_ref());
    }
    let _ = ipcontext::plan(&conn, None);
});
