//! The plugin's side of the plugin-event socket (`ztunnel::kubernetes::cni_event`): one
//! connection per pod, one JSON line out ([`PodAdded`]), one JSON line back ([`Answer`]),
//! bounded by a deadline. Any failure is an error: the caller fails ADD (fail closed).

use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ztunnel::kubernetes::cni_event::{Answer, MAX_REQUEST_LINE, PodAdded};

/// Why the agent did not confirm the capture; every message names the socket.
#[derive(Debug, thiserror::Error)]
pub(crate) enum AgentError {
    #[error("cannot connect to the node agent at {socket}: {source}")]
    Connect { socket: PathBuf, source: std::io::Error },
    #[error("sending the pod to the node agent at {socket}: {source}")]
    Send { socket: PathBuf, source: std::io::Error },
    #[error("the node agent at {socket} did not answer within {timeout:?}")]
    Timeout { socket: PathBuf, timeout: Duration },
    #[error("reading the node agent's answer at {socket}: {source}")]
    Receive { socket: PathBuf, source: std::io::Error },
    #[error("the node agent at {socket} sent an invalid answer: {detail}")]
    BadAnswer { socket: PathBuf, detail: String },
    #[error("the node agent at {socket} could not capture the pod: {error}")]
    Refused { socket: PathBuf, error: String },
}

impl AgentError {
    /// True when the agent was never reached (nothing listening, no socket file).
    pub(crate) fn is_unreachable(&self) -> bool {
        matches!(self, AgentError::Connect { .. })
    }
}

/// Sends `added` to the agent at `socket` and waits (at most `timeout`) until it says the pod
/// is captured.
pub(crate) fn request_capture(socket: &Path, added: &PodAdded, timeout: Duration) -> Result<(), AgentError> {
    let deadline = Instant::now() + timeout;
    let owned = || socket.to_path_buf();
    let mut stream = UnixStream::connect(socket).map_err(|source| AgentError::Connect { socket: owned(), source })?;
    let mut line = serde_json::to_vec(added).expect("a PodAdded always serialises");
    line.push(b'\n');
    stream.set_write_timeout(Some(timeout)).map_err(|source| AgentError::Send { socket: owned(), source })?;
    stream.write_all(&line).map_err(|source| AgentError::Send { socket: owned(), source })?;
    let answer = read_line(&mut stream, deadline).map_err(|e| match e.kind() {
        ErrorKind::WouldBlock | ErrorKind::TimedOut => AgentError::Timeout { socket: owned(), timeout },
        ErrorKind::InvalidData => AgentError::BadAnswer { socket: owned(), detail: e.to_string() },
        _ => AgentError::Receive { socket: owned(), source: e },
    })?;
    let answer: Answer = serde_json::from_slice(&answer).map_err(|e| AgentError::BadAnswer {
        socket: owned(),
        detail: format!("{e}: {}", String::from_utf8_lossy(&answer)),
    })?;
    match answer {
        Answer { ok: true, .. } => Ok(()),
        Answer { ok: false, error } => {
            Err(AgentError::Refused { socket: owned(), error: error.unwrap_or_else(|| "no reason given".into()) })
        }
    }
}

/// Reads up to the first newline (or the end of the stream), at most [`MAX_REQUEST_LINE`]
/// bytes, before `deadline`.
fn read_line(stream: &mut UnixStream, deadline: Instant) -> std::io::Result<Vec<u8>> {
    let mut line = Vec::new();
    let mut chunk = [0u8; 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(ErrorKind::TimedOut.into());
        }
        stream.set_read_timeout(Some(left))?;
        let n = match stream.read(&mut chunk) {
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if n == 0 {
            if line.is_empty() {
                return Err(std::io::Error::new(ErrorKind::InvalidData, "connection closed without an answer"));
            }
            return Ok(line);
        }
        line.extend_from_slice(&chunk[..n]);
        if let Some(end) = line.iter().position(|b| *b == b'\n') {
            line.truncate(end);
            return Ok(line);
        }
        if line.len() > MAX_REQUEST_LINE {
            return Err(std::io::Error::new(
                ErrorKind::InvalidData,
                format!("answer longer than {MAX_REQUEST_LINE} bytes"),
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::{BufRead, BufReader};
    use std::os::unix::net::UnixListener;

    use super::*;

    fn added() -> PodAdded {
        PodAdded {
            pod_uid: "uid-1".into(),
            pod_name: "web-0".into(),
            pod_namespace: "shop".into(),
            netns: "/var/run/netns/cni-1".into(),
            container_id: "c1".into(),
            ips: vec!["10.244.1.5".parse().unwrap()],
        }
    }

    /// An agent that reads one request and answers `reply` (raw bytes), on a thread.
    fn agent(reply: &'static [u8]) -> (tempfile::TempDir, PathBuf, std::thread::JoinHandle<PodAdded>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pe.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let handle = std::thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            let mut reader = BufReader::new(stream);
            let mut request = String::new();
            reader.read_line(&mut request).unwrap();
            reader.get_mut().write_all(reply).unwrap();
            serde_json::from_str(&request).unwrap()
        });
        (dir, path, handle)
    }

    #[test]
    fn captured_answer() {
        let (_dir, path, agent) = agent(b"{\"ok\":true}\n");
        request_capture(&path, &added(), Duration::from_secs(5)).unwrap();
        assert_eq!(agent.join().unwrap(), added(), "the agent receives the pod as sent");
    }

    #[test]
    fn refusal_and_garbage_are_errors_naming_the_socket() {
        let (_dir, path, _agent) = agent(b"{\"ok\":false,\"error\":\"pod shop/web-0: no netns\"}\n");
        let err = request_capture(&path, &added(), Duration::from_secs(5)).unwrap_err();
        assert!(matches!(err, AgentError::Refused { .. }), "{err:?}");
        assert!(err.to_string().contains(&path.display().to_string()) && err.to_string().contains("no netns"), "{err}");

        let (_dir, path, _agent) = agent(b"HTTP/1.1 200 OK\n");
        let err = request_capture(&path, &added(), Duration::from_secs(5)).unwrap_err();
        assert!(matches!(err, AgentError::BadAnswer { .. }), "{err:?}");
    }

    #[test]
    fn nobody_listening_is_unreachable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("absent.sock");
        let err = request_capture(&path, &added(), Duration::from_secs(5)).unwrap_err();
        assert!(err.is_unreachable(), "{err:?}");
        assert!(err.to_string().starts_with(&format!("cannot connect to the node agent at {}", path.display())));
    }

    #[test]
    fn a_silent_agent_times_out() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("silent.sock");
        let _listener = UnixListener::bind(&path).unwrap();
        let started = Instant::now();
        let err = request_capture(&path, &added(), Duration::from_millis(300)).unwrap_err();
        assert!(matches!(err, AgentError::Timeout { .. }), "{err:?}");
        assert!(started.elapsed() < Duration::from_secs(5), "bounded by the timeout");
    }
}
