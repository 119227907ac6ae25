//! Sizes of the futures spawned per connection and per stream. A task's future is allocated
//! once for the task's life at its largest state, so whatever a connection needs only while it
//! is set up (TLS handshakes, pool dials) is boxed and does not weigh on idle connections.

use std::future::Future;

use super::*;

/// A value of any type, for naming a future's type without running it.
fn never<T>() -> T {
    unreachable!("only the type of the future is used")
}

fn future_size<F: Future>(_: impl FnOnce() -> F) -> usize {
    std::mem::size_of::<F>()
}

/// Largest future a connection's or stream's task may hold (measured in test builds; before
/// the dials were boxed these were 5-9 KiB).
const CONNECTION_TASK_LIMIT: usize = 4096;
/// Largest future an inbound HBONE connection (carrying many streams) may hold.
const HBONE_CONNECTION_TASK_LIMIT: usize = 8192;

#[test]
fn per_connection_futures_stay_small() {
    let per_connection = [
        (
            "pod outbound connection",
            future_size(|| pod::handle_outbound(never(), never(), never(), never(), never(), never())),
        ),
        (
            "pod inbound plaintext connection",
            future_size(|| pod::handle_inbound_plain(never(), never(), never(), never(), never())),
        ),
        (
            "inbound hbone stream",
            future_size(|| inbound::handle_stream(never(), never(), never(), never(), never(), never(), never())),
        ),
        ("socks5 connection", future_size(|| socks5::handle(never(), never(), never(), never(), never()))),
    ];
    let hbone_connection = future_size(|| inbound::serve_connection(never(), never(), never(), never()));
    for (what, size) in per_connection {
        println!("{what}: {size} bytes");
        assert!(
            size <= CONNECTION_TASK_LIMIT,
            "{what}: future of {size} bytes, expected at most {CONNECTION_TASK_LIMIT}"
        );
    }
    println!("inbound hbone connection: {hbone_connection} bytes");
    assert!(
        hbone_connection <= HBONE_CONNECTION_TASK_LIMIT,
        "inbound hbone connection: future of {hbone_connection} bytes, expected at most {HBONE_CONNECTION_TASK_LIMIT}"
    );
}
