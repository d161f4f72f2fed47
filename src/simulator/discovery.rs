//! The simulated fleet's WM-DISCOVER responder: one UDP socket that answers each
//! WM-DISCOVER request with one unicast WM-NOTIFY per device, as every real unit on
//! the subnet would answer on its own. The LOCATION carries the device's current
//! address, port included.

use std::net::{SocketAddr, UdpSocket};
use std::sync::{Arc, Mutex};

use async_io::Async;

use crate::discovery::message::{MAX_NOTIFY_BYTES, is_discover_request, notify_message};

/// Sends one WM-NOTIFY per device for each WM-DISCOVER request, until the future is
/// dropped.
pub(crate) async fn answer_discover(
    socket: Async<UdpSocket>,
    locations: Vec<Arc<Mutex<SocketAddr>>>,
) {
    let mut buffer = vec![0_u8; MAX_NOTIFY_BYTES];
    loop {
        let (length, peer) = match socket.recv_from(&mut buffer).await {
            Ok(received) => received,
            Err(error) => {
                log::debug!("simulated WM-DISCOVER responder: receive failed: {error}");
                continue;
            }
        };
        if !is_discover_request(&buffer[..length]) {
            log::debug!("simulated WM-DISCOVER responder: ignored a datagram from {peer}");
            continue;
        }

        for location in &locations {
            let address = *location
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            let message = notify_message(address);
            if let Err(error) = socket.send_to(message.as_bytes(), peer).await {
                log::debug!("simulated WM-DISCOVER responder: cannot reply to {peer}: {error}");
            }
        }
    }
}
